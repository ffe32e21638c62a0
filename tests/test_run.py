"""End-to-end runs on real images: the bundled sample and the CIFAR-10 archive in ../shared."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import bench.train
from bench.config import RunConfig
from bench.errors import UsageError
from bench.losses import LOSSES
from bench.models import MODELS, ModelSpec
from bench.train import run

RECORD_KEYS = {"schema_version", "run_id", "status", "config", "dataset", "model", "history", "metrics", "timing", "env"}
TEST_KEYS = {"loss", "accuracy", "macro_f1", "nll", "ece", "per_class", "confusion_matrix"}
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


def check_record(record: dict, epochs: int) -> None:
    assert RECORD_KEYS <= set(record)
    assert record["status"] == "completed"
    assert len(record["history"]) == epochs and HISTORY_KEYS <= set(record["history"][0])
    test = record["metrics"]["test"]
    assert TEST_KEYS <= set(test)
    assert list(test["per_class"]) == record["dataset"]["class_names"]
    assert {"accuracy", "precision", "recall", "f1", "support"} <= set(test["per_class"]["cat"])
    assert record["model"]["params"] > 0 and record["model"]["macs"] > 0
    assert {"python", "torch", "device_name", "git_commit"} <= set(record["env"])
    assert "hostname" not in json.dumps(record["env"])


def test_quickstart_command_runs(tmp_path):
    """The README's offline quickstart, as a user types it."""
    cmd = [sys.executable, "-m", "bench", "run", "--model", "cnn", "--loss", "focal",
           "--dataset", "cifar10-sample", "--epochs", "3", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "per-class test metrics" in done.stdout and "airplane" in done.stdout
    [path] = tmp_path.glob("*/record.json")
    record = json.loads(path.read_text())
    check_record(record, 3)
    assert record["dataset"]["splits"] == {"train": 4500, "val": 500, "test": 1000}
    assert record["metrics"]["test"]["accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert not list(tmp_path.glob("*/.*.tmp")), "atomic write left a temp file"


class Spy(torch.nn.Module):
    """Wraps a loss and logs the targets of every call and the logits of the first."""

    def __init__(self, criterion, log):
        super().__init__()
        self.criterion, self.log = criterion, log

    def forward(self, logits, targets):
        if "probed" not in self.log:  # the first call is bench's check of the loss, on random logits
            self.log["probed"] = tuple(logits.shape)
            return self.criterion(logits, targets)
        self.log["targets"].append(targets.clone())
        self.log.setdefault("first_logits", logits.detach().clone())
        return self.criterion(logits, targets)


def test_same_seed_gives_same_init_and_batches_for_every_loss(tmp_path, monkeypatch):
    seen: dict[str, dict] = {}
    real_build = bench.train.build_loss
    monkeypatch.setattr(
        bench.train, "build_loss",
        # the run passes its resolved LossSpec: keyed by the loss's name
        lambda spec, *args: Spy(real_build(spec, *args), seen.setdefault(spec.name, {"targets": []})),
    )
    for loss in ("ce", "focal", "l1"):
        config = RunConfig(model="cnn-tiny", loss=loss, dataset="cifar10-sample", epochs=2,
                           limit_train=600, limit_test=100)
        run(config, tmp_path)
    ce, focal, l1 = seen["ce"], seen["focal"], seen["l1"]
    assert ce["probed"] == (4, 10)
    assert len(ce["targets"]) == len(focal["targets"]) == len(l1["targets"]) > 8
    for a, b, c in zip(ce["targets"], focal["targets"], l1["targets"]):
        assert torch.equal(a, b) and torch.equal(a, c)
    # the first step sees the same images through the same initial weights
    assert torch.equal(ce["first_logits"], focal["first_logits"])
    assert torch.equal(ce["first_logits"], l1["first_logits"])


@pytest.mark.integration
def test_cnn_on_cifar10_archive_reaches_45_percent(tmp_path, cifar10_archive):
    config = RunConfig(model="cnn", loss="ce", dataset="cifar10", data_root=str(cifar10_archive),
                       epochs=2, limit_train=10000)
    record, path = run(config, tmp_path)
    check_record(record, 2)
    assert record["dataset"]["splits"] == {"train": 9000, "val": 1000, "test": 10000}
    assert record["metrics"]["test"]["accuracy"] >= 0.45
    assert path.exists()


@pytest.mark.integration
def test_l1_stays_far_below_ce_and_focal_with_cnn_tiny(tmp_path, cifar10_archive):
    acc = {}
    for loss, params in (("ce", {}), ("focal", {"gamma": 2.0}), ("l1", {})):
        config = RunConfig(model="cnn-tiny", loss=loss, loss_params=params, dataset="cifar10",
                           data_root=str(cifar10_archive), epochs=3, limit_train=10000, limit_test=2000)
        acc[loss] = run(config, tmp_path)[0]["metrics"]["test"]["accuracy"]
    assert acc["ce"] > 0.3 and acc["focal"] > 0.3
    assert acc["l1"] < min(acc["ce"], acc["focal"]) - 0.15, acc


@pytest.mark.parametrize("loss", LOSSES.names())
def test_every_loss_trains_cnn_tiny_one_epoch_without_nan(loss, tmp_path):
    config = RunConfig(model="cnn-tiny", loss=loss, dataset="cifar10-sample", epochs=1, limit_train=2000)
    record = run(config, tmp_path)[0]
    assert record["status"] == "completed", record.get("reason")
    values = [record["history"][0][k] for k in ("train_loss", "val_loss")] + [record["metrics"]["test"]["loss"]]
    assert all(math.isfinite(v) for v in values), values


@pytest.fixture
def softmax_model():
    """A model with a softmax inside: the double-softmax bug of the seed report 003."""
    name = "test-softmax-mlp"
    if name not in MODELS:
        MODELS.add(name, ModelSpec(name, lambda shape, k: torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(math.prod(shape), k), torch.nn.Softmax(dim=1)), False))
    return name


def test_probability_outputs_are_caught_and_named(cli, softmax_model, tmp_path):
    code, _, err = cli("run", "--model", softmax_model, "--loss", "ce", "--dataset", "cifar10-sample",
                       "--epochs", "1", "--limit-train", "300", "--quiet", "--out", str(tmp_path))
    assert code == 2 and "outputs probabilities" in err and "double softmax" in err and "--allow-prob-outputs" in err
    code, _, err = cli("run", "--model", softmax_model, "--loss", "ce", "--dataset", "cifar10-sample",
                       "--epochs", "1", "--limit-train", "300", "--quiet", "--out", str(tmp_path),
                       "--allow-prob-outputs")
    assert code == 0, err


def test_bench_speed_json_has_the_promised_keys(cli):
    code, out, err = cli("speed", "--model", "cnn-tiny", "--dataset", "cifar10-sample", "--steps", "3",
                         "--warmup", "1", "--limit-train", "600", "--json")
    assert code == 0, err
    result = json.loads(out)
    for key in ("train_images_per_sec", "eval_images_per_sec", "compute_only_images_per_sec",
                "peak_memory_bytes", "device"):
        assert result[key] > 0 if key != "device" else result[key] == "cpu"
    assert result["host_syncs_per_step"] is None and result["host_sync_sites"] == {}  # counted on CUDA only


def test_host_syncs_are_counted_per_step_with_their_sites(monkeypatch):
    """The counting behind `bench speed`'s host-sync figure, on a CPU: torch's sync debug mode is
    replaced by a step that warns as torch does on every other call."""
    import warnings

    from bench.speed import SYNC_WARNING, host_syncs

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    calls = iter(range(100))

    def step(x, y):
        if next(calls) % 2 == 0:
            warnings.warn(SYNC_WARNING)
        warnings.warn("something else")

    result = host_syncs(step, iter([(None, None)] * 10), 8)
    assert result["host_syncs_per_step"] == 0.5 and modes == ["warn", "default"]
    [(site, count)] = result["host_sync_sites"].items()
    assert site.startswith("test_run.py:") and count == 4



def test_loader_benchmark_script_runs_both_loops():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "loader_vs_dataloader.py"
    done = subprocess.run([sys.executable, str(script), "--dataset", "cifar10-sample", "--steps", "3", "--warmup", "1",
                           "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bench_images_per_sec"] > 0 and result["dataloader_pil_images_per_sec"] > 0
    reference = result["dataloader_pil_images_per_sec"]
    assert result["ratio"] == pytest.approx(result["bench_images_per_sec"] / reference, abs=0.011)
    assert result["ceiling_ratio"] == pytest.approx(result["compute_only_images_per_sec"] / reference, abs=0.011)


def test_gpu_matrix_script_prints_a_line_per_configuration_even_when_one_fails():
    """The GPU issue's speed matrix driver, kept runnable on a CPU (fp16 fails there: its line says why)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_matrix.py"
    done = subprocess.run([sys.executable, str(script), "--models", "cnn-tiny", "--inputs", "cifar10-sample:32",
                           "--precisions", "fp32,fp16", "--compile", "no", "--steps", "2", "--warmup", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ok, failed = [json.loads(line) for line in done.stdout.splitlines()]
    assert ok["train_images_per_sec"] > 0 and ok["image_size"] == 32 and ok["precision"] == "fp32"
    assert "fp16 needs a CUDA GPU" in failed["error"]


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_runs_on_cpu_and_reports_compile_time_apart(tmp_path, mode):
    config = RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample", epochs=1, limit_train=300,
                       limit_test=50, compile=True, compile_mode=mode)  # CUDA graphs: on a GPU only
    record = run(config, tmp_path)[0]
    assert record["status"] == "completed" and record["timing"]["compile_seconds"] > 0
    assert record["config"]["compile_mode"] == mode
    with pytest.raises(UsageError, match="--compile-mode reduce-overhead needs --compile"):
        replace(config, compile=False, compile_mode="reduce-overhead")


def test_run_identity_is_stable_and_ignores_where_the_data_lies():
    """Published grids find their finished runs by this hash. A new RunConfig field changes it
    for every run and makes every grid start over: leave a new field out of the identity at the
    default that reproduces earlier runs, and only then update this value."""
    config = RunConfig(model="cnn-tiny", loss="ce", dataset="cifar10", epochs=3)
    assert config.config_hash() == "50e92cb02aa6"
    assert RunConfig(model="cnn-tiny", loss="ce", dataset="cifar10", epochs=3, data_root="/elsewhere").config_hash() == "50e92cb02aa6"
    assert RunConfig(model="cnn-tiny", loss="ce", dataset="cifar10", epochs=4).config_hash() != "50e92cb02aa6"


def test_git_commit_is_dirty_only_when_the_package_changed(tmp_path):
    """A board writes records and its journal into the repository while it runs: that must not mark
    its runs `-dirty`; an edit to the code must."""
    from bench.record import git_commit

    repo, package = tmp_path / "repo", tmp_path / "repo" / "bench"
    (repo / "leaderboards").mkdir(parents=True)
    package.mkdir()
    (package / "train.py").write_text("x = 1\n")
    (repo / "leaderboards" / "tuning.journal").write_text("{}\n")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                       capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "leaderboards" / "tuning.journal").write_text("{}\n{}\n")
    assert git_commit.__wrapped__(package) == head
    (package / "train.py").write_text("x = 2\n")
    assert git_commit.__wrapped__(package) == head + "-dirty"
    assert git_commit.__wrapped__(tmp_path) is None  # not a repository
