"""Command line: `bench run | tune | grid | speed | leaderboard | models | losses | datasets`.

A thin face on bench.api: parse the flags, call the API, print, and map the outcome to an exit
code (`ExitCode`: 0 success; 2 bad usage or bad input, one line on stderr; 1 a run that failed;
130 interrupted). Run flags, their defaults and help come from RunConfig's fields (`add_settings`),
loss flags from the loss registry's hyperparameters.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from bench import api
from bench.checkpoint import Interrupted
from bench.config import SETTINGS
from bench.datasets import DATASETS
from bench.errors import ExitCode, UsageError
from bench.losses import LOSSES, all_hparams
from bench.models import MODELS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default in --help (where it has one); descriptions and epilogs (the
    experiment-file schema) as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if (action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or "")
                or isinstance(action, argparse._StoreFalseAction)):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2, without the usage block, and
    suggests the flag a misspelt one was probably meant to be."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        """A flag without its own help still shows its default; a flag given on the command line
        is noted in the namespace's `given` (what the user set, as against a default)."""
        if not kwargs.get("help") and kwargs.get("default") not in (None, False, [], argparse.SUPPRESS):
            kwargs["help"] = "(default: %(default)s)"
        action = self._registry_get("action", kwargs.get("action"), kwargs.get("action"))
        if isinstance(action, type) and args and args[0].startswith("-"):
            kwargs["action"] = noting_given(action)
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog
        if message.startswith("unrecognized arguments:"):
            prog = self.command_prog or prog
            message += did_you_mean(message.split(":", 1)[1].split(), self.command_flags)
        raise UsageError(f"{message} (see '{prog} --help')")

    command_prog: str | None = None  # set by main: the sub-command's name and flags, for suggestions
    command_flags: tuple[str, ...] = ()


def noting_given(action: type) -> type:
    """The argparse action, also adding its dest to `namespace.given` when the flag is used."""

    class Given(action):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            namespace.given = getattr(namespace, "given", set()) | {self.dest}

    return Given


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


def add_settings(p: argparse.ArgumentParser, names=tuple(SETTINGS)) -> None:
    """The flags of these run settings, each from its RunConfig field: name, default, type, help."""
    for name in names:
        f, meta = SETTINGS[name], SETTINGS[name].metadata
        flag = meta.get("flag", "--" + name.replace("_", "-"))
        kwargs = {"dest": name, "help": meta.get("help") or None, "default": f.default}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs["type"] = meta.get("type", type(f.default))
            kwargs |= {k: meta[k] for k in ("choices", "metavar") if k in meta}
            if kwargs["default"] == ():
                kwargs["default"] = None
        p.add_argument(flag, **kwargs)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help=f"one of: {', '.join(MODELS)}, timm:<name>, or your own FILE.py:NAME / "
                        "package.module:NAME")
    p.add_argument("--loss", required=True,
                   help=f"one of: {', '.join(LOSSES)}, or your own FILE.py:NAME / package.module:NAME")
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}, or folder:PATH")
    add_settings(p)
    p.add_argument("--out", default="runs", help="results folder (default: runs/)")
    p.add_argument("--quiet", action="store_true", help="no progress output; print only the record's path")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run of this configuration in --out from its checkpoint")
    group = p.add_argument_group(
        "loss hyperparameters (see 'bench losses'; each applies to the losses named)"
    )
    for name in all_hparams():
        group.add_argument(
            "--" + name.replace("_", "-"), dest=f"hp_{name}", metavar=name.upper(), type=parse_hparam,
            help=hparam_help(name), default=None,
        )
    group.add_argument(
        "--loss-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any loss hyperparameter by name, repeatable; a plug-in loss gets it as a keyword",
    )


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
    params = {key[3:]: value for key,
              value in vars(args).items() if key.startswith("hp_") and value is not None}
    for item in args.loss_arg:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier() or not value:
            raise UsageError(f"--loss-arg takes KEY=VALUE (for example --loss-arg margin=0.5), got {item!r}")
        if key in params:
            raise UsageError(f"loss hyperparameter {key} is given twice; give it once")
        params[key] = parse_hparam(value.strip())
    return params


def given_settings(args: argparse.Namespace) -> dict:
    """The run settings the command line set; the rest keep RunConfig's defaults."""
    return {name: getattr(args, name) for name in SETTINGS if name in getattr(args, "given", ())}


