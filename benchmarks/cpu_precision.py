"""CPU toolbox, measured per family: fp32 / bf16 / auto, channels_last, torch.compile, batch size,
threads. One JSON line per measurement (bench.speed's timer), for benchmarks/RESULTS.md.

    python benchmarks/cpu_precision.py [precision|side_by_side|channels_last|compile|batch|threads ...] > FILE.jsonl

Run it on an idle machine: two jobs on 2 cores each run several times slower.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from unittest import mock

import torch

from bench.config import RunConfig
from bench.models import BuiltModel
from bench.speed import measure_speed

IMAGENETTE = os.environ.get("BENCH_IMAGENETTE", "../shared/datasets/imagenette-128.tar.gz")
FAMILIES = [  # (model, dataset, data_root, image size)
    ("mlp2", "cifar10-sample", None, None),
    ("resmlp", "cifar10-sample", None, None),
    ("cnn", "cifar10-sample", None, None),
    ("cnn-tiny", "cifar10-sample", None, None),
    ("timm:resnet18", "imagenet10", IMAGENETTE, 64),
]
STEPS = int(os.environ.get("STEPS", "30"))


def emit(config: RunConfig, label: str, **extra) -> dict:
    result = measure_speed(config, STEPS, 5)
    keep = ("model", "dataset", "batch_size", "precision", "precision_reason", "compile", "train_images_per_sec",
            "compute_only_images_per_sec", "eval_images_per_sec", "train_flops_per_sec", "peak_flops_per_sec",
            "fraction_of_peak", "macs_per_image", "compile_seconds", "torch_threads")
    row = {"label": label, **{k: result[k] for k in keep}, **extra, "torch": torch.__version__}
    print(json.dumps(row), flush=True)
    return row


def main(which: set[str]) -> None:
    for model, dataset, root, size in FAMILIES:
        base = RunConfig(model=model, loss="ce", dataset=dataset, data_root=root, image_size=size,
                         limit_train=2048, device="cpu")
        if "side_by_side" in which:  # fp32 and auto alternated, REPEATS times: read the medians
            for repeat in range(int(os.environ.get("REPEATS", "3"))):
                for precision in ("fp32", "auto"):
                    emit(replace(base, precision=precision), "side by side", repeat=repeat)
        if "precision" in which:
            for precision in ("fp32", "bf16", "auto"):
                emit(replace(base, precision=precision), "precision")
        convolutional = model.startswith("timm:") or model.startswith("cnn")
        if "channels_last" in which and convolutional:
            for precision in ("fp32", "bf16"):  # the default is channels_last; this is the contiguous layout
                with mock.patch.object(BuiltModel, "memory_format", torch.contiguous_format):
                    emit(replace(base, precision=precision), "contiguous (not channels_last)")
        if "compile" in which and model != "timm:resnet18":
            emit(replace(base, precision="auto", compile=True), "compile")
        if "batch" in which:
            for batch in (64, 256, 512):
                emit(replace(base, precision="auto", batch_size=batch), "batch size")
        if "threads" in which:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            emit(replace(base, precision="auto"), "threads", threads=1)
            torch.set_num_threads(threads)


if __name__ == "__main__":
    main(set(sys.argv[1:]) or {"precision", "side_by_side", "channels_last", "compile", "batch", "threads"})
