"""One orchestration path: the CLI's flags come from RunConfig, the CLI and the API build runs the
same way, a completed run is found before any data is decoded, and from an index, not a scan."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import bench
import bench.record
import bench.report
import bench.train
from bench.cli import build_parser
from bench.config import SETTINGS, RunConfig
from bench.errors import ExitCode, UsageError

BENCH = Path(bench.__file__).parent


def run_parser():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    return commands["run"]


def test_every_run_setting_is_a_flag_with_runconfigs_default_and_help():
    actions = {a.dest: a for a in run_parser()._actions}
    for name, f in SETTINGS.items():
        action = actions[name]
        default = None if f.default == () else f.default
        assert action.default == default, name
    assert actions["augment"].option_strings == ["--no-augment"]
    assert "Nesterov" in actions["momentum"].help and "(default: 0.9)" in run_parser().format_help()


def test_the_cli_and_the_api_build_the_same_config():
    """`bench run` flags and bench.api.config keywords give one RunConfig (one builder)."""
    args = run_parser().parse_args(["--model", "cnn-tiny", "--loss", "focal", "--dataset", "cifar10-sample",
                                    "--epochs", "3", "--classes", "a,b", "--no-augment", "--gamma", "0.5"])
    from bench.cli import given_settings, loss_params_of

    assert given_settings(args) == {"epochs": 3, "classes": ("a", "b"), "augment": False}
    from_cli = bench.api.config("cnn-tiny", "focal", "cifar10-sample", loss_params_of(args), **given_settings(args))
    from_api = bench.api.config("cnn-tiny", "focal", "cifar10-sample", epochs=3, classes="a,b", augment=False,
                                gamma=0.5)
    assert from_cli == from_api
    assert from_api == RunConfig(model="cnn-tiny", loss="focal", dataset="cifar10-sample", epochs=3,
                                 classes=("a", "b"), augment=False, loss_params={"gamma": 0.5})


def test_runconfig_reads_classes_as_a_flag_a_list_or_a_tuple_alike():
    """One place turns "a,b" (flag, API) or ["a", "b"] (TOML, a record's JSON) into the tuple: the
    experiment loader, the API and a resumed record give one config and one hash."""
    configs = [RunConfig(model="cnn", loss="ce", dataset="imagenet10", classes=c)
               for c in ("a,b", ["a", "b"], ("a", "b"))]
    assert {c.classes for c in configs} == {("a", "b")}
    assert len({c.config_hash() for c in configs}) == 1
    assert RunConfig(model="cnn", loss="ce", dataset="imagenet10", classes="").classes == ()


def test_cli_builds_no_runconfig_and_chooses_no_storage():
    source = (BENCH / "cli.py").read_text()
    calls = {node.func.id for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "RunConfig" not in calls
    for storage_decision in ("grid.db", "grid_storage(", "open_storage", "import optuna", "load_study"):
        assert storage_decision not in source, storage_decision


def test_optuna_is_called_from_one_module():
    """Studies are created, loaded and re-queued in bench/studies.py only."""
    for path in BENCH.rglob("*.py"):
        source = path.read_text()
        for call in ("create_study(", "load_study(", "enqueue_trial(", "fail_stale_trials("):
            if path.name != "studies.py":
                assert call not in source, f"{path.relative_to(BENCH)} calls {call}"


def test_exit_codes_are_one_enum():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 130]
    assert ExitCode.signal(15) == 143


def test_the_api_params_file_clashes_with_a_value_given_twice(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"loss": "focal", "lr": 0.01, "loss_params": {"gamma": 1.0}}))
    with pytest.raises(UsageError, match="--lr and --params both set"):
        bench.run("cnn-tiny", "focal", "cifar10-sample", out=tmp_path, params=best, lr=0.1)
    with pytest.raises(UsageError, match="--gamma and --params both set"):
        bench.run("cnn-tiny", "focal", "cifar10-sample", out=tmp_path, params=best, gamma=2.0)


def test_a_completed_run_is_found_before_data_is_decoded(tmp_path, monkeypatch):
    record = bench.run("cnn-tiny", "ce", "cifar10-sample", out=tmp_path, epochs=1, limit_train=256, limit_test=64)

    def no_setup(*_args, **_kwargs):
        raise AssertionError("data decoded and model built for a run that already completed")

    monkeypatch.setattr(bench.train, "prepare", no_setup)
    again = bench.run("cnn-tiny", "ce", "cifar10-sample", out=tmp_path, epochs=1, limit_train=256, limit_test=64,
                      resume=True)
    assert again["run_id"] == record["run_id"]
    assert bench.api.record_path(record, tmp_path).exists()


PLUGINS = """
import torch.nn.functional as F
from torch import nn


def linear(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def smooth_ce(logits, targets):
    return F.cross_entropy(logits.float(), targets, label_smoothing=0.05)
"""


def test_a_grid_point_resolves_its_model_and_loss_once_and_returns_a_typed_outcome(tmp_path, monkeypatch):
    """Plug-in references are imported and hashed once per run (`train.Refs`), not once for the
    identity, the check, the MAC count, the build and the record's sources each."""
    import bench.grids
    import bench.plugins
    from bench.record import Outcome, Status

    (tmp_path / "mine.py").write_text(PLUGINS)
    resolved = []
    real_resolve = bench.plugins.resolve

    def counting(kind, ref, base_dir=None):
        resolved.append(kind)
        return real_resolve(kind, ref, base_dir)

    monkeypatch.setattr(bench.plugins, "resolve", counting)
    config = RunConfig(model=f"{tmp_path / 'mine.py'}:linear", loss=f"{tmp_path / 'mine.py'}:smooth_ce",
                       dataset="cifar10-sample", epochs=1, limit_train=128, limit_test=32)
    status = bench.grids.run_point(config, tmp_path / "runs", bench.report.QuietReporter, "point", lambda *_: None)
    assert status is Status.COMPLETED
    assert sorted(resolved) == ["loss", "model"]
    outcome = bench.train.run(config, tmp_path / "runs", resume=True)  # found, not run again
    assert isinstance(outcome, Outcome) and outcome.status is Status.COMPLETED and outcome.completed
    record, path = outcome
    assert path == outcome.path and record["sources"]["model"]["ref"].endswith("mine.py:linear")
    assert bench.grids.run_point(config, tmp_path / "runs", bench.report.QuietReporter, "p", print) == "skipped"


def test_resume_lookups_read_each_run_folder_once(tmp_path, monkeypatch):
    """A grid of N points asks for N identities; the index reads each run.json once, not N times."""
    for i in range(30):
        folder = tmp_path / f"run-{i}"
        folder.mkdir()
        (folder / bench.record.RUN_INFO_NAME).write_text(json.dumps({"config_hash": f"h{i}", "started": "t"}))
    reads = []
    real_read = Path.read_text

    def counting(self, *args, **kwargs):
        if self.name == bench.record.RUN_INFO_NAME:
            reads.append(self)
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    for i in range(30):
        folder, done = bench.record.find_resumable(tmp_path, f"h{i}")
        assert folder == tmp_path / f"run-{i}" and done is None
    assert len(reads) == 30
    (tmp_path / "run-new").mkdir()  # a run another worker started since
    (tmp_path / "run-new" / bench.record.RUN_INFO_NAME).write_text(json.dumps({"config_hash": "new", "started": "u"}))
    assert bench.record.find_resumable(tmp_path, "new")[0] == tmp_path / "run-new"
    assert len(reads) == 31


def test_no_line_in_bench_is_longer_than_110_characters():
    long = [f"{p.relative_to(BENCH)}:{i}" for p in BENCH.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 110]
    assert not long, long


def test_public_api_functions_document_their_parameters():
    for name in ("run", "tune", "grid", "leaderboard", "config", "speed"):
        doc = getattr(bench.api, name).__doc__
        assert "Parameters" in doc, name


def test_to_flags_is_the_inverse_of_the_cli_settings():
    """A local worker gets the API's run settings back as the command line that sets them."""
    from bench.config import to_flags

    settings = {"epochs": 2, "batch_size": 64, "augment": False, "lookahead": True, "flip": "alternate",
                "classes": ("n01440764", "n02102040"), "lr": 0.1, "imbalance": None, "precision": "fp32"}
    args = run_parser().parse_args(["--model", "cnn", "--loss", "ce", "--dataset", "cifar10", *to_flags(settings)])
    assert {k: getattr(args, k) for k in settings if settings[k] is not None} == {
        k: v for k, v in settings.items() if v is not None}


def test_api_grid_flags_form_with_workers_passes_every_run_setting(tmp_path):
    """bench.grid(models=..., workers=2, batch_size=..., ...) failed: the workers' `bench grid`
    command line took only data_root, epochs, limit_train and limit_test."""
    tally = bench.grid(models="mlp2", losses="ce", dataset="cifar10-sample", seeds=(0, 1), out=tmp_path, workers=2,
                       epochs=1, limit_train=256, limit_test=64, batch_size=64, augment=False, precision="fp32",
                       quiet=True, log=lambda *_: None)
    assert tally["completed"] == 2 and list(tally.worker_codes) == [0, 0]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*/record.json")]
    assert len(records) == 2
    assert all(r["config"]["batch_size"] == 64 and r["config"]["augment"] is False for r in records)
