"""The speed-run parts (issue #28, item 4) on a CPU with tiny settings: airbench94's network as a
bench model, per-parameter lr scales, translate, the linear schedule and test-time augmentation.
The 94% claim itself needs a GPU and full CIFAR-10; these check that each part does what it says."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest
import torch
from torch import nn

from bench.checkpoint import Interrupted
from bench.config import RunConfig
from bench.models import build_model
from bench.report import QuietReporter
from bench.train import lr_factor, make_optimizer, run, tta_logits


class StopAtEpoch(QuietReporter):
    """Stops a run with SIGINT's exception as epoch `at` ends, before its checkpoint: a resume
    starts again from the checkpoint of epoch `at - 1`."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def epoch(self, entry):
        if entry["epoch"] == self.at:
            raise Interrupted(signal.SIGINT)


def resumed_after_stop(config: RunConfig, folder, at: int) -> dict:
    with pytest.raises(Interrupted):
        run(config, folder, StopAtEpoch(at))
    record, _ = run(config, folder, resume=True)
    assert record["resumed_from"] == {"epoch": at - 1, "step": 0}
    return record


def same_history(a: dict, b: dict) -> bool:
    """Every number of every epoch equal (wall seconds aside)."""
    return b["history"] == [{**h, "seconds": r["seconds"]} for h, r in zip(a["history"], b["history"])]


def test_airbench_has_airbench94s_shape_and_sizes_itself_from_the_input():
    built = build_model("airbench", (3, 32, 32), 10)
    assert built.convolutional and built.stem is None
    params = sum(p.numel() for p in built.module.parameters())
    assert 1.9e6 < params < 2.05e6  # airbench94: about 2 M
    assert built.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("airbench", (3, 64, 64), 7).module(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("airbench", (3, 8, 8), 10)


def test_the_whitening_layer_whitens_the_first_training_batch_and_keeps_its_weights():
    net = build_model("airbench", (3, 32, 32), 10).module
    whitening = net[0]
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.2], [0.1, 1.0, 0.6], [0.3, 0.2, 1.0]])  # correlated channels
    x = torch.einsum("ij,njhw->nihw", mixing, torch.randn(256, 3, 32, 32))  # far from white patches
    before = whitening.weight.clone()
    net.eval()(x)  # eval forwards (bench's output and MAC checks) leave it alone
    assert torch.equal(whitening.weight, before) and not whitening.initialized
    net.train()(x)
    assert whitening.initialized and not whitening.weight.requires_grad
    with torch.no_grad():
        y = nn.functional.conv2d(x, whitening.weight[:12])  # the 12 eigen-filters (then their negatives)
    features = y.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = features.T @ features / len(features)
    assert torch.allclose(covariance, torch.eye(12), atol=0.02)
    assert torch.equal(whitening.weight[12:], -whitening.weight[:12])
    weights = whitening.weight.clone()
    net(x * 3 + 1)  # set once: a later batch changes nothing
    assert torch.equal(whitening.weight, weights)
    fresh = build_model("airbench", (3, 32, 32), 10).module
    fresh.load_state_dict(net.state_dict())  # a checkpoint carries the weights and the flag
    assert fresh[0].initialized and fresh[0]._ready and torch.equal(fresh[0].weight, weights)
    fresh.train()(x * 3 + 1)  # a resumed run does not set it again
    assert torch.equal(fresh[0].weight, weights)


def test_the_trainer_whitens_from_the_first_training_images_unaugmented_and_freezes_the_bias_after_3_epochs(
        tmp_path, monkeypatch):
    import bench.train
    from bench.augment import normalize
    from bench.models.airbench import WHITENING_BIAS_EPOCHS, WHITENING_IMAGES, Whitening

    config = RunConfig(model="airbench", loss="ce", dataset="cifar10-sample", epochs=5, batch_size=128,
                       limit_train=384, limit_test=100, lr=0.2, weight_decay=5e-3, translate=2,
                       crop_fill="reflect", precision="fp32")
    steps = []  # per step: (the whitening bias trains, its value, its weights, the batch)
    real = bench.train.train_step

    def recording(model, criterion, optimizer, scaler, runtime, x, y):
        layer = model[0]
        steps.append((layer.bias.requires_grad, layer.bias.detach().clone(), layer.weight.detach().clone(), x))
        return real(model, criterion, optimizer, scaler, runtime, x, y)

    monkeypatch.setattr(bench.train, "train_step", recording)
    record, _ = run(config, tmp_path / "run")
    per_epoch = len(steps) // config.epochs
    assert record["status"] == "completed" and per_epoch >= 2 and len(steps) == config.epochs * per_epoch
    trains = [s[0] for s in steps]
    assert trains == [i < WHITENING_BIAS_EPOCHS * per_epoch for i in range(len(steps))]
    frozen = [s[1] for s in steps[WHITENING_BIAS_EPOCHS * per_epoch:]]
    assert not torch.equal(steps[0][1], frozen[0])  # it trained before
    assert all(torch.equal(b, frozen[0]) for b in frozen)  # then not at all (no weight decay either)

    setup = bench.train.prepare(config)
    plain = setup.batches("train", 128, False).plain(WHITENING_IMAGES)
    assert torch.equal(plain, normalize(setup.data.train.images, torch.tensor(setup.data.mean),
                                        torch.tensor(setup.data.std)))  # all (fewer than 5,000), as stored
    expected, from_batch = Whitening(3), Whitening(3)
    expected.set_from(plain)
    from_batch.set_from(steps[0][3])  # the first augmented batch: what the layer alone would use
    assert torch.equal(steps[0][2], expected.weight)
    assert not torch.allclose(steps[0][2], from_batch.weight, atol=1e-3)


