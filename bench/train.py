"""One run, top to bottom: config -> data, model, loss -> train/validate each epoch -> test -> record."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.checkpoint import (
    CHECKPOINT_NAME,
    Interrupted,
    graceful_stop,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from bench.config import RunConfig
from bench.datasets import DataSplits, check_splits, prepare_splits
from bench.errors import OutOfMemory, StorageError, UsageError
from bench.loader import TensorBatches
from bench.lookahead import Lookahead
from bench.losses import LossSpec, build_loss, get_loss, resolve_loss_params
from bench.metrics import EvalAccumulator
from bench.models import BuiltModel, ModelSpec, build_model, get_model
from bench.precision import NAMES as PRECISION_NAMES
from bench.precision import bf16_safe, choose_precision
from bench.record import (
    HISTORY_NAME, RECORD_NAME, RUN_INFO_NAME, SCHEMA_VERSION, Outcome, Status, environment, find_resumable,
    new_run_id, utc_now, write_history_csv, write_json_atomic,
)
from bench.report import QuietReporter


log = logging.getLogger("bench")


class RunStopped(Exception):
    """Raised from a reporter to end a run early with its own status (the tuner's 'pruned')."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain fp32
    precision_reason: str = ""

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def precision(self) -> str:
        return PRECISION_NAMES[self.amp_dtype]


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    dev = torch.device(
        "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    return dev


def resolve_runtime(device: str, precision: str, macs: int | None = None, loss_bf16: bool = True) -> Runtime:
    """Device and autocast dtype; `--precision auto` is decided by bench.precision from the
    model's MACs per image and whether the loss tolerates bf16."""
    dev = resolve_device(device)
    if precision == "fp16" and dev.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA GPU; on the CPU use fp32 or bf16")
    chosen = choose_precision(precision, dev, macs, loss_bf16)
    return Runtime(dev, chosen.amp_dtype, chosen.reason)


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    """Forward multiply-accumulates for one image (torch's FLOP counter counts 2 per MAC); the
    meta device works too (shapes only)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def check_outputs_are_logits(model: nn.Module, data: DataSplits, name: str, device: torch.device,
                             allow_prob_outputs: bool = False) -> None:
    """Refuse a model whose outputs are probabilities: every loss applies its own softmax, and a
    softmax inside the model too (the double-softmax bug) saturates the gradients."""
    batch = TensorBatches(data.train.subset(torch.arange(min(64, len(data.train)))), 64, data.mean, data.std,
                          device)
    x, _ = next(batch.epoch(0))
    with torch.no_grad():
        was_training = model.training
        out = model.eval()(x)
        model.train(was_training)
    expected = [len(x), len(data.class_names)]
    if not isinstance(out, torch.Tensor) or list(out.shape) != expected:
        got = list(out.shape) if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise UsageError(f"model {name} returns {got} for a batch of {len(x)} images of shape "
                         f"{tuple(data.input_shape)}; expected logits {expected} (one per class)")
    out = out.float()
    if not allow_prob_outputs and (out >= 0).all() and torch.allclose(out.sum(1),
                                                                      torch.ones(len(out), device=device),
                                                                      atol=1e-3):
        raise UsageError(
            f"model {name} outputs probabilities (non-negative, rows sum to 1), but losses take raw logits "
            "and apply their own softmax (a double softmax); return logits, or pass --allow-prob-outputs "
            "to train it anyway"
        )


def init_from_data(model: nn.Module, batches: TensorBatches) -> None:
    """A module that sets itself from data (airbench's whitening layer) offers `init_from_data`
    and `data_init_images`: it gets that many training images, un-augmented, before a fresh run's
    first step (a resumed run has them in its checkpoint)."""
    for module in model.modules():
        if callable(getattr(module, "init_from_data", None)):
            module.init_from_data(batches.plain(module.data_init_images))


def make_optimizer(config: RunConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over the trainable parameters. On CUDA the fused kernels: one launch
    for every parameter, and GradScaler (fp16) hands them its scale and inf flag on the device
    instead of checking them on the host with a sync every step.

    A parameter may carry `lr_scale` (a model's own choice, e.g. airbench's 64x on batch-norm
    biases): it trains at that multiple of the lr, in a group of its own whose weight decay is
    divided by it, so the decay per step (lr x weight decay) stays the same. A parameter with
    `train_epochs` is frozen by the training loop from that epoch on (it then gets no gradient,
    and the optimizer skips it)."""
    fused = {"fused": True} if device.type == "cuda" else {}
    groups: dict[float, list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(float(getattr(p, "lr_scale", 1.0)), []).append(p)
    params = [{"params": ps, "lr": config.lr * scale, "weight_decay": config.weight_decay / scale}
              for scale, ps in sorted(groups.items())]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0, **fused)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)


def lr_factor(config: RunConfig, total_steps: int):
    """The lr multiplier at each step: cosine to zero, x0.1 at 50% and 75% of training, constant, or
    linear; with `warmup_epochs`, first a linear ramp from `warmup_from` (+ 1/warm-up steps) of the
    lr to all of it. Cosine and step are laid over the whole run (the warm-up scales their start);
    linear starts from the full lr where the warm-up ends and falls to `decay_to` of it at the end:
    a triangle (airbench's: from 0.2 up to 1 at 23% of the run, then down to 0.07)."""
    warmup = round(total_steps * config.warmup_epochs / config.epochs)
    if config.schedule == "cosine":
        def factor(step):
            return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    elif config.schedule == "linear":
        span = max(total_steps - warmup, 1)  # a warm-up rounded up to the whole run leaves one step

        def factor(step):
            return 1 - (1 - config.decay_to) * min(max(step - warmup, 0), span) / span
    elif config.schedule == "step":
        def factor(step):
            return 0.1 ** ((step >= total_steps // 2) + (step >= total_steps * 3 // 4))
    else:
        def factor(step):
            return 1.0
    if warmup:
        start = config.warmup_from
        return lambda step: (start + (1 - start) * min(1.0, (step + 1) / warmup)) * factor(step)
    return factor


def make_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """The per-step schedule (`lr_factor`) on the optimizer."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))


@dataclass
class Progress:
    """Where a run stands, as its checkpoint keeps it: the next epoch and step, that epoch's running
    sums so far (all zero at an epoch's start), and the whole run's training time and images."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    first_bad_step: int = -1
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0
    images_seen: int = 0

    @classmethod
    def of(cls, checkpoint: dict | None) -> "Progress":
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls)}) if checkpoint else cls()


def compile_model(model: nn.Module, criterion: nn.Module, runtime: Runtime, batch,
                  mode: str = "default") -> tuple[nn.Module, float]:
    """torch.compile the model in `mode` and trigger compilation on one batch (forward and
    backward), so its cost is measured apart from training. The warm-up's batch-norm statistics
    are undone."""
    compiled = torch.compile(model, mode=mode)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss_state = {k: v.clone() for k, v in criterion.state_dict().items()}
    start = time.perf_counter()
    x, y = batch
    with runtime.autocast():
        loss = criterion(compiled(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    criterion.load_state_dict(loss_state)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return compiled, time.perf_counter() - start


def train_step(model, criterion, optimizer, scaler, runtime: Runtime, x, y) -> tuple[torch.Tensor,
                                                                                     torch.Tensor]:
    """One optimisation step; returns the logits and the loss (both still on the device)."""
    with runtime.autocast():
        logits = model(x)
        loss = criterion(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


def tta_logits(model, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over test-time views, as airbench does: level 0 the image; 1 it and its
    mirror; 2 half that, half the mirrored pair shifted one pixel up-left and down-right (reflect
    padding)."""
    if level == 0:
        return model(x)
    mirrored = 0.5 * model(x) + 0.5 * model(x.flip(-1))
    if level == 1:
        return mirrored
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [tta_logits(model, padded[..., i:i + h, i:i + w], 1) for i in (0, 2)]
    return 0.5 * mirrored + 0.25 * (shifted[0] + shifted[1])


def evaluate(model, batches: TensorBatches, criterion, num_classes: int, runtime: Runtime,
             tta: int = 0) -> EvalAccumulator:
    """Metrics of a split, the model in eval mode; `tta`: test-time augmentation level (`tta_logits`)."""
    model.eval()
    criterion.eval()  # a stateful loss (ghm-c with momentum) learns from training batches only
    acc = EvalAccumulator(num_classes, runtime.device)
    with torch.no_grad():
        for x, y in batches.epoch(0):
            with runtime.autocast():
                logits = tta_logits(model, x, tta)
            acc.update(logits, y, criterion(logits, y))
    criterion.train()
    return acc


@dataclass(frozen=True)
class Refs:
    """A run's model and loss, resolved once (a plug-in file imported and hashed once) and passed
    down to whatever checks, builds, counts or records them."""

    model: ModelSpec
    loss: LossSpec

    @classmethod
    def of(cls, config: RunConfig) -> Refs:
        return cls(get_model(config.model, config.base_dir), get_loss(config.loss, config.base_dir))

    @property
    def sources(self) -> dict:
        """`sources` of a record whose model or loss is a user's file or module (ref, path, sha256)."""
        found = {"model": self.model.origin, "loss": self.loss.origin}
        return {k: v for k, v in found.items() if v}


@dataclass
class Setup:
    """What a configuration resolves to before any training: device, data splits, loss."""

    config: RunConfig
    refs: Refs
    runtime: Runtime
    data: DataSplits
    loss_params: dict
    criterion: nn.Module
    macs: int  # forward multiply-accumulates per image
    warnings: list[str]  # what the data leaves doubtful (bench.datasets.check_splits), kept in the record

    def make_model(self) -> tuple[nn.Module, BuiltModel]:
        """The model on its device, with the seed's initial weights (the same whatever the loss)."""
        torch.manual_seed(self.config.seed)
        built = _build(self.config, self.refs.model, self.data, self.runtime.device)
        return built.module.to(memory_format=built.memory_format), built

    def batches(self, split: str, batch_size: int, channels_last: bool) -> TensorBatches:
        """Tensor batches of a split; the training split is shuffled and augmented per seed."""
        train = split == "train"
        return TensorBatches(
            getattr(self.data, split), batch_size, self.data.mean, self.data.std, self.runtime.device,
            train=train, seed=self.config.seed,
            crop_pad=self.config.translate if train and self.config.augment else 0,
            crop_fill=self.config.crop_fill,
            alternate_flip=self.config.flip == "alternate",
            channels_last=channels_last,
        )


def _build(config: RunConfig, model: ModelSpec, data: DataSplits, device: torch.device,
           weights: bool = True) -> BuiltModel:
    """The model on `device` with lazy modules materialised; `weights=False` skips loading
    pretrained or given weights (for counting MACs on the meta device)."""
    try:
        built = build_model(model, data.input_shape, len(data.class_names), config.stem,
                            config.pretrained and weights, config.weights if weights else None)
    except ValueError as exc:
        raise UsageError(f"model {config.model} cannot take {data.input_shape} inputs: {exc}") from None
    built.module = built.module.to(device)
    materialize_lazy(built.module, data.input_shape, device)
    return built


def model_macs(config: RunConfig, model: ModelSpec, data: DataSplits) -> int:
    """Forward MACs per image, counted on the meta device (no memory, no random draws); a
    user's model that cannot be built there is counted on the CPU instead."""
    rng = torch.get_rng_state()
    try:
        with torch.device("meta"):
            built = _build(config, model, data, torch.device("meta"), weights=False)
        return count_macs(built.module, data.input_shape, torch.device("meta"))
    except UsageError:
        raise
    except Exception:  # noqa: BLE001  (meta tensors are not for every user's code)
        built = _build(config, model, data, torch.device("cpu"), weights=False)
        return count_macs(built.module, data.input_shape, torch.device("cpu"))
    finally:
        torch.set_rng_state(rng)


def materialize_lazy(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> None:
    """Lazy modules (nn.LazyLinear, ...) get their shapes from one forward on a batch of the
    dataset's shape, before parameters are counted and the optimizer is built."""
    if any(
        isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
        for m in model.modules()
    ):
        was_training = model.training
        with torch.no_grad():
            model.eval()(torch.zeros(2, *input_shape, device=device))
        model.train(was_training)


def check_loss(criterion: nn.Module, name: str, num_classes: int, device: torch.device) -> None:
    """Every loss, built-in or a user's, must map logits [N, C] and targets [N] to a scalar that
    depends on the logits."""
    generator = torch.Generator().manual_seed(0)  # the run's own random streams stay untouched
    logits = torch.randn(4, num_classes, generator=generator).to(device).requires_grad_(True)
    targets = torch.arange(4, device=device) % num_classes
    state = {k: v.clone() for k, v in criterion.state_dict().items()}
    try:
        out = criterion(logits, targets)
    except Exception as exc:
        raise UsageError(f"loss {name!r} failed on logits [4, {num_classes}] and targets [4]: "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 0:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"loss {name!r} returned {shape} for a batch of 4; a loss returns a scalar (reduce "
                         "over the batch)")
    if not out.requires_grad:
        raise UsageError(f"loss {name!r} returned a value that does not depend on the logits (no gradient)")
    criterion.load_state_dict(state)  # a stateful loss (ghm-c) forgets this probe


def prepare(config: RunConfig, refs: Refs | None = None) -> Setup:
    """The run's device, data, loss and precision (`refs`: its model and loss if already resolved)."""
    device = resolve_device(config.device)
    refs = refs or Refs.of(config)
    spec = refs.loss
    data = prepare_splits(config)
    warnings = check_splits(data, config.batch_size)
    num_classes = len(data.class_names)
    loss_params = resolve_loss_params(spec, config.loss_params, num_classes)  # the spec resolved above
    criterion = build_loss(spec, loss_params, data.class_counts()).to(device)
    check_loss(criterion, config.loss, num_classes, device)
    macs = model_macs(config, refs.model, data)
    loss_bf16 = spec.bf16 if spec.bf16 is not None else bf16_safe(criterion, num_classes)
    runtime = resolve_runtime(config.device, config.precision, macs, loss_bf16)
    return Setup(config, refs, runtime, data, loss_params, criterion, macs, warnings)


def run_identity(config: RunConfig, extra: dict | None = None, found: dict | None = None) -> str:
    """The run's identity for resume and grids: the config hash, and for a user's own model or loss
    the sha256 of its code too, so an edited file makes a new run instead of resuming an old one.
    An eval run of a tuned cell also carries the cell (`tuning.cell`): two cells whose searches
    land on the same values are still two rows, each with its own run."""
    found = Refs.of(config).sources if found is None else found
    cell = ((extra or {}).get("tuning") or {}).get("cell")
    if not found and not cell:
        return config.config_hash()
    code = json.dumps({kind: source["sha256"] for kind, source in sorted(found.items())})
    return hashlib.sha1((config.config_hash() + code + (cell or "")).encode()).hexdigest()[:12]


STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def storage_error(exc: OSError, out_dir: Path) -> StorageError:
    where = exc.filename or out_dir
    return StorageError(f"cannot write {where}: {exc.strerror or exc}; free space or choose a writable "
                        "--out, then rerun with --resume: records already written and the last good "
                        "checkpoint are kept")


def run(
    config: RunConfig, out_dir: Path, reporter=None, command: str | None = None, resume: bool = False,
    test: bool = True, extra: dict | None = None, refs: Refs | None = None,
) -> Outcome:
    """Train and test one configuration; returns its `Outcome` (the record, the path it was
    written to, how it ended). `refs`: its model and loss, if the caller resolved them already.
    A full disk or a read-only output folder is a StorageError (one line)."""
    try:
        return _run(config, out_dir, reporter, command, resume, test, extra, refs)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, out_dir) from None
        raise


def _run(
    config: RunConfig, out_dir: Path, reporter=None, command: str | None = None, resume: bool = False,
    test: bool = True, extra: dict | None = None, refs: Refs | None = None,
) -> Outcome:
    """Train and test one configuration.

    With `resume`, an unfinished run of the same configuration in `out_dir` continues from its
    last checkpoint (a completed one is returned as it is). `test=False` (tuning trials) never
    touches the test split: the record has no `metrics.test`. `extra` adds keys to the record
    (`tuning` of an eval run, `trial` of a tuning run).
    """
    setup_start = time.perf_counter()
    reporter = reporter or QuietReporter()
    refs = refs or Refs.of(config)  # plug-in files resolved and hashed once for the run
    found = refs.sources
    config_hash = run_identity(config, extra, found)  # looked up before any data is decoded or model built
    folder, completed = find_resumable(out_dir, config_hash) if resume else (None, None)
    if completed is not None:
        log.info("already completed: %s (nothing to resume; its record is shown as it is)",
                 folder / RECORD_NAME)
        return Outcome(completed, folder / RECORD_NAME)
    setup = prepare(config, refs)
    runtime, data, loss_params = setup.runtime, setup.data, setup.loss_params
    model, built = setup.make_model()
    check_outputs_are_logits(model, data, config.model, runtime.device, config.allow_prob_outputs)
    if resume and folder is None:
        log.info("nothing to resume for this configuration in %s: starting a new run", out_dir)
    unfinished = folder is not None
    folder = folder or out_dir / new_run_id(config)
    info_path = folder / RUN_INFO_NAME
    info = json.loads(info_path.read_text()) if info_path.exists() else {
        "run_id": folder.name, "config_hash": config_hash, "started": utc_now(), "config": config.to_dict(),
    }
    write_json_atomic(info_path, info)
    checkpoint_path = folder / CHECKPOINT_NAME
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
    if checkpoint is not None:
        log.info("resuming run %s from epoch %d, step %d (its checkpoint)", folder.name,
                 checkpoint["epoch"] + 1,
                 checkpoint["step"])
    elif unfinished:
        log.info("resuming run %s from its start: it stopped before its first checkpoint", folder.name)

    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": info["run_id"],
        "config_hash": config_hash,
        "status": Status.RUNNING,
        "started": info["started"],
        "command": command,
        "config": {**config.to_dict(), "loss_params": loss_params, "precision": runtime.precision,
                   "precision_reason": runtime.precision_reason},
        "dataset": {
            "name": data.name, "class_names": data.class_names, "input_shape": list(data.input_shape),
            "splits": data.sizes(), "mean": list(data.mean), "std": list(data.std),
            "train_class_counts": data.class_counts(),
            "imbalance": config.imbalance, "label_noise": config.label_noise,
            "noise_type": config.noise_type if config.label_noise else None,
            "val_label_noise": 0.0 if config.clean_val else config.label_noise,
            "skipped_images": data.skipped_images,
        },
        "model": {
            "params": sum(p.numel() for p in model.parameters()),
            "stem": built.stem,
            "macs": setup.macs,
        },
        "history": [],
        "metrics": {},
        "timing": {"setup_seconds": time.perf_counter() - setup_start},
        "resumed_from": None if checkpoint is None else {"epoch": checkpoint["epoch"],
                                                         "step": checkpoint["step"]},
        "env": environment(runtime.device),
        **({"sources": found} if found else {}),
        **({"warnings": setup.warnings} if setup.warnings else {}),
        **(extra or {}),
    }
    batch_size = checkpoint["batch_size"] if checkpoint is not None else config.batch_size
    stopped_by = None
    try:
        with graceful_stop() as stop:
            while True:
                try:
                    train_and_test(setup, batch_size, model, built.convolutional, record, reporter,
                                   checkpoint, checkpoint_path, stop, test)
                    break
                except torch.OutOfMemoryError:
                    if not config.auto_batch or batch_size == 1:
                        raise OutOfMemory(
                            f"out of memory on {record['env']['device_name']} at batch size {batch_size}; "
                            f"try --batch-size {max(1, batch_size // 2)}, or --auto-batch to halve until it "
                            "fits"
                        ) from None
                    batch_size //= 2  # start again from the same initial weights
                    if runtime.device.type == "cuda":
                        torch.cuda.empty_cache()
                    model, built = setup.make_model()
                    checkpoint, record["history"] = None, []
                    checkpoint_path.unlink(missing_ok=True)
    except BaseException as exc:
        stopped_by = exc
        raise
    finally:
        reporter.close()
        status, reason = ending(stopped_by, record.get("diverged_at"))
        record["status"] = status
        if reason:
            record["reason"] = reason
        if status in (Status.PRUNED, Status.COMPLETED):  # stopped for good, or the record holds it all
            checkpoint_path.unlink(missing_ok=True)
        record["config"]["batch_size_used"] = batch_size
        record["finished"] = utc_now()
        # The whole run's wall time (start-up, training, validation, test), over every resume.
        info["wall_seconds"] = info.get("wall_seconds", 0.0) + time.perf_counter() - setup_start
        write_json_atomic(info_path, info)
        record["timing"]["wall_seconds"] = info["wall_seconds"]
        write_history_csv(folder / HISTORY_NAME, record["history"])
        write_json_atomic(folder / RECORD_NAME, record)
    if stop:  # the signal came after the last step (validation, test): nothing to stop, but the caller stops
        raise Interrupted(stop.signum, completed=True)
    return Outcome(record, folder / RECORD_NAME)


def ending(stopped_by: BaseException | None, diverged_at: dict | None) -> tuple[Status, str | None]:
    """How a run ended and why, from what stopped it: the one place a record's status is decided.
    A completed run's checkpoint is deleted (weights are not kept), a pruned one's too (nothing
    will resume it); an interrupted one keeps it for --resume."""
    if stopped_by is None:
        if diverged_at:
            return Status.DIVERGED, (f"non-finite training loss at epoch {diverged_at['epoch']}, "
                                     f"step {diverged_at['step']}")
        return Status.COMPLETED, None
    if isinstance(stopped_by, Interrupted):
        return Status.INTERRUPTED, f"stopped by {stopped_by}; continue with --resume"
    if isinstance(stopped_by, RunStopped):
        return Status(stopped_by.status), str(stopped_by)
    if isinstance(stopped_by, OSError) and stopped_by.errno in STORAGE_ERRNOS:
        # the output folder, not the run, failed: resumable from its last good checkpoint
        return Status.INTERRUPTED, (f"could not write {stopped_by.filename}: {stopped_by.strerror}; "
                                    "continue with --resume")
    if isinstance(stopped_by, Exception):
        return Status.FAILED, f"{type(stopped_by).__name__}: {stopped_by}"
    # SystemExit, or KeyboardInterrupt outside the training loop's handler
    return Status.FAILED, "the process stopped unexpectedly"


def train_and_test(
    setup: Setup, batch_size: int, model: nn.Module, channels_last: bool, record: dict, reporter,
    checkpoint: dict | None, checkpoint_path: Path, stop, test: bool = True,
) -> None:
    config, data, criterion, runtime = setup.config, setup.data, setup.criterion, setup.runtime
    train_batches = setup.batches("train", batch_size, channels_last)
    val_batches = setup.batches("val", batch_size, channels_last)
    num_classes = len(data.class_names)
    optimizer = make_optimizer(config, model, runtime.device)
    total_steps = config.epochs * len(train_batches)
    factor = lr_factor(config, total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    device = runtime.device

    pos = Progress.of(checkpoint)  # a checkpoint may restore it mid-epoch
    lookahead = Lookahead(model, config.epochs, len(train_batches),
                          checkpoint.get("lookahead") if checkpoint else None) if config.lookahead else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        scaler.load_state_dict(checkpoint["scaler"])
        criterion.load_state_dict(checkpoint.get("criterion", {}))
        record["history"] = checkpoint["history"]
        restore_rng_states(checkpoint["rng"])

    def save(at: Progress) -> None:  # the whole state in one dict, as nanoGPT keeps it
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
            "criterion": criterion.state_dict(),  # a stateful loss's running statistics
            "history": record["history"], **asdict(at), "batch_size": batch_size,
            **({"lookahead": lookahead.average} if lookahead else {}),
        })

    if checkpoint is None:
        init_from_data(model, train_batches)
    timed = [p for p in model.parameters() if hasattr(p, "train_epochs")]

    net = model  # what runs forward; `model` is what checkpoints hold
    if config.compile:
        net, record["timing"]["compile_seconds"] = compile_model(
            model, criterion, runtime, next(train_batches.epoch(0)), config.compile_mode)
    graphs = config.compile_mode == "reduce-overhead"  # RunConfig allows it only with --compile

    reporter.start(f"{config.model} x {config.loss}", config.epochs, len(train_batches))
    for epoch in range(pos.epoch, config.epochs):
        resume_step = pos.step if epoch == pos.epoch else 0
        for p in timed:  # a frozen parameter gets no gradient, so the optimizer skips it
            p.requires_grad_(epoch < p.train_epochs)
        net.train()
        start = time.perf_counter()
        loss_sum = torch.tensor(pos.loss_sum if resume_step else 0.0, dtype=torch.float64, device=device)
        correct = torch.tensor(pos.correct if resume_step else 0, dtype=torch.long, device=device)
        first_bad_step = torch.tensor(pos.first_bad_step if resume_step else -1, dtype=torch.long,
                                      device=device)
        seconds_before = pos.epoch_seconds if resume_step else 0.0
        lr = config.lr * factor(epoch * len(train_batches))  # at the epoch's start
        for step, (x, y) in enumerate(train_batches.epoch(epoch)):
            if step < resume_step:
                continue  # replayed batches keep the augmentation draws in step
            if graphs:  # a new step: CUDA graphs may reuse the last step's output memory
                torch.compiler.cudagraph_mark_step_begin()
            logits, loss = train_step(net, criterion, optimizer, scaler, runtime, x, y)
            schedule.step()
            if lookahead:
                lookahead.step(epoch * len(train_batches) + step + 1)
            # Bookkeeping stays on the device: no host sync inside the epoch.
            bad = ~torch.isfinite(loss.detach())
            first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            reporter.step()
            if stop:
                pos.train_seconds += time.perf_counter() - start
                save(replace(pos, epoch=epoch, step=step + 1, loss_sum=float(loss_sum), correct=int(correct),
                             first_bad_step=int(first_bad_step), epoch_seconds=seconds_before
                             + time.perf_counter() - start))
                raise Interrupted(stop.signum)
        if lookahead:
            lookahead.end_epoch()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = seconds_before + time.perf_counter() - start
        pos.train_seconds += time.perf_counter() - start
        n_train = len(train_batches) * batch_size if train_batches.drop_last else len(data.train)
        pos.images_seen += n_train
        if first_bad_step.item() >= 0:  # `ending` calls the run diverged
            record["diverged_at"] = {"epoch": epoch + 1, "step": first_bad_step.item() + 1}
            break
        val = evaluate(net, val_batches, criterion, num_classes, runtime).summary()
        entry = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / n_train,
            "train_acc": correct.item() / n_train,
            "val_loss": val["loss"],
            "val_acc": val["accuracy"],
            "val_nll": val["nll"],
            "val_ece": val["ece"],
            "val_macro_f1": val["macro_f1"],
            "val_precision": val["macro_precision"],
            "val_recall": val["macro_recall"],
            "lr": lr,
            "seconds": seconds,
        }
        record["history"].append(entry)
        reporter.epoch(entry)
        save(Progress(epoch + 1, train_seconds=pos.train_seconds, images_seen=pos.images_seen))

    record["timing"] |= {
        "train_seconds": pos.train_seconds,
        "train_images_per_sec": pos.images_seen / pos.train_seconds if pos.train_seconds else 0.0,
    }
    if "diverged_at" not in record and test:
        test_batches = setup.batches("test", batch_size, channels_last)
        record["metrics"]["test"] = evaluate(net, test_batches, criterion, num_classes, runtime).result(
            data.class_names
        )
        if config.tta:  # reported beside the plain metrics, never instead of them
            record["metrics"]["test_tta"] = evaluate(net, test_batches, criterion, num_classes, runtime,
                                                     config.tta).result(data.class_names)
