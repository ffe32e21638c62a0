"""--precision auto: bf16 on a CPU only where it is native and pays, never for a bf16-sensitive loss."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from bench import precision
from bench.losses import LOSSES, build_loss, resolve_loss_params
from bench.precision import BF16_MIN_MACS, bf16_safe, bf16_sensitivity, choose_precision

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)

    return set_native


def test_auto_on_a_cpu_with_native_bf16_picks_bf16_for_a_model_with_enough_compute(native_bf16):
    native_bf16(True)
    chosen = choose_precision("auto", CPU, 38_634_752, loss_bf16=True)
    assert chosen.amp_dtype == torch.bfloat16 and chosen.name == "bf16" and "native" in chosen.reason


def test_auto_keeps_fp32_below_the_macs_threshold_without_native_bf16_and_for_a_sensitive_loss(native_bf16):
    native_bf16(True)
    tiny = choose_precision("auto", CPU, 155_408, loss_bf16=True)  # cnn-tiny: 0.9x in bf16, measured
    assert tiny.amp_dtype is None and "0.16 M MACs" in tiny.reason
    assert choose_precision("auto", CPU, BF16_MIN_MACS, loss_bf16=True).amp_dtype == torch.bfloat16
    sensitive = choose_precision("auto", CPU, 10**8, loss_bf16=False)
    assert sensitive.amp_dtype is None and "sensitive" in sensitive.reason
    native_bf16(False)
    emulated = choose_precision("auto", CPU, 10**8, loss_bf16=True)
    assert emulated.amp_dtype is None and "no native bf16" in emulated.reason


def test_an_explicit_precision_is_used_as_given(native_bf16):
    native_bf16(False)
    assert choose_precision("bf16", CPU, 1, loss_bf16=False).amp_dtype == torch.bfloat16
    assert choose_precision("fp32", CPU, 10**9, loss_bf16=True).reason == "--precision fp32"


def _built(name: str):
    spec = LOSSES.get(name)
    return build_loss(name, resolve_loss_params(name, {}, 10), [100] * 10), spec


@pytest.mark.parametrize("name", LOSSES.names())
def test_the_registry_flags_exactly_the_losses_that_bf16_rounding_moves(name):
    """The registry's `bf16` declaration agrees with the measured sensitivity of every built-in
    loss (exponential: exp amplifies the rounding; ghm-c: rounding moves samples across bins)."""
    criterion, spec = _built(name)
    assert spec.bf16 == bf16_safe(criterion, 10), (name, bf16_sensitivity(criterion, 10))


def test_the_sensitivity_probe_leaves_a_stateful_loss_as_it_was():
    criterion = build_loss("ghm-c", resolve_loss_params("ghm-c", {"bin_momentum": 0.9}, 10), [100] * 10)
    before = {k: v.clone() for k, v in criterion.state_dict().items()}
    bf16_sensitivity(criterion, 10)
    after = criterion.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_users_loss_is_probed_and_the_record_says_what_was_used_and_why(cli, tmp_path, monkeypatch, native_bf16):
    native_bf16(True)
    (tmp_path / "mylosses.py").write_text(textwrap.dedent("""
        import torch
        import torch.nn.functional as F

        def exp_loss(logits, targets):  # like bench's exponential: amplifies bf16 rounding
            z = logits.float()
            return torch.exp(z - z.gather(1, targets[:, None])).sum(1).mean()

        def plain_ce(logits, targets):
            return F.cross_entropy(logits.float(), targets)
    """))
    monkeypatch.chdir(tmp_path)
    used = {}
    for loss in ("mylosses.py:exp_loss", "mylosses.py:plain_ce"):
        code, out, err = cli("run", "--model", "mlp2", "--loss", loss, "--dataset", "cifar10-sample", "--epochs", "1",
                             "--limit-train", "300", "--limit-test", "100", "--quiet", "--out", str(tmp_path / "runs"))
        assert code == 0, err
    for path in (tmp_path / "runs").rglob("record.json"):
        config = json.loads(path.read_text())["config"]
        used[config["loss"]] = (config["precision"], config["precision_reason"])
    assert used["mylosses.py:exp_loss"][0] == "fp32" and "sensitive" in used["mylosses.py:exp_loss"][1]
    assert used["mylosses.py:plain_ce"] == ("bf16", "auto: bf16, native on this CPU")


def test_bench_speed_reports_training_flops_against_a_measured_matmul_peak(cli):
    code, out, err = cli("speed", "--model", "mlp2", "--dataset", "cifar10-sample", "--steps", "3",
                         "--warmup", "1", "--limit-train", "600", "--precision", "fp32", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["macs_per_image"] == 1_577_984  # 3072 x 512 + 512 x 10 (flop counter, meta device)
    assert result["train_flops_per_sec"] == pytest.approx(6 * result["macs_per_image"] * result["train_images_per_sec"])
    assert result["peak_flops_per_sec"] > 0
    assert result["fraction_of_peak"] == pytest.approx(result["train_flops_per_sec"] / result["peak_flops_per_sec"])
    assert result["precision_reason"] == "--precision fp32"


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_cuda_runs_use_fused_optimizers_so_fp16_needs_no_host_sync(monkeypatch, optimizer):
    """GradScaler checks a non-fused optimizer's gradients for inf with a host sync every step
    (measured on the H200: grad_scaler.py's .item()); a fused one gets the scale on the device.
    Checked here by the arguments the optimizer is built with (no GPU in CI)."""
    from bench.config import RunConfig
    from bench.train import make_optimizer

    built = {}

    class Recorder:
        def __init__(self, params, **kwargs):
            built.update(kwargs)

    monkeypatch.setattr(torch.optim, "SGD" if optimizer == "sgd" else "AdamW", Recorder)
    config = RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample", optimizer=optimizer)
    model = torch.nn.Linear(2, 2)
    make_optimizer(config, model, torch.device("cuda"))
    assert built.get("fused") is True
    built.clear()
    make_optimizer(config, model, torch.device("cpu"))
    assert "fused" not in built


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_fp16_training_makes_no_host_sync_per_step(cli):
    code, out, err = cli("speed", "--model", "cnn-tiny", "--dataset", "cifar10-sample", "--steps", "5",
                         "--warmup", "2", "--limit-train", "600", "--precision", "fp16", "--json")
    assert code == 0, err
    assert json.loads(out)["host_syncs_per_step"] == 0