def test_the_whitening_is_computed_in_fp32_under_autocast():
    x = torch.randn(128, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5])[:, None, None]
    plain, mixed = (build_model("airbench", (3, 32, 32), 10).module[0] for _ in range(2))
    plain.set_from(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed.set_from(x)
    assert torch.allclose(plain.weight, mixed.weight, rtol=1e-4, atol=1e-4)


def test_a_parameters_lr_scale_gets_its_own_group_with_the_same_decay_per_step():
    net = build_model("airbench", (3, 32, 32), 10).module
    config = RunConfig(model="airbench", loss="ce", dataset="cifar10", lr=0.2, weight_decay=5e-4)
    optimizer = make_optimizer(config, net, torch.device("cpu"))
    plain, scaled = optimizer.param_groups
    assert (plain["lr"], scaled["lr"]) == (0.2, pytest.approx(0.2 * 64))
    assert scaled["lr"] * scaled["weight_decay"] == pytest.approx(plain["lr"] * plain["weight_decay"])
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)  # frozen whitening weights and BN scales left out
    assert {id(p) for p in scaled["params"]} == {id(m.bias) for m in net.modules()
                                                 if isinstance(m, nn.BatchNorm2d)}
    adamw = make_optimizer(replace(config, optimizer="adamw", lr=1e-3), nn.Linear(3, 2), torch.device("cpu"))
    assert len(adamw.param_groups) == 1 and adamw.param_groups[0]["lr"] == 1e-3  # no scale: as before


def test_linear_schedule_with_warmup_is_a_triangle():
    config = RunConfig(model="cnn", loss="ce", dataset="cifar10", epochs=10, schedule="linear", warmup_epochs=2)
    factor = lr_factor(config, 100)
    assert factor(0) == pytest.approx(1 / 20)  # up over the 20 warm-up steps (2 of 10 epochs)
    assert factor(19) == factor(20) == 1.0  # the full lr where the warm-up ends
    assert factor(60) == pytest.approx(0.5) and factor(100) == 0.0  # then straight down to zero
    assert lr_factor(replace(config, warmup_epochs=0.0), 100)(50) == pytest.approx(0.5)
    assert lr_factor(replace(config, epochs=2, warmup_epochs=1.9), 3)(2) == 1.0  # warm-up rounded to the run
    airbench = lr_factor(replace(config, warmup_from=0.2, decay_to=0.07), 100)  # airbench's ends
    assert airbench(0) == pytest.approx(0.2 + 0.8 / 20) and airbench(19) == 1.0
    assert airbench(60) == pytest.approx(1 - 0.93 * 0.5) and airbench(100) == pytest.approx(0.07)
    with pytest.raises(Exception, match="--decay-to is for --schedule linear"):
        replace(config, schedule="cosine", decay_to=0.07)
    with pytest.raises(Exception, match="--warmup-from 0.2 needs a warm-up"):
        replace(config, warmup_epochs=0.0, warmup_from=0.2)


def test_tta_averages_the_mirror_and_the_one_pixel_shifts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(tta_logits(model, x, 0), model(x))
    mirror = 0.5 * model(x) + 0.5 * model(x.flip(-1))
    assert torch.allclose(tta_logits(model, x, 1), mirror)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :6, :6], padded[..., 2:, 2:]
    expected = 0.5 * mirror + 0.25 * sum(0.5 * model(v) + 0.5 * model(v.flip(-1)) for v in (up_left, down_right))
    assert torch.allclose(tta_logits(model, x, 2), expected, atol=1e-6)


