"""Command line: `bench run | models | losses | datasets`.

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr); 1 anything else;
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from bench.checkpoint import Interrupted
from bench.config import DEVICES, NOISE_TYPES, OPTIMIZERS, PRECISIONS, SCHEDULES, STEMS, RunConfig
from bench.datasets import DATASETS, get_dataset
from bench.errors import UsageError
from bench.experiment import Experiment
from bench.losses import LOSSES, all_hparams, get_loss
from bench.models import MODELS, check_model


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default in --help (where it has one); descriptions and epilogs (the
    experiment-file schema) as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2, without the usage block, and
    suggests the flag a misspelt one was probably meant to be."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        """A flag without its own help still shows its default."""
        if not kwargs.get("help") and kwargs.get("default") not in (None, False, [], argparse.SUPPRESS):
            kwargs["help"] = "(default: %(default)s)"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog
        if message.startswith("unrecognized arguments:"):
            prog = self.command_prog or prog
            message += did_you_mean(message.split(":", 1)[1].split(), self.command_flags)
        raise UsageError(f"{message} (see '{prog} --help')")

    command_prog: str | None = None  # set by main: the sub-command's name and flags, for suggestions
    command_flags: tuple[str, ...] = ()


def did_you_mean(words: list[str], flags) -> str:
    import difflib

    hints = []
    for word in words:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=")[0], list(flags), n=1, cutoff=0.6)
            if close:
                hints.append(f"{close[0]} (not {word.split('=')[0]})")
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def parse_hparam(text: str) -> float | str | tuple[float, ...]:
    """'2' -> 2.0; '0.25,0.75' -> (0.25, 0.75); anything else stays a word ('balanced'), which
    the loss's declared hyperparameter then accepts or rejects."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return text
    return values[0] if len(values) == 1 else values


# The run settings' defaults are RunConfig's: one place, read here for the flags and their --help.
RUN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help=f"one of: {', '.join(MODELS)}, timm:<name>, or your own FILE.py:NAME / package.module:NAME")
    p.add_argument("--loss", required=True,
                   help=f"one of: {', '.join(LOSSES)}, or your own FILE.py:NAME / package.module:NAME")
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}, or folder:PATH")
    p.add_argument("--data-root", help="where the dataset lies (folder or .tar.gz); see 'bench datasets'")
    p.add_argument("--epochs", type=int, default=RUN_DEFAULTS["epochs"])
    p.add_argument("--seed", type=int, default=RUN_DEFAULTS["seed"],
                   help="fixes initial weights, val split and batch order")
    p.add_argument("--batch-size", type=int, default=RUN_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, help="learning rate (default: " +
                   ", ".join(f"{k} {v:g}" for k, v in OPTIMIZERS.items()) + ")")
    p.add_argument("--optimizer", default=RUN_DEFAULTS["optimizer"], choices=list(OPTIMIZERS))
    p.add_argument("--momentum", type=float, default=RUN_DEFAULTS["momentum"], help="SGD momentum (Nesterov)")
    p.add_argument("--weight-decay", type=float, default=RUN_DEFAULTS["weight_decay"])
    p.add_argument("--schedule", default=RUN_DEFAULTS["schedule"], choices=SCHEDULES)
    p.add_argument("--warmup-epochs", type=float, default=RUN_DEFAULTS["warmup_epochs"],
                   help="linear lr warm-up over this many epochs, then the schedule (AdamW on ConvNeXt/ViT wants 1-5)")
    p.add_argument("--val-fraction", type=float, default=RUN_DEFAULTS["val_fraction"],
                   help="share of train held out for validation")
    p.add_argument("--limit-train", type=int, help="use this many training images (val is carved from them)")
    p.add_argument("--limit-test", type=int, help="report on this many test images (stratified)")
    p.add_argument("--image-size", type=int, help="resize images to this many pixels square")
    p.add_argument("--stem", default=RUN_DEFAULTS["stem"], choices=STEMS,
                   help="timm models: cifar = small-image stem (stride-1 3x3 conv; ConvNeXt too; ViT: "
                        "size/8 patches); auto = ResNet/EfficientNet-style stems only, at 32 px or less")
    p.add_argument("--pretrained", action="store_true", help="timm models: start from timm's pretrained weights")
    p.add_argument("--weights", help="timm models: a local state dict (loaded with weights_only=True)")
    p.add_argument("--split-seed", type=int, default=RUN_DEFAULTS["split_seed"],
                   help="fixes protocol splits (imagenet10 3:1:1, folder 4:1)")
    p.add_argument("--classes", help="comma-separated class folders (wnids) to use, for imagenet10")
    p.add_argument("--imbalance", type=float, help="long-tailed train split: largest / smallest class = R")
    p.add_argument("--label-noise", type=float, default=RUN_DEFAULTS["label_noise"],
                   help="fraction of training labels flipped")
    p.add_argument("--noise-type", default=RUN_DEFAULTS["noise_type"], choices=NOISE_TYPES)
    p.add_argument("--clean-val", action="store_true",
                   help="under --label-noise, keep validation labels clean (default: val as noisy as train)")
    p.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images out (counted)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop / flip")
    p.add_argument("--allow-prob-outputs", action="store_true",
                   help="train a model whose outputs look like probabilities (normally refused)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compile time reported apart)")
    p.add_argument("--auto-batch", action="store_true", help="on out-of-memory, halve the batch size and retry")
    p.add_argument("--device", default=RUN_DEFAULTS["device"], choices=DEVICES)
    p.add_argument("--precision", default=RUN_DEFAULTS["precision"], choices=PRECISIONS)
    p.add_argument("--out", default="runs", help="results folder (default: runs/)")
    p.add_argument("--quiet", action="store_true", help="no progress output; print only the record's path")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run of this configuration in --out from its checkpoint")
    group = p.add_argument_group("loss hyperparameters (see 'bench losses'; each applies to the losses named)")
    for name in all_hparams():
        group.add_argument(
            "--" + name.replace("_", "-"), dest=f"hp_{name}", metavar=name.upper(), type=parse_hparam,
            help=hparam_help(name), default=None,
        )
    group.add_argument("--loss-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any loss hyperparameter by name, repeatable; a plug-in loss gets it as a keyword")


