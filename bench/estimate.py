"""`bench grid EXPERIMENT --estimate`: what a grid will cost on this machine, before it runs.

Times a few training and evaluation steps of each model on the experiment's own data (bench
speed's timer, this machine, now), then multiplies out. An eval run is `epochs` passes over the
training split plus a validation pass each epoch and one test pass; tuning counts every trial to
its last epoch, an upper bound: Hyperband stops many trials early (the published boards' tuning
ran 49-65% of it). Start-up (loading data, building the model) and other jobs on the machine come
on top.
"""

from __future__ import annotations

from dataclasses import replace

from bench.datasets import prepare_splits
from bench.experiment import Experiment
from bench.losses import get_loss
from bench.speed import measure_speed
from bench.tuning import SearchSpace


def split_sizes(config) -> dict[str, int]:
    data = prepare_splits(config)
    return {"train": len(data.train), "val": len(data.val), "test": len(data.test)}


def run_seconds(sizes: dict[str, int], speed: dict, epochs: int, test: bool) -> float:
    """One run, at `bench speed`'s measured rates: each epoch trains on the training split and
    evaluates the validation split."""
    train, evaluate = speed["train_images_per_sec"], speed["eval_images_per_sec"]
    return epochs * (sizes["train"] / train + sizes["val"] / evaluate) + (
        sizes["test"] / evaluate if test else 0.0
    )


def estimate(experiment: Experiment, steps: int = 10, warmup: int = 3, measure=measure_speed,
             sizes_of=split_sizes) -> list[dict]:
    """One row per cell: its eval runs and tuning trials and their seconds on this machine."""
    speeds: dict[tuple, dict] = {}
    sizes: dict[str, dict] = {}
    ref = experiment.cells[0].config

    def sizes_for(config) -> dict[str, int]:  # cells that differ in training settings only share their data
        key = replace(config, loss=ref.loss, loss_params=ref.loss_params, lr=ref.lr, seed=ref.seed,
                      epochs=ref.epochs).config_hash()
        if key not in sizes:
            sizes[key] = sizes_of(config)
        return sizes[key]

    rows = []
    for cell in experiment.cells:
        config = cell.config
        # auto precision also depends on the loss (bench.precision): a bf16-sensitive one runs in fp32
        loss_bf16 = get_loss(config.loss, config.base_dir).bf16 if config.precision == "auto" else None
        key = (config.model, config.image_size, config.batch_size, config.precision, loss_bf16, config.device,
               config.compile)
        if key not in speeds:
            speeds[key] = measure(replace(config, limit_train=min(config.limit_train or 2048, 2048)), steps,
                                  warmup)
        speed = speeds[key]
        row = {"model": config.model, "loss": config.loss,
               "precision": speed.get("precision", config.precision),
               "train_images_per_sec": speed["train_images_per_sec"],
               "eval_runs": len(experiment.seeds),
               "eval_run_seconds": run_seconds(sizes_for(config), speed, config.epochs, test=True),
               "tuning_trials": 0, "tuning_seconds_at_most": 0.0}
        spec = experiment.tune
        if spec is not None:
            space = SearchSpace.of(config, cell.lr_fixed, spec.lr)
            if space.lr or space.loss_params:
                trial = spec.trial_config(config)
                studies = len(experiment.seeds) if spec.per_seed else 1
                row["tuning_trials"] = spec.trials * studies
                row["tuning_seconds_at_most"] = row["tuning_trials"] * run_seconds(sizes_for(trial), speed,
                                                                                   trial.epochs,
                                                                                   test=False)
        rows.append(row)
    return rows