def test_settings_added_later_keep_older_runs_identities():
    base = RunConfig(model="cnn-tiny", loss="ce", dataset="cifar10", epochs=3)
    assert base.config_hash() == "50e92cb02aa6"  # as before translate, flip and tta existed
    assert replace(base, translate=2).config_hash() != base.config_hash()
    assert replace(base, flip="alternate").config_hash() != base.config_hash()
    assert replace(base, tta=2).config_hash() != base.config_hash()
    assert replace(base, crop_fill="reflect").config_hash() != base.config_hash()
    assert replace(base, warmup_epochs=1, warmup_from=0.2).config_hash() != replace(base, warmup_epochs=1).config_hash()
    for bad, message in (({"translate": 0}, "--translate must be at least 1"), ({"tta": 3}, "--tta must be one of"),
                         ({"flip": "never"}, "--flip must be one of random, alternate"),
                         ({"crop_fill": "edge"}, "--crop-fill must be one of zeros, reflect")):
        with pytest.raises(Exception, match=message):
            replace(base, **bad)


def test_airbench_trains_with_any_loss_reports_tta_and_resumes_exactly(tmp_path):
    config = RunConfig(model="airbench", loss="focal", dataset="cifar10-sample", epochs=2, batch_size=128,
                       limit_train=512, limit_test=200, lr=0.5, momentum=0.85, schedule="linear",
                       warmup_epochs=0.5, translate=2, flip="alternate", tta=2, precision="fp32")
    record, _ = run(config, tmp_path / "whole")
    assert record["status"] == "completed" and record["config"]["tta"] == 2
    plain, tta = record["metrics"]["test"], record["metrics"]["test_tta"]
    assert set(plain) == set(tta) and 0.0 <= tta["accuracy"] <= 1.0

    resumed = resumed_after_stop(config, tmp_path / "split", 2)
    assert same_history(record, resumed)  # the whitening set in epoch 1 comes back from the checkpoint
    assert resumed["metrics"]["test_tta"]["accuracy"] == tta["accuracy"]


def test_alternate_flips_invert_each_images_flip_every_other_epoch_and_keep_the_crops(monkeypatch):
    import bench.loader
    from bench.imagefolder import ImageSet
    from bench.loader import TensorBatches

    seen = []
    real = bench.loader.random_crop_flip

    def recording(images, pad, offsets, flips, fill):
        seen.append((offsets.clone(), flips.clone()))
        return real(images, pad, offsets, flips, fill)

    monkeypatch.setattr(bench.loader, "random_crop_flip", recording)
    data = ImageSet(torch.zeros(40, 3, 8, 8, dtype=torch.uint8), torch.arange(40), [str(i) for i in range(40)])

    def draws(alternate: bool, epoch: int) -> tuple[dict, torch.Tensor]:
        seen.clear()
        batches = TensorBatches(data, 16, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), train=True, seed=3,
                                crop_pad=2, alternate_flip=alternate)
        labels = [y for _, y in batches.epoch(epoch)]  # the labels name the images
        flips = {int(i): bool(f) for y, (_, fl) in zip(labels, seen) for i, f in zip(y, fl)}
        return flips, torch.cat([o for o, _ in seen], 1)

    flips = [draws(True, e) for e in range(3)]
    assert 10 < sum(flips[0][0].values()) < 22  # random in the first epoch (32 of 40 images: drop_last)
    both = set(flips[0][0]) & set(flips[1][0])
    assert both and all(flips[1][0][i] != flips[0][0][i] for i in both)
    assert all(flips[2][0][i] == flips[0][0][i] for i in set(flips[0][0]) & set(flips[2][0]))
    for epoch in range(3):  # the crops are the random mode's
        assert torch.equal(draws(False, epoch)[1], flips[epoch][1])


def test_lookahead_pulls_the_weights_to_their_running_average_from_three_tenths_of_the_run():
    from bench import lookahead as la

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ahead = la.Lookahead(model, epochs=10, steps_per_epoch=10)
    assert ahead.start == 30
    ahead.step(30)  # the last step of epoch 3: not yet
    assert ahead.average is None
    ahead.step(35)
    assert set(ahead.average) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"}
    average = ahead.average["0.weight"].clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training moved it
    moved = model[0].weight.clone()
    ahead.step(37)  # not a 5th step
    assert torch.equal(model[0].weight, moved)
    ahead.step(40)
    rho = 0.95 ** 5 * 0.4 ** 3
    assert torch.allclose(model[0].weight, average + (1 - rho) * (moved - average))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ahead.end_epoch()
    assert torch.equal(model[0].weight, ahead.average["0.weight"])


def test_lookahead_resumes_with_its_average_from_the_checkpoint(tmp_path):
    config = RunConfig(model="cnn-tiny", loss="ce", dataset="cifar10-sample", epochs=3, batch_size=64,
                       limit_train=512, limit_test=100, lookahead=True, precision="fp32")
    record, _ = run(config, tmp_path / "whole")
    plain, _ = run(replace(config, lookahead=False), tmp_path / "plain")
    assert plain["history"][0]["val_acc"] == record["history"][0]["val_acc"]  # the same until it starts
    assert plain["history"][-1]["val_loss"] != record["history"][-1]["val_loss"]

    assert same_history(record, resumed_after_stop(config, tmp_path / "split", 3))
