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
SCHEDULES = ("cosine", "step", "constant", "linear")
TTA_LEVELS = (0, 1, 2)
FLIPS = ("random", "alternate")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
CROP_FILLS = ("zeros", "reflect")
# Fields added after records were published: at these defaults they stay out of a run's identity,
# so runs from before them keep their hash (and grids still find them).
LATER_DEFAULTS = {"warmup_epochs": 0.0, "translate": 4, "flip": "random", "tta": 0, "lookahead": False,
                  "crop_fill": "zeros", "warmup_from": 0.0, "decay_to": 0.0,
                  "compile_mode": "default"}
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NOISE_TYPES = ("symmetric", "asymmetric")
STEMS = ("auto", "cifar", "imagenet")  # cifar: 3x3 stride-1 stem for small inputs (timm models)
EDGE_SHARE = 0.1  # a tuned lr in the outer tenth (log scale) of its search range sits at its edge


def lr_edge(lr: float, lr_range) -> str | None:
    """'top' or 'bottom' where a tuned lr lies at that edge of the range searched, else None."""
    if not lr_range:
        return None
    low, high = lr_range
    position = (math.log(lr) - math.log(low)) / (math.log(high) - math.log(low))
    if EDGE_SHARE <= position <= 1 - EDGE_SHARE:
        return None
    return "top" if position > 0.5 else "bottom"


def lr_edge_note(lr: float, lr_range) -> str:
    """'' unless a tuned lr lies at the edge of the range searched, where a better one may lie beyond."""
    if not (side := lr_edge(lr, lr_range)):
        return ""
    low, high = lr_range
    return (f"lr {lr:.3g} is at the {side} of its tuning range {low:g}–{high:g}: a better lr may lie beyond "
            "it")


def tuned_lr_note(tuning: dict | None) -> str:
    """lr_edge_note for an eval record's `tuning` entry ('' where lr was not tuned)."""
    if not tuning or "lr" not in tuning.get("params", {}):
        return ""
    return lr_edge_note(tuning["params"]["lr"], tuning.get("lr_range"))


def setting(default, help: str = "", **flag):
    """A RunConfig field that is also a command-line flag: its help, and how it is read
    (`type` where the default is None, `choices`, `action`, `flag` for another name, `dest`)."""
    return field(default=default, metadata={"help": help, **flag})


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