def command_run(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    from bench.report import print_summary

    record = api.run(args.model, args.loss, args.dataset, out=args.out, quiet=args.quiet, resume=args.resume,
                     loss_params=loss_params_of(args), params=args.params,
                     command=shlex.join(["bench", *argv]), **given_settings(args))
    path = api.record_path(record, args.out)
    if args.quiet:
        print(path)  # the one thing a script needs
    else:
        print_summary(record, str(path))
    return ExitCode.OK if record["status"] == "completed" else ExitCode.FAILED


def command_tune(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    best = api.tune(args.model, args.loss, args.dataset, args.trials, out=args.out, storage=args.storage,
                    objective=args.objective, pruner=args.pruner, loss_params=loss_params_of(args),
                    study_name=args.study_name, tune_weight_decay=args.tune_weight_decay, quiet=False,
                    **given_settings(args))
    trials = api.trials(best["study"], best["storage"])
    finished = trials[trials["value"].notna()].sort_values("value", ascending=args.objective == "val_nll")
    keys = [c for c in trials.columns if c.startswith("params_")]
    table = Table(title=f"study {best['study']}: {len(trials)} trials "
                        f"({int((trials['state'] == 'PRUNED').sum())} pruned)")
    table.add_column("trial", justify="right")
    table.add_column(args.objective, justify="right")
    for key in keys:
        table.add_column(key[len("params_"):], justify="right")
    for _, t in finished.head(5).iterrows():
        table.add_row(str(t["number"]), f"{t['value']:.4f}", *[f"{t[k]:.4g}" for k in keys])
    Console().print(table)
    best_path = Path(args.out) / f"{best['study']}.best.json"
    print(f"best parameters: {best_path} (reproduce with: bench run ... --params {best_path})")
    return ExitCode.OK


def command_models(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    if args.timm is not None:
        from bench.models.timm_adapter import timm_names

        names = timm_names(args.timm)
        print("\n".join(f"timm:{n}" for n in names) if names else f"no timm model matches {args.timm!r}")
        return ExitCode.OK
    if not MODELS.names(args.pattern):
        raise UsageError(f"no bench model matches {args.pattern!r}; 'bench models' lists them all (timm's: "
                         "bench models --timm PATTERN)")
    table = Table("model", "description")
    for name in MODELS.names(args.pattern):
        table.add_row(name, MODELS.get(name).summary)
    Console().print(table)
    print("and any timm model as timm:<name> (list them with: bench models --timm 'resnet*')")
    return ExitCode.OK


def command_losses(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    console = Console()
    wide = console.width >= 150  # narrower: descriptions go below the table instead of being squeezed
    table = Table("loss", "hyperparameter", "default", "valid", "tuning range",
                  *(["description"] if wide else []),
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
            table.add_row(name if i == 0 else "", flag, *cells,
                          *([spec.summary if i == 0 else ""] if wide else []))
    console.print(table)
    if not wide:
        for name in names:
            console.print(f"[bold]{name}[/bold]: {LOSSES.get(name).summary}", highlight=False)
    return ExitCode.OK


def command_datasets(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    if not DATASETS.names(args.pattern):
        raise UsageError(f"no dataset matches {args.pattern!r}; 'bench datasets' lists them all")
    table = Table("dataset", "image size", "description", "--data-root accepts")
    for name in DATASETS.names(args.pattern):
        spec = DATASETS.get(name)
        table.add_row(name, f"{spec.image_size} px", spec.description, spec.data_root)
    Console().print(table)
    print("and folder:PATH for any image tree (train/ + test/ class folders, a .tar.gz of that, or one "
          "root of class folders, split 4:1 by --split-seed)")
    return ExitCode.OK



GRID_SETTINGS = tuple(k for k in SETTINGS if k != "seed")  # the file's `seeds`, or --seeds
GRID_FLAGS = ("models", "losses", "dataset", "seeds", *GRID_SETTINGS)


def grid_flags(args: argparse.Namespace) -> dict:
    """The flags form of `bench grid` (no experiment file), as the API's keywords."""
    if args.experiment:
        return {}
    if not all(s.strip().lstrip("-").isdigit() for s in args.seeds.split(",")):
        raise UsageError(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    flags = {k: getattr(args, k) for k in GRID_FLAGS if k in getattr(args, "given", ()) or k == "seeds"}
    return flags | {"seeds": tuple(int(s) for s in args.seeds.split(","))}


def command_grid(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    if args.estimate:
        return print_estimate(args.experiment, grid_flags(args))
    # a line per run, --quiet too: scripts read them
    tally = api.grid(args.experiment, out=args.out, storage=args.storage, quiet=args.quiet,
                     workers=args.workers, log=print, **grid_flags(args))
    if args.tally_file:  # a local worker of `--workers N`: its share, for the process that started it
        Path(args.tally_file).write_text(json.dumps(tally))
    done = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
    workers = (
        f" ({args.workers} workers exited with {list(tally.worker_codes)})" if tally.worker_codes else ""
    )
    print(f"grid of {tally.runs} runs in {tally.out}{workers}: "
          f"{done or 'nothing left to run here (every point completed, or taken by another worker)'}")
    if any(tally.worker_codes):  # a worker stopped by a signal keeps its code (128 + N)
        return max(tally.worker_codes)
    return ExitCode.OK if tally.ok else ExitCode.FAILED


def print_estimate(experiment: str | None, flags: dict) -> ExitCode:
    from bench.record import device_name
    from bench.report import duration
    from bench.train import resolve_device

    loaded = api.experiment_of(experiment, **flags)
    first = loaded.cells[0].config
    device = resolve_device(first.device)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if device.type == "cpu" and load > 0.5 * cores:
        print(f"warning: the machine is busy (load {load:.1f} on {cores} cores): these timings will be too "
              "slow",
              file=sys.stderr)
    rows = api.estimate(loaded)  # the experiment loaded above, not read again
    name = experiment or "the grid"
    table = Table(title=f"estimate for {name} on {device_name(device)} ({device.type}), from 10 timed steps "
                        "per model")
    for col in ("model", "loss", "precision", "train img/s", "eval runs", "each", "tuning trials",
                "all trials (at most)"):
        table.add_column(col, justify="left" if col in ("model", "loss") else "right",
                         no_wrap=col in ("model", "loss"))
    for r in rows:
        table.add_row(r["model"], r["loss"], r["precision"], f"{r['train_images_per_sec']:,.0f}",
                      str(r["eval_runs"]), duration(r["eval_run_seconds"]), str(r["tuning_trials"]),
                      duration(r["tuning_seconds_at_most"]))
    # piped into a log, rich would squeeze the table into 80 columns and wrap every cell
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    evals = sum(r["eval_runs"] * r["eval_run_seconds"] for r in rows)
    tuning = sum(r["tuning_seconds_at_most"] for r in rows)
    print(f"eval {duration(evals)} + tuning at most {duration(tuning)} = at most {duration(evals + tuning)} "
          "on this machine, start-up and other jobs not counted; Hyperband stops many trials early (the "
          "published boards' tuning ran 49-65% of the "
          "most)" if tuning else f"eval {duration(evals)} on this machine, "
                                                          "start-up and "
          "other jobs not counted")
    return ExitCode.OK


def command_leaderboard(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    for path in api.leaderboard(args.results, out=args.out, format=args.format, margin=args.margin,
                                command=shlex.join(["bench", *argv])):
        print(path)
    return ExitCode.OK


def command_speed(args: argparse.Namespace, argv: list[str]) -> ExitCode:
    result = api.speed(args.model, args.dataset, args.loss, args.steps, args.warmup, **given_settings(args))
    if args.json:
        print(json.dumps(result))
        return ExitCode.OK
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
        print(f"host syncs per training step (epoch start excluded): {result['host_syncs_per_step']:.2f}; "
              f"at {sites}")
    return ExitCode.OK


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
    tune_parser.add_argument("--storage",
                             help="Optuna storage URL (default: sqlite file in --out); journal:PATH too")
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
    grid.add_argument("--seeds", default="0,1,2,3,4",
                      help="without a file: comma-separated seeds (default 0..4)")
    grid.add_argument("--dataset", help="without a file: the dataset")
    add_settings(grid, GRID_SETTINGS)  # without a file: the runs' settings, as bench run takes them
    grid.add_argument("--storage",
                      help="share the grid through an Optuna storage URL (sqlite:///F, postgresql://...)")
    grid.add_argument("--workers", type=int, default=1,
                      help="worker processes on this machine (share --storage)")
    grid.add_argument("--out", help="results folder (default: runs/ beside the experiment file, else runs/)")
    grid.add_argument("--quiet", action="store_true")
    grid.add_argument("--tally-file", help=argparse.SUPPRESS)  # a local worker's tally, for its parent
    grid.add_argument("--estimate", action="store_true",
                      help="time a few steps of each model and print what the grid would cost here; run "
                           "nothing")
    grid.set_defaults(func=command_grid)
    speed = sub.add_parser("speed", help="training, evaluation and compute-only images/s of one model")
    speed.add_argument("--model", required=True)
    speed.add_argument("--dataset", required=True)
    speed.add_argument("--loss", default="ce")
    add_settings(speed,
                 ("data_root", "batch_size", "image_size", "limit_train", "device", "precision", "compile"))
    speed.add_argument("--steps", type=int, default=30, help="timed steps (after the warm-up)")
    speed.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    speed.add_argument("--json", action="store_true", help="print one JSON object")
    speed.set_defaults(func=command_speed)
    board = sub.add_parser("leaderboard", help="tables, intervals, paired tests and plots from run records")
    board.add_argument("results", nargs="*", default=["runs"],
                       help="folders (searched recursively) or record files")
    board.add_argument("--out", default="leaderboards", help="where to write (default: leaderboards/)")
    board.add_argument("--margin", type=float, default=0.5,
                       help="practical margin in accuracy points: a loss within ±margin of ce, shown by an "
                            "equivalence test, is 'equivalent' (default: 0.5)")
    board.add_argument("--format", default="markdown", choices=("markdown", "csv", "json"))
    board.set_defaults(func=command_leaderboard)
    for name, func in (
        ("models", command_models),
        ("losses", command_losses),
        ("datasets", command_datasets),
    ):
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
        # a misspelt flag is matched against its command's flags
        command = commands.get(argv[0]) if argv else None
        Parser.command_prog = command.prog if command else None
        Parser.command_flags = tuple(f for a in (command or parser)._actions for f in a.option_strings)
        args = parser.parse_args(argv)
        progress.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
        return args.func(args, argv)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except Interrupted as exc:
        done = "after its run completed (record written)" if exc.completed else "after checkpointing"
        print(f"bench: stopped by {exc} {done}; rerun with --resume to continue", file=sys.stderr)
        return ExitCode.signal(exc.signum)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `bench models --timm '*' | head`
        sys.stderr.close()
        return ExitCode.OK
    finally:
        progress.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
