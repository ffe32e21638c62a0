"""A user's own models and losses (FILE.py:NAME, package.module:NAME, entry points), the Python
API, and bench working from a project that has its own `models/` and `losses/` packages."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

MODELS_PY = """
import torch
from torch import nn


class TinyNet(nn.Module):
    '''A user's model with a lazy head.'''

    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.LazyLinear(num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def linear(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


class SoftmaxNet(TinyNet):
    def forward(self, x):
        return super().forward(x).softmax(1)


def eleven_outputs(input_shape, num_classes):
    return linear(input_shape, num_classes + 1)


NUMBER = 3
"""

LOSSES_PY = """
import torch.nn.functional as F
from torch import nn


def smooth_ce(logits, targets):
    '''Cross-entropy with 0.05 label smoothing.'''
    return F.cross_entropy(logits.float(), targets, label_smoothing=0.05)


class Tempered(nn.Module):
    def __init__(self, t=1.0):
        super().__init__()
        self.t = t

    def forward(self, logits, targets):
        return F.cross_entropy(logits.float() / self.t, targets)


def per_sample(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")
"""

RUN = ["--dataset", "cifar10-sample", "--epochs", "1", "--limit-train", "300", "--limit-test", "100", "--quiet"]


@pytest.fixture
def project(tmp_path):
    """A user's project: its own models/ and losses/ packages (which must not shadow bench's) and
    plug-in files."""
    for package in ("models", "losses"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("raise ImportError('the project\\'s own package')\n")
    (tmp_path / "mynets.py").write_text(MODELS_PY)
    (tmp_path / "mylosses.py").write_text(LOSSES_PY)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    return tmp_path


def bench_cli(project, *args, env=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=project, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def records(folder):
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/record.json"))]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_own_class_builder_and_loss_function_train_through_the_cli(project):
    for model in ("mynets.py:TinyNet", "mynets.py:linear"):
        done = bench_cli(project, "run", "--model", model, "--loss", "mylosses.py:smooth_ce", *RUN, "--out", "runs")
        assert done.returncode == 0, done.stderr
    by_model = {r["config"]["model"]: r for r in records(project / "runs")}
    assert set(by_model) == {"mynets.py:TinyNet", "mynets.py:linear"}
    for r in by_model.values():
        assert r["status"] == "completed"
        assert r["sources"]["model"] == {"ref": r["config"]["model"], "path": "mynets.py", "sha256": sha(project / "mynets.py")}
        assert r["sources"]["loss"]["sha256"] == sha(project / "mylosses.py")
    assert by_model["mynets.py:TinyNet"]["model"]["params"] == 3 * 8 * 9 + 8 + 8 * 16 * 10 + 10  # lazy head counted


def test_loss_arg_passes_a_plugin_loss_its_keywords_on_the_command_line(project):
    done = bench_cli(project, "run", "--model", "mynets.py:linear", "--loss", "mylosses.py:Tempered",
                     "--loss-arg", "t=2", *RUN, "--out", "runs")
    assert done.returncode == 0, done.stderr
    [record] = records(project / "runs")
    assert record["config"]["loss_params"] == {"t": 2.0} and record["status"] == "completed"
    for extra, message in ((["--loss-arg", "t"], "--loss-arg takes KEY=VALUE"),
                           (["--loss-arg", "t=2", "--loss-arg", "t=3"], "given twice"),
                           (["--loss-arg", "u=1"], "cannot be built with {'u': 1.0}")):
        bad = bench_cli(project, "run", "--model", "mynets.py:linear", "--loss", "mylosses.py:Tempered", *extra, *RUN,
                        "--out", "bad")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
    bad = bench_cli(project, "run", "--model", "cnn-tiny", "--loss", "focal", "--gamma", "2", "--loss-arg", "gamma=1",
                    *RUN, "--out", "bad")
    assert bad.returncode == 2 and "gamma is given twice" in bad.stderr, bad.stderr


@pytest.mark.parametrize("model, loss, message", [
    ("nowhere.py:Net", "ce", "no file nowhere.py"),
    ("mynets.py:Nope", "ce", "mynets.py has no 'Nope'"),
    ("mynets.py:NUMBER", "ce", "not an nn.Module class or a builder function"),
    ("nopackage.mod:Net", "ce", "no module named 'nopackage'"),
    ("broken.py:Net", "ce", "importing broken.py failed: ZeroDivisionError"),
    ("mynets.py:eleven_outputs", "ce", "returns [64, 11] for a batch of 64 images"),
    ("mynets.py:SoftmaxNet", "ce", "outputs probabilities"),
    ("cnn-tiny", "mylosses.py:per_sample", "a loss returns a scalar"),
    ("cnn-tiny", "mylosses.py:Nope", "mylosses.py has no 'Nope'"),
])
def test_bad_references_are_one_line_and_exit_2(project, model, loss, message):
    done = bench_cli(project, "run", "--model", model, "--loss", loss, *RUN, "--out", "bad")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_experiment_file_takes_plugins_relative_to_itself_with_loss_arguments(project):
    (project / "exp").mkdir()
    (project / "exp" / "experiment.toml").write_text(textwrap.dedent("""
        dataset = "cifar10-sample"
        models = ["../mynets.py:linear"]
        seeds = [0]
        epochs = 1
        limit_train = 300
        limit_test = 100

        [[losses]]
        name = "../mylosses.py:Tempered"
        t = 2.0

        [[losses]]
        name = "../mylosses.py:smooth_ce"
    """))
    done = bench_cli(project, "grid", "exp/experiment.toml", "--quiet")
    assert done.returncode == 0, done.stderr
    runs = records(project / "exp" / "runs")
    assert len(runs) == 2 and all(r["status"] == "completed" for r in runs)
    tempered = [r for r in runs if r["config"]["loss"].endswith("Tempered")][0]
    assert tempered["config"]["loss_params"] == {"t": 2.0}
    assert tempered["sources"]["loss"] == {"ref": "../mylosses.py:Tempered", "path": "../mylosses.py",
                                           "sha256": sha(project / "mylosses.py")}


def test_python_api_from_a_project_with_its_own_models_and_losses(project):
    script = textwrap.dedent("""
        import json, os
        import pandas as pd
        import bench
        record = bench.run(model="mynets.py:TinyNet", loss="focal", dataset="cifar10-sample", out="api",
                           epochs=2, limit_train=300, limit_test=100, gamma=1.0)
        assert record["status"] == "completed" and record["config"]["loss_params"]["gamma"] == 1.0
        df = bench.load_runs("api")
        row = df.iloc[0]
        history = pd.read_csv(row.history_csv)
        print(json.dumps({"columns": list(df.columns), "model": row.model, "acc": row.test_accuracy,
                          "record_acc": record["metrics"]["test"]["accuracy"], "history": list(history.columns),
                          "epochs": len(history)}))
        try:
            bench.run(model="cnn-tiny", loss="focal", dataset="cifar10-sample", gama=1.0)
        except bench.UsageError as exc:
            print("usage error:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[0])
    assert {"model", "loss", "seed", "status", "test_accuracy", "test_macro_f1", "test_ece"} <= set(result["columns"])
    assert result["model"] == "mynets.py:TinyNet" and result["acc"] == result["record_acc"]
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "val_ece", "lr",
            "seconds"} <= set(result["history"]) and result["epochs"] == 2
    assert "usage error: gama: neither a run setting" in done.stdout


def test_installed_packages_register_models_and_losses_by_entry_point(project, tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "userplug.py").write_text(MODELS_PY + LOSSES_PY)
    info = site / "userplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[bench.models]\nuser-linear = userplug:linear\n\n[bench.losses]\nuser-smooth = userplug:smooth_ce\n")
    env = {"PYTHONPATH": str(site)}
    listed = bench_cli(project, "models", env=env)
    assert "user-linear" in listed.stdout and "userplug" in listed.stdout, listed.stdout + listed.stderr
    losses = bench_cli(project, "losses", "user-*", env={**env, "COLUMNS": "200"})
    assert "user-smooth" in losses.stdout and "plug-in: userplug" in losses.stdout.replace("\n", " ")
    done = bench_cli(project, "run", "--model", "user-linear", "--loss", "user-smooth", *RUN, "--out", "ep", env=env)
    assert done.returncode == 0, done.stderr
    [record] = records(project / "ep")
    assert record["status"] == "completed" and record["config"]["model"] == "user-linear"


def test_bench_command_and_import_work_beside_own_models_and_losses_packages(project):
    done = bench_cli(project, "losses", "focal")
    assert done.returncode == 0 and "focal" in done.stdout, done.stderr
    done = subprocess.run(["bench", "models"], cwd=project, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "cnn-tiny" in done.stdout, done.stderr


def test_an_edited_plugin_file_is_a_new_run_not_a_resumed_one(project):
    args = ["run", "--model", "mynets.py:linear", "--loss", "ce", *RUN, "--out", "runs", "--resume"]
    assert bench_cli(project, *args).returncode == 0
    assert bench_cli(project, *args).returncode == 0  # unchanged code: the completed run is found again
    assert len(records(project / "runs")) == 1
    (project / "mynets.py").write_text(MODELS_PY + "\n# edited\n")
    assert bench_cli(project, *args).returncode == 0
    runs = records(project / "runs")
    assert len(runs) == 2 and len({r["sources"]["model"]["sha256"] for r in runs}) == 2
