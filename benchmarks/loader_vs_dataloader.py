"""bench's tensor-resident loop against the seed reports' DataLoader + PIL loop, side by side.

    python benchmarks/loader_vs_dataloader.py [--model cnn-tiny] [--batch-size 128] [--steps 100] [--workers 2]
                                              [--dataset cifar10] [--data-root ARCHIVE]

Both loops train the same model with the same optimizer step and batch size on CIFAR-10
(../shared/datasets/cifar10-jpeg.tar.gz, decoded once into bench's cache), with random crop
(padding 4) + horizontal flip + normalisation. The reference loop is torchvision's CIFAR10
pipeline: per-image PIL conversion and transforms in DataLoader workers. Prints images/s of
each and the ratio; warm-up steps are excluded. Also the compute-only images/s of the same step
on one resident batch: compute-only / reference is the most any data path could gain here.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.config import RunConfig
from bench.record import device_name
from bench.speed import forever, timed
from bench.train import make_optimizer, prepare, train_step

ROOT = Path(__file__).resolve().parents[1]


class PILDataset(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC array -> PIL image -> transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def images_per_sec(batches, step, warmup: int, steps: int, batch_size: int) -> float:
    return steps * batch_size / timed(torch.device("cpu"), step, batches, warmup, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn-tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dataset", default="cifar10", help="cifar10, or cifar10-sample for a quick check")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/datasets/cifar10-jpeg.tar.gz"))
    args = parser.parse_args()

    config = RunConfig(model=args.model, loss="ce", dataset=args.dataset,
                       data_root=args.data_root if args.dataset == "cifar10" else None,
                       batch_size=args.batch_size, device="cpu", precision="fp32")
    setup = prepare(config)
    runtime, data = setup.runtime, setup.data

    def fresh_step():
        model, built = setup.make_model()
        optimizer = make_optimizer(config, model, runtime.device)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        fmt = built.memory_format
        return lambda x, y: train_step(model.train(), setup.criterion, optimizer, scaler, runtime,
                                       x.contiguous(memory_format=fmt), y)

    ours = setup.batches("train", args.batch_size, setup.make_model()[1].convolutional)
    bench_ips = images_per_sec(forever(ours), fresh_step(),
                               args.warmup, args.steps, args.batch_size)
    compute_ips = images_per_sec(itertools.repeat(next(ours.epoch(0))), fresh_step(),
                                 args.warmup, args.steps, args.batch_size)

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])
    loader = DataLoader(PILDataset(data.train.images, data.train.labels, transform), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0)
    reference_ips = images_per_sec((b for _ in itertools.count() for b in loader), fresh_step(),
                                   args.warmup, args.steps, args.batch_size)
    result = {
        "model": args.model, "batch_size": args.batch_size, "steps": args.steps, "workers": args.workers,
        "bench_images_per_sec": round(bench_ips, 1), "dataloader_pil_images_per_sec": round(reference_ips, 1),
        "ratio": round(bench_ips / reference_ips, 2), "compute_only_images_per_sec": round(compute_ips, 1),
        "ceiling_ratio": round(compute_ips / reference_ips, 2), "device": device_name(runtime.device),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
