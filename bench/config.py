"""The frozen description of one run. Everything downstream reads from it, nothing writes to it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UsageError

OPTIMIZERS = {"sgd": 0.05, "adamw": 1e-3}  # name -> default learning rate
LR_RANGES = {"sgd": (1e-3, 0.5), "adamw": (1e-5, 1e-2)}  # name -> the tuner's default lr search range
TUNE_OBJECTIVES = ("val_acc", "val_nll")
PRUNERS = ("hyperband", "median")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NOISE_TYPES = ("symmetric", "asymmetric")
STEMS = ("auto", "cifar", "imagenet")  # cifar: 3x3 stride-1 stem for small inputs (timm models)
EDGE_SHARE = 0.1  # a tuned lr in the outer tenth (log scale) of its search range sits at its edge


def lr_edge_note(lr: float, lr_range) -> str:
    """'' unless a tuned lr lies at the edge of the range searched, where a better one may lie beyond."""
    if not lr_range:
        return ""
    low, high = lr_range
    position = (math.log(lr) - math.log(low)) / (math.log(high) - math.log(low))
    if EDGE_SHARE <= position <= 1 - EDGE_SHARE:
        return ""
    side = "top" if position > 0.5 else "bottom"
    return f"lr {lr:.3g} is at the {side} of its tuning range {low:g}–{high:g}: a better lr may lie beyond it"


def tuned_lr_note(tuning: dict | None) -> str:
    """lr_edge_note for an eval record's `tuning` entry ('' where lr was not tuned)."""
    if not tuning or "lr" not in tuning.get("params", {}):
        return ""
    return lr_edge_note(tuning["params"]["lr"], tuning.get("lr_range"))


@dataclass(frozen=True)
class RunConfig:
    model: str
    loss: str
    dataset: str
    loss_params: dict = field(default_factory=dict)
    data_root: str | None = None
    base_dir: str | None = None  # folder relative paths (data_root, FILE.py plug-ins) resolve against: an experiment file's
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None  # None: the optimizer's default (OPTIMIZERS)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # linear lr warm-up over this many epochs (of steps), then the schedule
    val_fraction: float = 0.1
    limit_train: int | None = None
    limit_test: int | None = None
    image_size: int | None = None
    split_seed: int = 0
    classes: tuple[str, ...] = ()
    imbalance: float | None = None
    label_noise: float = 0.0
    noise_type: str = "symmetric"
    clean_val: bool = False  # under label noise, keep validation labels clean (default: as noisy as train)
    skip_bad_images: bool = False
    augment: bool = True
    stem: str = "auto"
    pretrained: bool = False
    weights: str | None = None
    allow_prob_outputs: bool = False
    auto_batch: bool = False
    compile: bool = False
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be greater than 0, got {self.lr}"),
            (0 < self.val_fraction < 1, f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (0 <= self.warmup_epochs < self.epochs,
             f"--warmup-epochs must lie in [0, --epochs), got {self.warmup_epochs} for {self.epochs} epochs"),
            (0 <= self.momentum < 1, f"--momentum must lie in [0, 1), got {self.momentum}"),
            (self.limit_train is None or self.limit_train >= 2, f"--limit-train must be at least 2, got {self.limit_train}"),
            (self.limit_test is None or self.limit_test >= 1, f"--limit-test must be at least 1, got {self.limit_test}"),
            (self.image_size is None or self.image_size >= 8, f"--image-size must be at least 8, got {self.image_size}"),
            (self.imbalance is None or self.imbalance >= 1, f"--imbalance must be at least 1, got {self.imbalance}"),
            (0 <= self.label_noise < 1, f"--label-noise must lie in [0, 1), got {self.label_noise}"),
            (self.noise_type in NOISE_TYPES, f"--noise-type must be one of {', '.join(NOISE_TYPES)}, got {self.noise_type!r}"),
            (self.stem in STEMS, f"--stem must be one of {', '.join(STEMS)}, got {self.stem!r}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.lr is None:
            object.__setattr__(self, "lr", OPTIMIZERS[self.optimizer])

    def to_dict(self) -> dict:
        """The configuration as a record states it: `data_root` as given (relative to the
        experiment file for grids), never the machine's folder it was resolved against."""
        fields = dataclasses.asdict(self)
        del fields["base_dir"]
        return fields

    def config_hash(self) -> str:
        """Identity of the experiment: equal for runs that should give the same result.

        `data_root` says where the data lies, not what it is, so it is left out: a grid moved to
        another machine still recognises its finished runs. So is a field that cannot change the result.
        """
        identity = {k: v for k, v in self.to_dict().items() if k != "data_root"}
        if not self.label_noise:  # clean_val changes nothing without noise: runs from before it keep their hash
            del identity["clean_val"]
        if not self.warmup_epochs:  # no warm-up: runs from before the field keep their hash
            del identity["warmup_epochs"]
        return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def data_path(self) -> Path | None:
        if self.data_root is None:
            return None
        path = Path(self.data_root).expanduser()
        return path if path.is_absolute() or self.base_dir is None else Path(self.base_dir) / path


# The run settings a user sets by name (flags, API keywords, experiment-file keys): every field
# but what a run is of (model, loss, dataset, its loss's hyperparameters) and where paths resolve.
SETTINGS = {f.name: f for f in dataclasses.fields(RunConfig)
            if f.name not in ("model", "loss", "dataset", "loss_params", "base_dir")}
