"""`bench speed`: where the time goes. Training images/s through bench's real data path
(augmentation included), evaluation images/s, and the compute-only images/s of the same
model and step on resident random tensors, so the pipeline's overhead is a visible ratio."""

from __future__ import annotations

import itertools
import resource
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

from bench.config import RunConfig
from bench.loader import TensorBatches
from bench.record import device_name
from bench.train import compile_model, make_optimizer, prepare, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn, batches, warmup: int, steps: int) -> float:
    """Seconds for `steps` calls of fn(x, y) after `warmup` untimed ones."""
    for x, y in itertools.islice(batches, warmup):
        fn(x, y)
    _sync(device)
    start = time.perf_counter()
    for x, y in itertools.islice(batches, steps):
        fn(x, y)
    _sync(device)
    return time.perf_counter() - start


SYNC_WARNING = "called a synchronizing CUDA operation"  # torch's text in sync debug mode "warn"


def host_syncs(fn, batches, steps: int) -> dict:
    """Host-device synchronisations in `steps` calls of fn(x, y), counted with torch's sync debug
    mode (CUDA): each stalls the CPU until the GPU catches up. The sites are the Python lines
    (file:line) that caused them, most frequent first."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for x, y in itertools.islice(batches, steps):
                fn(x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if SYNC_WARNING in str(w.message))
    return {"host_syncs_per_step": sum(sites.values()) / steps, "host_sync_sites": dict(sites.most_common(5))}


def matmul_peak_flops(runtime, size: int | None = None, windows: int = 3, seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul in the run's precision on its device, measured now (the best of
    a few short windows): the ceiling a training step's own FLOP/s is compared with. 1024 on a
    CPU (the fastest size on the 2-core EPYC), 8192 on a GPU. A convolution library can beat it."""
    device = runtime.device
    size = size or (8192 if device.type == "cuda" else 1024)
    dtype = runtime.amp_dtype or torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = 0.0
    for _ in range(windows):
        _sync(device)
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds:
            a @ b
            calls += 1
            if device.type == "cuda" and calls % 10 == 0:
                _sync(device)
        _sync(device)
        best = max(best, 2 * size**3 * calls / (time.perf_counter() - start))
    return best


def forever(loader: TensorBatches):
    for epoch in itertools.count():
        yield from loader.epoch(epoch)


def measure_speed(config: RunConfig, steps: int = 30, warmup: int = 5) -> dict:
    setup = prepare(config)
    runtime, criterion = setup.runtime, setup.criterion
    device = runtime.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, built = setup.make_model()
    train_batches = setup.batches("train", config.batch_size, built.convolutional)
    eval_batches = setup.batches("test", config.batch_size, built.convolutional)
    optimizer = make_optimizer(config, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.amp_dtype == torch.float16)
    result: dict = {"compile_seconds": None}
    net = model
    if config.compile:
        net, result["compile_seconds"] = compile_model(model, criterion, runtime,
                                                       next(train_batches.epoch(0)))

    def step(x, y):
        train_step(net, criterion, optimizer, scaler, runtime, x, y)

    def forward(x, y):
        with torch.no_grad(), runtime.autocast():
            net(x)

    n = config.batch_size
    net.train()
    train_s = timed(device, step, forever(train_batches), warmup, steps)
    x0, y0 = next(train_batches.epoch(0))
    resident = itertools.repeat((torch.randn_like(x0), y0))  # same shape and memory format, no data path
    compute_s = timed(device, step, resident, warmup, steps)
    net.eval()
    eval_s = timed(device, forward, forever(eval_batches), warmup, steps)
    result |= {"host_syncs_per_step": None, "host_sync_sites": {}}
    if device.type == "cuda":  # after the timings: the debug mode slows what it watches
        net.train()
        batches = forever(train_batches)
        step(*next(batches))  # an epoch's start copies its order and augmentation draws once: not per step
        result |= host_syncs(step, batches, steps)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result |= {
        "model": config.model, "dataset": config.dataset, "batch_size": n, "precision": runtime.precision,
        "compile": config.compile, "steps": steps, "warmup_steps": warmup,
        "train_images_per_sec": steps * n / train_s,
        "eval_images_per_sec": steps * n / eval_s,
        "compute_only_images_per_sec": steps * n / compute_s,
        "peak_memory_bytes": int(peak),
        "peak_memory_kind": "cuda allocated" if device.type == "cuda" else "host max RSS",
        "device": device.type, "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(), "precision_reason": runtime.precision_reason,
    }
    result["pipeline_efficiency"] = result["train_images_per_sec"] / result["compute_only_images_per_sec"]
    # A training step costs about 3 forward passes (forward, and backward for inputs and weights).
    result["macs_per_image"] = setup.macs
    result["train_flops_per_sec"] = 6 * setup.macs * result["train_images_per_sec"]
    result["peak_flops_per_sec"] = matmul_peak_flops(runtime)
    result["fraction_of_peak"] = result["train_flops_per_sec"] / result["peak_flops_per_sec"]
    return result
