"""What a person sees: progress while training (rich on a terminal, plain lines otherwise, or
nothing with --quiet) and the end-of-run summary."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


def duration(seconds: float) -> str:
    """42 s, 13.2 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def format_epoch(entry: dict, epochs: int) -> str:
    return (
        f"epoch {entry['epoch']}/{epochs}  train loss {entry['train_loss']:.4f} acc "
        f"{entry['train_acc']:.2%}  val loss {entry['val_loss']:.4f} acc {entry['val_acc']:.2%}  lr "
        f"{entry['lr']:.3g}  {entry['seconds']:.1f}s"
    )


class QuietReporter:
    def start(self, title: str, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = epochs

    def step(self) -> None:
        pass

    def epoch(self, entry: dict) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter(QuietReporter):
    """One line per epoch on stderr, for logs and pipes."""

    def start(self, title: str, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        print(f"{title}: {epochs} epochs x {steps_per_epoch} steps", file=sys.stderr, flush=True)

    def epoch(self, entry: dict) -> None:
        print(format_epoch(entry, self.epochs), file=sys.stderr, flush=True)


class RichReporter(QuietReporter):
    """A live progress bar over all steps, with a line per finished epoch."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
            console=console, transient=True,
        )

    def start(self, title: str, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        self.progress.start()
        self.task = self.progress.add_task(title, total=epochs * steps_per_epoch, status="")

    def step(self) -> None:
        self.progress.advance(self.task)

    def epoch(self, entry: dict) -> None:
        self.progress.console.print(format_epoch(entry, self.epochs))
        self.progress.update(self.task, status=f"val acc {entry['val_acc']:.2%}")

    def close(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool) -> QuietReporter:
    if quiet:
        return QuietReporter()
    console = Console(stderr=True)
    return RichReporter(console) if console.is_terminal else PlainReporter()


def print_summary(record: dict, path: str, console: Console | None = None) -> None:
    """Headline test metrics and the per-class table of a finished run."""
    console = console or Console()
    cfg, test = record["config"], record["metrics"].get("test")
    for warning in record.get("warnings", []):
        console.print(f"warning: {warning}", style="yellow", highlight=False)
    title = f"{cfg['model']} x {cfg['loss']} on {record['dataset']['name']} (seed {cfg['seed']})"
    if test is None:
        console.print(f"[bold]{title}[/]: run {record['status']} - {record.get('reason', '')}")
        # a path a script can copy: never wrapped
        console.print(f"record: {path}", soft_wrap=True, highlight=False)
        return
    head = Table(title=title, show_header=True)
    for col in ("status", "test acc", "macro-F1", "NLL", "ECE", "train s", "img/s"):
        head.add_column(col, justify="right")
    head.add_row(
        record["status"], f"{test['accuracy']:.2%}", f"{test['macro_f1']:.4f}", f"{test['nll']:.4f}",
        f"{test['ece']:.4f}", f"{record['timing']['train_seconds']:.1f}",
        f"{record['timing']['train_images_per_sec']:.0f}",
    )
    console.print(head)
    per_class = Table(title="per-class test metrics")
    for col in ("class", "accuracy", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, m in test["per_class"].items():
        per_class.add_row(
            name, f"{m['accuracy']:.2%}", f"{m['precision']:.3f}", f"{m['recall']:.3f}",
            f"{m['f1']:.3f}", str(m["support"]),
        )
    console.print(per_class)
    console.print(f"record: {path}", soft_wrap=True, highlight=False)