def hparam_help(name: str) -> str:
    """One line per meaning of a shared loss flag, from each declaring loss's own description:
    '--alpha' is a class weight for focal and the ce weight for sce."""
    meanings: dict[str, list[str]] = {}
    for loss in LOSSES.names():
        spec = LOSSES.get(loss)
        if name in spec.params and spec.name == loss:
            hp = spec.params[name]
            meanings.setdefault(f"{hp.help} (default {hp.default_text()})", []).append(loss)
    return "; ".join(f"{', '.join(losses)}: {text}" for text, losses in meanings.items())


def loss_params_of(args: argparse.Namespace) -> dict:
    """The loss hyperparameters given: --<name> flags and --loss-arg KEY=VALUE pairs."""
    params = {key[3:]: value for key, value in vars(args).items() if key.startswith("hp_") and value is not None}
    for item in args.loss_arg:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier() or not value:
            raise UsageError(f"--loss-arg takes KEY=VALUE (for example --loss-arg margin=0.5), got {item!r}")
        if key in params:
            raise UsageError(f"loss hyperparameter {key} is given twice; give it once")
        params[key] = parse_hparam(value.strip())
    return params


def config_from_args(args: argparse.Namespace, **overrides) -> RunConfig:
    loss_params = overrides.pop("loss_params") if "loss_params" in overrides else loss_params_of(args)
    check_model(args.model), get_loss(args.loss), get_dataset(args.dataset)  # name errors first
    fields = dict(
        model=args.model, loss=args.loss, dataset=args.dataset, loss_params=loss_params,
        data_root=args.data_root, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        val_fraction=args.val_fraction,
        limit_train=args.limit_train, limit_test=args.limit_test, image_size=args.image_size,
        split_seed=args.split_seed, classes=tuple(args.classes.split(",")) if args.classes else (),
        imbalance=args.imbalance, label_noise=args.label_noise, noise_type=args.noise_type, clean_val=args.clean_val,
        skip_bad_images=args.skip_bad_images, stem=args.stem, pretrained=args.pretrained, weights=args.weights,
        augment=args.augment, allow_prob_outputs=args.allow_prob_outputs, auto_batch=args.auto_batch,
        compile=args.compile, device=args.device, precision=args.precision,
    )
    return RunConfig(**(fields | overrides))


