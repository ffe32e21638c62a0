"""airbench94 itself (the `airbench` package on PyPI, Keller Jordan) on the same GPU and the same
images as bench's airbench board, for issue #28's "time per run beside airbench94's".

    python benchmarks/airbench_peer.py --data ../shared/datasets/cifar10-jpeg.tar.gz --runs 5 > FILE.jsonl

airbench reads `./cifar10/train.pt` and `test.pt` (uint8 NHWC images, labels, class names) and
would download CIFAR-10 without them; this script writes them from the archive bench uses (decoded
by bench, so both train on the same JPEG-decoded pixels), then times one warm-up and `--runs` runs
of `airbench.train94` (wall clock around the call, CUDA-synchronised: training and its final
evaluation), and evaluates each model with airbench's own test-time augmentation (level 2). One JSON
line per run. `--prepare-only` writes the files and stops (for trying the script on a CPU: airbench
itself needs CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench.datasets import DataRequest, get_dataset


def write_airbench_data(archive: Path, folder: Path) -> dict[str, int]:
    """cifar10/train.pt and test.pt in airbench's layout, from bench's decoding of `archive`."""
    folder.mkdir(parents=True, exist_ok=True)
    source = get_dataset("cifar10").load(DataRequest(archive.resolve(), 32))
    sizes = {}
    for split in ("train", "test"):
        data = source.splits[split]
        torch.save({"images": data.images.permute(0, 2, 3, 1).contiguous(), "labels": data.labels,
                    "classes": list(data.class_names)}, folder / f"{split}.pt")
        sizes[split] = len(data.labels)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the CIFAR-10 archive bench's boards use")
    parser.add_argument("--work", type=Path, default=Path("/tmp/airbench-peer"), help="where cifar10/ is written")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    sizes = write_airbench_data(args.data, args.work / "cifar10")
    print(json.dumps({"prepared": str(args.work / "cifar10"), **sizes}), flush=True)
    if args.prepare_only:
        return
    import airbench  # noqa: PLC0415  (only where it is installed: the GPU session carries its wheel)

    os.chdir(args.work)
    airbench.warmup94(verbose=False)
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    for run in range(args.runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model = airbench.train94(verbose=False)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(json.dumps({"run": run, "seconds": seconds,
                          "tta_test_acc": airbench.evaluate(model, test_loader, tta_level=2),
                          "test_acc": airbench.evaluate(model, test_loader, tta_level=0),
                          "device": torch.cuda.get_device_name(), "airbench": airbench.__file__}), flush=True)


if __name__ == "__main__":
    main()