@dataclass(frozen=True)
class RunConfig:
    """One run, whole. Its settings' flags, defaults and --help come from here (`setting`)."""

    model: str
    loss: str
    dataset: str
    loss_params: dict = field(default_factory=dict)
    data_root: str | None = setting(None, "where the dataset lies (folder or .tar.gz); see 'bench datasets'",
                                    type=str)
    # folder relative paths (data_root, FILE.py plug-ins) resolve against: an experiment file's
    base_dir: str | None = None
    seed: int = setting(0, "fixes initial weights, val split and batch order")
    epochs: int = setting(10)
    batch_size: int = setting(128)
    lr: float | None = setting(None, "learning rate (default: " + ", ".join(
        f"{k} {v:g}" for k, v in OPTIMIZERS.items()) + ")", type=float)  # None: the optimizer's default
    optimizer: str = setting("sgd", choices=tuple(OPTIMIZERS))
    momentum: float = setting(0.9, "SGD momentum (Nesterov)")
    weight_decay: float = setting(5e-4)
    schedule: str = setting("cosine", "lr after any warm-up: cosine to zero, x0.1 at half and three quarters "
                                      "of training, constant, or linear to zero", choices=SCHEDULES)
    lookahead: bool = setting(False, "airbench's lookahead: after the first 3 tenths of the epochs, every 5 "
                                     "steps pull the weights to their running average (bench/lookahead.py)")
    warmup_epochs: float = setting(0.0, "linear lr warm-up over this many epochs, then the schedule (AdamW "
                                        "on ConvNeXt/ViT wants 1-5)")
    warmup_from: float = setting(0.0, "the warm-up starts at this fraction of the lr (airbench's: 0.2)")
    decay_to: float = setting(0.0, "--schedule linear ends at this fraction of the lr (airbench's: 0.07)")
    val_fraction: float = setting(0.1, "share of train held out for validation")
    limit_train: int | None = setting(None, "use this many training images (val is carved from them)",
                                      type=int)
    limit_test: int | None = setting(None, "report on this many test images (stratified)", type=int)
    image_size: int | None = setting(None, "resize images to this many pixels square", type=int)
    split_seed: int = setting(0, "fixes protocol splits (imagenet10 3:1:1, folder 4:1)")
    classes: tuple[str, ...] = setting((), "comma-separated class folders (wnids) to use, for imagenet10",
                                       type=_words, metavar="CLASSES")
    imbalance: float | None = setting(None, "long-tailed train split: largest / smallest class = R",
                                      type=float)
    label_noise: float = setting(0.0, "fraction of training labels flipped")
    noise_type: str = setting("symmetric", choices=NOISE_TYPES)
    clean_val: bool = setting(False,
                              "under --label-noise, keep validation labels clean (default: val as noisy "
                                     "as train)")
    skip_bad_images: bool = setting(False, "leave unreadable images out (counted)")
    augment: bool = setting(True, "no random crop / flip", flag="--no-augment")
    translate: int = setting(4, "random crop: pad by this many pixels, crop back (a random translation)")
    crop_fill: str = setting("zeros", "what the random crop's padding holds: zeros (torchvision's "
                                      "RandomCrop) or reflect (the image mirrored at its edge, airbench's)",
                             choices=CROP_FILLS)
    flip: str = setting("random", "horizontal flips: random each epoch, or alternate: random in the first "
                                  "epoch, then each image flipped every other epoch (airbench's)",
                        choices=FLIPS)
    tta: int = setting(0, "test-time augmentation, reported beside the plain test metrics "
                          "(metrics.test_tta): 1 = mirror, 2 = mirror and 1-pixel translations (airbench's)",
                       choices=TTA_LEVELS)
    stem: str = setting("auto",
                        "timm models: cifar = small-image stem (stride-1 3x3 conv; ConvNeXt too; ViT: "
                                "size/8 patches); auto = ResNet/EfficientNet-style stems only, at 32 px or "
                                "less",
                        choices=STEMS)
    pretrained: bool = setting(False, "timm models: start from timm's pretrained weights")
    weights: str | None = setting(None, "timm models: a local state dict (loaded with weights_only=True)",
                                  type=str)
    allow_prob_outputs: bool = setting(False, "train a model whose outputs look like probabilities "
                                              "(normally refused)")
    auto_batch: bool = setting(False, "on out-of-memory, halve the batch size and retry")
    compile: bool = setting(False, "torch.compile the model (compile time reported apart)")
    compile_mode: str = setting("default", "torch.compile's mode under --compile: reduce-overhead records "
                                           "CUDA graphs (fewer launches for small models on a GPU)",
                                choices=COMPILE_MODES)
    device: str = setting("auto", choices=DEVICES)
    precision: str = setting("auto", choices=PRECISIONS)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be greater than 0, got {self.lr}"),
            (0 < self.val_fraction < 1,
             f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (0 <= self.warmup_epochs < self.epochs,
             f"--warmup-epochs must lie in [0, --epochs), got {self.warmup_epochs} for {self.epochs} epochs"),
            (0 <= self.warmup_from < 1, f"--warmup-from must lie in [0, 1), got {self.warmup_from}"),
            (self.warmup_from == 0 or self.warmup_epochs > 0,
             f"--warmup-from {self.warmup_from} needs a warm-up (--warmup-epochs)"),
            (0 <= self.decay_to < 1, f"--decay-to must lie in [0, 1), got {self.decay_to}"),
            (self.decay_to == 0 or self.schedule == "linear",
             f"--decay-to is for --schedule linear, got --schedule {self.schedule}"),
            (self.compile_mode in COMPILE_MODES,
             f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}"),
            (self.compile or self.compile_mode == "default",
             f"--compile-mode {self.compile_mode} needs --compile"),
            (0 <= self.momentum < 1, f"--momentum must lie in [0, 1), got {self.momentum}"),
            (self.translate >= 1, f"--translate must be at least 1 pixel (--no-augment turns it off), got "
                                  f"{self.translate}"),
            (self.tta in TTA_LEVELS, f"--tta must be one of 0, 1, 2, got {self.tta!r}"),
            (self.flip in FLIPS, f"--flip must be one of {', '.join(FLIPS)}, got {self.flip!r}"),
            (self.crop_fill in CROP_FILLS,
             f"--crop-fill must be one of {', '.join(CROP_FILLS)}, got {self.crop_fill!r}"),
            (self.limit_train is None or self.limit_train >= 2,
             f"--limit-train must be at least 2, got {self.limit_train}"),
            (self.limit_test is None or self.limit_test >= 1,
             f"--limit-test must be at least 1, got {self.limit_test}"),
            (self.image_size is None or self.image_size >= 8,
             f"--image-size must be at least 8, got {self.image_size}"),
            (self.imbalance is None or self.imbalance >= 1,
             f"--imbalance must be at least 1, got {self.imbalance}"),
            (0 <= self.label_noise < 1, f"--label-noise must lie in [0, 1), got {self.label_noise}"),
            (self.noise_type in NOISE_TYPES,
             f"--noise-type must be one of {', '.join(NOISE_TYPES)}, got {self.noise_type!r}"),
            (self.stem in STEMS, f"--stem must be one of {', '.join(STEMS)}, got {self.stem!r}"),
            (self.optimizer in OPTIMIZERS,
             f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES,
             f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if isinstance(self.classes, (str, list)):  # "a,b" (a flag, the API) or a list (TOML, JSON)
            object.__setattr__(self, "classes", _words(self.classes) if isinstance(self.classes, str)
                               else tuple(self.classes))
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
        # clean_val changes nothing without noise: runs from before it keep their hash
        if not self.label_noise:
            del identity["clean_val"]
        for name, default in LATER_DEFAULTS.items():
            if identity[name] == default:
                del identity[name]
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


def to_flags(settings: dict) -> list[str]:
    """Run settings as the command line that sets them (for a worker process `bench grid` starts):
    the inverse of how `cli.add_settings` reads them."""
    args = []
    for name, value in settings.items():
        f = SETTINGS[name]
        flag = f.metadata.get("flag", "--" + name.replace("_", "-"))
        if isinstance(f.default, bool):
            args += [flag] if value != f.default else []
        elif value is not None:
            args += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return args