def command_run(args: argparse.Namespace, argv: list[str]) -> int:
    overrides = {}
    if args.params:
        from bench.tuning import load_params

        tuned = load_params(Path(args.params), args.loss)
        clash = [f for f, key in (("--lr", "lr"), ("--weight-decay", "weight_decay")) if key in tuned and f in argv]
        given = loss_params_of(args)
        clash += [f"--{k.replace('_', '-')}" for k in tuned.get("loss_params", {}) if k in given]
        if clash:
            raise UsageError(f"{', '.join(clash)} and --params both set the same value; give one of them")
        overrides = {k: v for k, v in tuned.items() if k != "loss_params"}
        overrides["loss_params"] = {**tuned.get("loss_params", {}), **given}
    config = config_from_args(args, **overrides)
    from bench.report import make_reporter, print_summary
    from bench.train import run

    record, path = run(config, Path(args.out), make_reporter(args.quiet), command=shlex.join(["bench", *argv]),
                       resume=args.resume)
    if args.quiet:
        print(path)  # the one thing a script needs
    else:
        print_summary(record, str(path))
    return 0 if record["status"] == "completed" else 1


def command_tune(args: argparse.Namespace, argv: list[str]) -> int:
    from bench.tuning import tune

    if args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    config = config_from_args(args)
    study, best_path = tune(config, args.trials, Path(args.out), args.storage, args.study_name,
                            args.objective, args.pruner, args.tune_weight_decay, lr_fixed=args.lr is not None)
    import optuna

    finished = [t for t in study.trials if t.value is not None]
    top = sorted(finished, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    table = Table(title=f"study {study.study_name}: {len(study.trials)} trials "
                        f"({sum(t.state.name == 'PRUNED' for t in study.trials)} pruned)")
    table.add_column("trial", justify="right")
    table.add_column(args.objective, justify="right")
    for key in top[0].params:
        table.add_column(key, justify="right")
    for t in top[:5]:
        table.add_row(str(t.number), f"{t.value:.4f}", *[f"{t.params[k]:.4g}" for k in top[0].params])
    Console().print(table)
    print(f"best parameters: {best_path} (reproduce with: bench run ... --params {best_path})")
    return 0


def command_models(args: argparse.Namespace, argv: list[str]) -> int:
    if args.timm is not None:
        from bench.models.timm_adapter import timm_names

        names = timm_names(args.timm)
        print("\n".join(f"timm:{n}" for n in names) if names else f"no timm model matches {args.timm!r}")
        return 0
    if not MODELS.names(args.pattern):
        raise UsageError(f"no bench model matches {args.pattern!r}; 'bench models' lists them all "
                         "(timm's: bench models --timm PATTERN)")
    table = Table("model", "description")
    for name in MODELS.names(args.pattern):
        table.add_row(name, MODELS.get(name).summary)
    Console().print(table)
    print("and any timm model as timm:<name> (list them with: bench models --timm 'resnet*')")
    return 0


def command_losses(args: argparse.Namespace, argv: list[str]) -> int:
    console = Console()
    wide = console.width >= 150  # narrower: descriptions go below the table instead of being squeezed
    table = Table("loss", "hyperparameter", "default", "valid", "tuning range", *(["description"] if wide else []),
                  box=box.SIMPLE_HEAD)
    for column in table.columns[:3]:  # names, flags and defaults whole; ranges wrap if they must
        column.no_wrap = True
    names = LOSSES.names(args.pattern)
    if not names:
        raise UsageError(f"no loss matches {args.pattern!r}; 'bench losses' lists them all")
    for name in names:
        spec = LOSSES.get(name)
        rows = list(spec.params.items()) or [("", None)]
        for i, (key, hp) in enumerate(rows):
            cells = ["", "", ""] if hp is None else [hp.default_text(), hp.range_text(), hp.tune_text()]
            flag = "--" + key.replace("_", "-") if key else ""
            table.add_row(name if i == 0 else "", flag, *cells, *([spec.summary if i == 0 else ""] if wide else []))
    console.print(table)
    if not wide:
        for name in names:
            console.print(f"[bold]{name}[/bold]: {LOSSES.get(name).summary}", highlight=False)
    return 0


def command_datasets(args: argparse.Namespace, argv: list[str]) -> int:
    if not DATASETS.names(args.pattern):
        raise UsageError(f"no dataset matches {args.pattern!r}; 'bench datasets' lists them all")
    table = Table("dataset", "image size", "description", "--data-root accepts")
    for name in DATASETS.names(args.pattern):
        spec = DATASETS.get(name)
        table.add_row(name, f"{spec.image_size} px", spec.description, spec.data_root)
    Console().print(table)
    print("and folder:PATH for any image tree (train/ + test/ class folders, a .tar.gz of that, or one root of "
          "class folders, split 4:1 by --split-seed)")
    return 0



def grid_experiment(args: argparse.Namespace) -> tuple[Experiment, Path]:
    """The experiment file, or the flags form (default hyperparameters, no tuning), and its out folder."""
    from bench.experiment import Cell, load_experiment

    if args.experiment:
        path = Path(args.experiment)
        return load_experiment(path), Path(args.out or path.parent / "runs")
    if not (args.models and args.losses and args.dataset):
        raise UsageError("bench grid needs an experiment file, or --models, --losses and --dataset")
    if not all(s.strip().lstrip("-").isdigit() for s in args.seeds.split(",")):
        raise UsageError(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    cells = []
    for model in args.models.split(","):
        check_model(model)
        for loss in args.losses.split(","):
            get_loss(loss)
            cells.append(Cell(RunConfig(
                model=model, loss=loss, dataset=args.dataset, data_root=args.data_root, seed=seeds[0],
                epochs=args.epochs, limit_train=args.limit_train, limit_test=args.limit_test,
            ), lr_fixed=False))
    return Experiment(None, tuple(cells), seeds), Path(args.out or "runs")


def command_grid(args: argparse.Namespace, argv: list[str]) -> int:
    import subprocess

    from bench.api import grid_storage, run_experiment
    from bench.report import make_reporter

    experiment, out = grid_experiment(args)
    if args.estimate:
        return print_estimate(experiment, args.experiment or "the grid")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    storage = grid_storage(out, args.storage, args.workers, bool(experiment.tune))
    runs = len(experiment.cells) * len(experiment.seeds)
    if args.workers > 1:  # N worker processes sharing one storage
        from bench.studies import open_storage

        out.mkdir(parents=True, exist_ok=True)
        open_storage(storage)  # create the schema once, before the workers race for it
        cmd = [sys.executable, "-m", "bench", *argv, "--workers", "1", "--storage", storage, "--out", str(out)]
        procs = [subprocess.Popen(cmd, env=worker_env(i)) for i in range(args.workers)]
        codes = [p.wait() for p in procs]
        print(f"grid of {runs} runs in {out}: {args.workers} workers exited with {codes}")
        return max(codes)
    tally = run_experiment(experiment, out, storage, lambda: make_reporter(args.quiet))
    done = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
    print(f"grid of {runs} runs in {out}: {done or 'nothing left to run here (every point completed, or taken by another worker)'}")
    return 0 if set(tally) <= {"completed", "skipped"} else 1


def print_estimate(experiment, name: str) -> int:
    from bench.estimate import estimate
    from bench.record import device_name
    from bench.report import duration
    from bench.train import resolve_device

    first = experiment.cells[0].config
    device = resolve_device(first.device)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if device.type == "cpu" and load > 0.5 * cores:
        print(f"warning: the machine is busy (load {load:.1f} on {cores} cores): these timings will be too slow",
              file=sys.stderr)
    rows = estimate(experiment)
    table = Table(title=f"estimate for {name} on {device_name(device)} ({device.type}), from 10 timed steps per model")
    for col in ("model", "loss", "precision", "train img/s", "eval runs", "each", "tuning trials", "all trials (at most)"):
        table.add_column(col, justify="left" if col in ("model", "loss") else "right", no_wrap=col in ("model", "loss"))
    for r in rows:
        table.add_row(r["model"], r["loss"], r["precision"], f"{r['train_images_per_sec']:,.0f}", str(r["eval_runs"]),
                      duration(r["eval_run_seconds"]), str(r["tuning_trials"]), duration(r["tuning_seconds_at_most"]))
    Console().print(table)
    evals = sum(r["eval_runs"] * r["eval_run_seconds"] for r in rows)
    tuning = sum(r["tuning_seconds_at_most"] for r in rows)
    print(f"eval {duration(evals)} + tuning at most {duration(tuning)} = at most {duration(evals + tuning)} on this "
          "machine, start-up and other jobs not counted; Hyperband stops many trials early (the published boards' "
          "tuning ran 49-65% of the most)" if tuning else f"eval {duration(evals)} on this machine, start-up and "
          "other jobs not counted")
    return 0


def worker_env(index: int) -> dict:
    """A local worker's environment: on a machine with several GPUs, each worker gets its own."""
    import torch

    gpus = torch.cuda.device_count()
    return {**os.environ, **({"CUDA_VISIBLE_DEVICES": str(index % gpus)} if gpus > 1 else {})}


def command_leaderboard(args: argparse.Namespace, argv: list[str]) -> int:
    from bench.leaderboards import write_leaderboards

    paths = [Path(p) for p in args.results]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such results folder or record: {', '.join(missing)}")
    if not 0 < args.margin < 100:
        raise UsageError(f"--margin is in percentage points of accuracy, between 0 and 100; got {args.margin:g}")
    for path in write_leaderboards(paths, Path(args.out), args.format, shlex.join(["bench", *argv]), args.margin / 100):
        print(path)
    return 0


def command_speed(args: argparse.Namespace, argv: list[str]) -> int:
    from bench.speed import measure_speed

    check_model(args.model), get_loss(args.loss), get_dataset(args.dataset)
    config = RunConfig(
        model=args.model, loss=args.loss, dataset=args.dataset, data_root=args.data_root,
        batch_size=args.batch_size, image_size=args.image_size, limit_train=args.limit_train,
        device=args.device, precision=args.precision, compile=args.compile,
    )
    if args.steps < 1 or args.warmup < 0:
        raise UsageError(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}")
    result = measure_speed(config, args.steps, args.warmup)
    if args.json:
        print(json.dumps(result))
        return 0
    table = Table(title=f"{args.model} on {args.dataset}, batch {args.batch_size}, {result['precision']}, "
                        f"{result['device_name']}")
    for col in ("train img/s", "eval img/s", "compute-only img/s", "train / compute", "train GFLOP/s",
                "of matmul peak", "peak memory"):
        table.add_column(col, justify="right")
    table.add_row(f"{result['train_images_per_sec']:.0f}", f"{result['eval_images_per_sec']:.0f}",
                  f"{result['compute_only_images_per_sec']:.0f}", f"{result['pipeline_efficiency']:.2f}",
                  f"{result['train_flops_per_sec'] / 1e9:.1f}",
                  f"{result['fraction_of_peak']:.0%} of {result['peak_flops_per_sec'] / 1e9:.0f}",
                  f"{result['peak_memory_bytes'] / 2**20:.0f} MiB ({result['peak_memory_kind']})")
    Console().print(table)
    print(f"precision {result['precision']}: {result['precision_reason']}")
    if result["host_syncs_per_step"] is not None:
        sites = ", ".join(f"{site} ({n})" for site, n in result["host_sync_sites"].items()) or "none"
        print(f"host syncs per training step (epoch start excluded): {result['host_syncs_per_step']:.2f}; at {sites}")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="bench", description="Cross image-classification models with loss functions.")
    parser.add_argument("--version", action="version", version=f"bench {bench_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run_parser = sub.add_parser("run", help="train and test one model x loss x dataset")
    add_run_arguments(run_parser)
    run_parser.add_argument("--params", help="a best-parameters file written by 'bench tune'")
    run_parser.set_defaults(func=command_run)
    tune_parser = sub.add_parser("tune", help="Optuna search over lr and the loss's hyperparameters (on val)")
    add_run_arguments(tune_parser)
    tune_parser.add_argument("--trials", type=int, default=20, help="trials to add to the study")
    tune_parser.add_argument("--storage", help="Optuna storage URL (default: sqlite file in --out); journal:PATH too")
    tune_parser.add_argument("--study-name", help="default: DATASET-MODEL-LOSS")
    tune_parser.add_argument("--objective", default="val_acc", choices=("val_acc", "val_nll"))
    tune_parser.add_argument("--pruner", default="hyperband", choices=("hyperband", "median"))
    tune_parser.add_argument("--tune-weight-decay", action="store_true")
    tune_parser.set_defaults(func=command_tune)
    from bench import experiment as experiment_module

    grid = sub.add_parser("grid", help="run every model x loss x seed of an experiment file (resumable)",
                          epilog="experiment file: " + experiment_module.__doc__)
    grid.add_argument("experiment", nargs="?", help="experiment file (TOML), its keys below")
    grid.add_argument("--models", help="without a file: comma-separated models")
    grid.add_argument("--losses", help="without a file: comma-separated losses (default hyperparameters)")
    grid.add_argument("--seeds", default="0,1,2,3,4", help="without a file: comma-separated seeds (default 0..4)")
    grid.add_argument("--dataset", help="without a file: the dataset")
    grid.add_argument("--data-root")
    grid.add_argument("--epochs", type=int, default=RUN_DEFAULTS["epochs"])
    grid.add_argument("--limit-train", type=int)
    grid.add_argument("--limit-test", type=int)
    grid.add_argument("--storage", help="share the grid through an Optuna storage URL (sqlite:///F, postgresql://...)")
    grid.add_argument("--workers", type=int, default=1, help="worker processes on this machine (share --storage)")
    grid.add_argument("--out", help="results folder (default: runs/ beside the experiment file, else runs/)")
    grid.add_argument("--quiet", action="store_true")
    grid.add_argument("--estimate", action="store_true",
                      help="time a few steps of each model and print what the grid would cost here; run nothing")
    grid.set_defaults(func=command_grid)
    speed = sub.add_parser("speed", help="training, evaluation and compute-only images/s of one model")
    speed.add_argument("--model", required=True)
    speed.add_argument("--dataset", required=True)
    speed.add_argument("--data-root")
    speed.add_argument("--loss", default="ce")
    speed.add_argument("--batch-size", type=int, default=RUN_DEFAULTS["batch_size"])
    speed.add_argument("--image-size", type=int)
    speed.add_argument("--limit-train", type=int, help="load only this many training images")
    speed.add_argument("--device", default=RUN_DEFAULTS["device"], choices=DEVICES)
    speed.add_argument("--precision", default=RUN_DEFAULTS["precision"], choices=PRECISIONS)
    speed.add_argument("--compile", action="store_true")
    speed.add_argument("--steps", type=int, default=30, help="timed steps (after the warm-up)")
    speed.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    speed.add_argument("--json", action="store_true", help="print one JSON object")
    speed.set_defaults(func=command_speed)
    board = sub.add_parser("leaderboard", help="tables, intervals, paired tests and plots from run records")
    board.add_argument("results", nargs="*", default=["runs"], help="folders (searched recursively) or record files")
    board.add_argument("--out", default="leaderboards", help="where to write (default: leaderboards/)")
    board.add_argument("--margin", type=float, default=0.5,
                       help="practical margin in accuracy points: a loss within ±margin of ce, shown by an "
                            "equivalence test, is 'equivalent' (default: 0.5)")
    board.add_argument("--format", default="markdown", choices=("markdown", "csv", "json"))
    board.set_defaults(func=command_leaderboard)
    for name, func in (("models", command_models), ("losses", command_losses), ("datasets", command_datasets)):
        p = sub.add_parser(name, help=f"list the registered {name}")
        p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'cnn*'")
        p.set_defaults(func=func)
        if name == "models":
            p.add_argument("--timm", metavar="PATTERN", help="list timm models matching PATTERN instead")
    return parser


def bench_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bench")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Progress of long phases (decoding, resuming, tuning trials, a grid's pace) goes to stderr;
    # --quiet keeps only warnings.
    progress, handler = logging.getLogger("bench"), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress.addHandler(handler)
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        command = commands.get(argv[0]) if argv else None  # a misspelt flag is matched against its command's flags
        Parser.command_prog = command.prog if command else None
        Parser.command_flags = tuple(f for a in (command or parser)._actions for f in a.option_strings)
        args = parser.parse_args(argv)
        progress.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
        return args.func(args, argv)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"bench: stopped by {exc} after checkpointing; rerun with --resume to continue", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench models --timm '*' | head`
        sys.stderr.close()
        return 0
    finally:
        progress.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
