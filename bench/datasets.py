"""Dataset registry and the train / val / test splits a run trains and reports on.

A dataset source gives a `train` and a `test` ImageSet; `prepare_splits` carves the
validation split from train (stratified, deterministic per seed), applies the limits and
computes the normalisation statistics from the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.errors import UsageError
from bench.imagefolder import ImageSet, cache_root, is_archive, is_tree, load_image_tree
from bench.registry import Registry

Loader = Callable[[Path | None, int], dict[str, ImageSet]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Loader
    image_size: int
    description: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, image_size: int, description: str):
    return DATASETS.decorator(name, lambda fn: DatasetSpec(name, fn, image_size, description))


CIFAR10_LAYOUTS = (
    "torchvision's cifar-10-batches-py/ folder (or its parent), an image tree "
    "train/<class>/ + test/<class>/, or a .tar.gz of that tree"
)


def _torchvision_cifar10(root: Path, download: bool) -> dict[str, ImageSet]:
    from torchvision.datasets import CIFAR10

    sets = {}
    for split in ("train", "test"):
        ds = CIFAR10(str(root), train=split == "train", download=download)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        sets[split] = ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))
    return sets


@register_dataset("cifar10", 32, "CIFAR-10: 50,000 train / 10,000 test, 32 px, 10 classes")
def cifar10(root: Path | None, image_size: int) -> dict[str, ImageSet]:
    if root is None:
        target = cache_root() / "torchvision"
        try:
            return _torchvision_cifar10(target, download=True)
        except Exception as exc:  # no network, proxy, checksum: the remedy is the same
            raise UsageError(
                f"could not download CIFAR-10 into {target} ({type(exc).__name__}); "
                f"pass --data-root DIR holding {CIFAR10_LAYOUTS}"
            ) from None
    if (root / "cifar-10-batches-py").is_dir() or root.name == "cifar-10-batches-py":
        base = root.parent if root.name == "cifar-10-batches-py" else root
        if image_size != 32:
            raise UsageError("the cifar-10-batches-py layout is 32 px; drop --image-size or use an image tree")
        return _torchvision_cifar10(base, download=False)
    if is_tree(root, ("train", "test")) or is_archive(root):
        return load_image_tree(root, ("train", "test"), image_size)
    raise UsageError(f"--data-root {root} has no recognisable CIFAR-10 layout; expected {CIFAR10_LAYOUTS}")


@register_dataset(
    "cifar10-sample", 32,
    "5,000 train / 1,000 test real CIFAR-10 images shipped with bench (offline quickstart)",
)
def cifar10_sample(root: Path | None, image_size: int) -> dict[str, ImageSet]:
    if root is not None:
        raise UsageError("cifar10-sample ships with bench and takes no --data-root; use --dataset cifar10")
    archive = resources.files("bench") / "assets" / "cifar10-sample.tar.gz"
    with resources.as_file(archive) as path:
        return load_image_tree(Path(path), ("train", "test"), image_size)


@dataclass
class DataSplits:
    """What a run trains, tunes and reports on, with the training split's statistics."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_pick(labels: torch.Tensor, total: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of `total` samples drawn per class in proportion to the class counts.

    Per-class quotas use largest remainders, so the sum is exactly `total`.
    """
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * total / len(labels)
    quota = exact.floor().long()
    short = total - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:short]] += 1
    picked = []
    for cls, k in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(picked).sort().values


def complement(n: int, index: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[index] = False
    return torch.nonzero(keep).squeeze(1)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, accumulated in float64 chunks."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div_(255).transpose(0, 1).flatten(1)
        total += x.sum(1)
        squares += x.square().sum(1)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def prepare_splits(
    dataset: str,
    data_root: Path | None,
    seed: int,
    val_fraction: float,
    limit_train: int | None = None,
    limit_test: int | None = None,
    image_size: int | None = None,
) -> DataSplits:
    """Load a registered dataset and carve train / val / test for this seed."""
    spec = DATASETS.get(dataset)
    if data_root is not None and not data_root.exists():
        raise UsageError(f"--data-root {data_root} does not exist")
    sets = spec.load(data_root, image_size or spec.image_size)
    train, test = sets["train"], sets["test"]
    generator = torch.Generator().manual_seed(seed)
    if limit_train is not None and limit_train < len(train):
        train = train.subset(stratified_pick(train.labels, limit_train, generator))
    if limit_test is not None and limit_test < len(test):
        test = test.subset(stratified_pick(test.labels, limit_test, generator))
    n_val = round(len(train) * val_fraction)
    if n_val < 1 or n_val >= len(train):
        raise UsageError(
            f"--val-fraction {val_fraction} leaves {n_val} of {len(train)} training images for "
            "validation; choose a fraction that leaves at least one image on each side"
        )
    val_index = stratified_pick(train.labels, n_val, generator)
    val = train.subset(val_index)
    train = train.subset(complement(len(train), val_index))
    mean, std = channel_stats(train.images)
    return DataSplits(dataset, train, val, test, mean, std)
