"""A model entry of an experiment file can bring its own optimizer and warm-up (a timm backbone
that needs AdamW), recorded in the config; the warm-up ramps the lr linearly, then the schedule."""

import json

import pytest
import torch

from bench.config import RunConfig
from bench.experiment import load_experiment
from bench.train import make_schedule

EXPERIMENT = """
dataset = "cifar10-sample"
models = ["mlp2", {name = "cnn-tiny", optimizer = "adamw", warmup_epochs = 1.0}]
seeds = [0]
epochs = 2
limit_train = 300
limit_test = 100
[[losses]]
name = "ce"
"""


def test_a_model_entry_brings_its_own_optimizer_and_warmup(tmp_path, cli):
    path = tmp_path / "experiment.toml"
    path.write_text(EXPERIMENT)
    experiment = load_experiment(path)
    mlp2, tiny = (c.config for c in experiment.cells)
    assert (mlp2.optimizer, mlp2.warmup_epochs, mlp2.lr) == ("sgd", 0.0, 0.05)
    assert (tiny.optimizer, tiny.warmup_epochs, tiny.lr) == ("adamw", 1.0, 1e-3)  # AdamW's default lr
    code, _, err = cli("grid", str(path), "--quiet")
    assert code == 0, err
    configs = {json.loads(p.read_text())["config"]["model"]: json.loads(p.read_text())["config"]
               for p in (tmp_path / "runs").glob("*/record.json")}
    assert configs["cnn-tiny"]["optimizer"] == "adamw" and configs["cnn-tiny"]["warmup_epochs"] == 1.0
    history = json.loads(next((tmp_path / "runs").glob("*cnn-tiny*/record.json")).read_text())["history"]
    assert history[0]["lr"] <= 1e-3 / 2  # epoch 1 starts at the bottom of the ramp (2 steps: half)


def test_warmup_ramps_linearly_then_follows_the_schedule():
    config = RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample", epochs=4, warmup_epochs=1.0, lr=0.1)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    factor = make_schedule(config, optimizer, total_steps=40).lr_lambdas[0]
    import math

    cosine = [0.5 * (1 + math.cos(math.pi * s / 40)) for s in range(40)]
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1 * cosine[0], 0.5 * cosine[4], 1.0 * cosine[9]])
    plain = make_schedule(RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample", epochs=4), optimizer, 40)
    assert factor(20) == plain.lr_lambdas[0](20)  # past the ramp: the cosine schedule


def test_no_warmup_keeps_every_earlier_run_identity():
    config = RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample")
    assert "warmup_epochs" not in json.dumps(config.config_hash())
    warm = RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample", warmup_epochs=1.0)
    assert warm.config_hash() != config.config_hash()


@pytest.mark.parametrize("entry, message", [
    ('{name = "cnn-tiny", optimiser = "adamw"}', "model cnn-tiny has no setting optimiser"),
    ('{name = "cnn-tiny", warmup_epochs = "one"}', "warmup_epochs must be float"),
    ('{optimizer = "adamw"}', "each models item is a name or a table with a name"),
])
def test_bad_model_entries_are_one_line(tmp_path, cli, entry, message):
    path = tmp_path / "experiment.toml"
    path.write_text(EXPERIMENT.replace('{name = "cnn-tiny", optimizer = "adamw", warmup_epochs = 1.0}', entry))
    code, _, err = cli("grid", str(path))
    assert code == 2 and message in err and err.count("\n") == 1, err
