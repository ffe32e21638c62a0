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

from bench.config import RunConfig
from bench.errors import UsageError
from bench.imagefolder import ImageSet, cache_root, is_archive, is_tree, load_image_tree
from bench.registry import Registry
from bench.variants import long_tail, noisy_labels

@dataclass(frozen=True)
class DataRequest:
    """What a dataset loader needs to know: where, at what size, which split protocol."""

    root: Path | None
    image_size: int
    split_seed: int = 0
    classes: tuple[str, ...] = ()
    skip_bad_images: bool = False


@dataclass
class Source:
    """A loaded dataset: `train` and `test`, and `val` where the protocol fixes one."""

    splits: dict[str, ImageSet]
    skipped_images: int = 0


Loader = Callable[[DataRequest], Source]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Loader
    image_size: int
    description: str
    data_root: str = ""  # what --data-root accepts (bench datasets shows it)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, image_size: int, description: str, data_root: str = ""):
    return DATASETS.decorator(name, lambda fn: DatasetSpec(name, fn, image_size, description, data_root))


def get_dataset(name: str) -> DatasetSpec:
    """Registered datasets, plus `folder:PATH` for any image tree."""
    if name.startswith("folder:"):
        path = Path(name[len("folder:"):]).expanduser()
        return DatasetSpec(name, lambda req: image_folder(path, req), 32, f"image tree at {path}")
    return DATASETS.get(name)


CIFAR10_LAYOUTS = (
    "torchvision's cifar-10-batches-py/ folder (or its parent), an image tree train/<class>/ + "
    "test/<class>/, or a .tar.gz of that tree"
)


def _torchvision_cifar10(root: Path, download: bool) -> Source:
    from torchvision.datasets import CIFAR10

    sets = {}
    for split in ("train", "test"):
        ds = CIFAR10(str(root), train=split == "train", download=download)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        sets[split] = ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))
    return Source(sets)


def _decoded(path: Path, splits: tuple[str, ...], req: DataRequest) -> Source:
    tree = load_image_tree(path, splits, req.image_size, req.skip_bad_images)
    return Source(tree.splits, len(tree.skipped))


def _offline_error(what: str, target: Path, exc: Exception, layouts: str) -> UsageError:
    return UsageError(
        f"could not download {what} into {target} ({type(exc).__name__}); pass --data-root DIR holding "
        f"{layouts}"
    )


@register_dataset("cifar10", 32, "CIFAR-10: 50,000 train / 10,000 test, 32 px, 10 classes",
                  CIFAR10_LAYOUTS + "; omitted: torchvision downloads it")
def cifar10(req: DataRequest) -> Source:
    root = req.root
    if root is None:
        target = cache_root() / "torchvision"
        try:
            return _torchvision_cifar10(target, download=True)
        except Exception as exc:  # no network, proxy, checksum: the remedy is the same
            raise _offline_error("CIFAR-10", target, exc, CIFAR10_LAYOUTS) from None
    if (root / "cifar-10-batches-py").is_dir() or root.name == "cifar-10-batches-py":
        base = root.parent if root.name == "cifar-10-batches-py" else root
        if req.image_size != 32:
            raise UsageError(
                "the cifar-10-batches-py layout is 32 px; drop --image-size or use an image tree"
            )
        return _torchvision_cifar10(base, download=False)
    if is_tree(root, ("train", "test")) or is_archive(root):
        return _decoded(root, ("train", "test"), req)
    raise UsageError(f"--data-root {root} has no recognisable CIFAR-10 layout; expected {CIFAR10_LAYOUTS}")


@register_dataset(
    "cifar10-sample", 32,
    "5,000 train / 1,000 test real CIFAR-10 images shipped with bench (offline quickstart)",
    "nothing: it ships with bench",
)
def cifar10_sample(req: DataRequest) -> Source:
    if req.root is not None:
        raise UsageError("cifar10-sample ships with bench and takes no --data-root; use --dataset cifar10")
    archive = resources.files("bench") / "assets" / "cifar10-sample.tar.gz"
    with resources.as_file(archive) as path:
        return _decoded(Path(path), ("train", "test"), req)


# The Imagenette classes (fast.ai): ImageNet wnid -> readable name.
IMAGENETTE_CLASSES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}
IMAGENET_LAYOUTS = (
    "an ImageNet-style folder with one sub-folder per wnid (train/ and val/ are pooled when present), or a "
    ".tar.gz of it such as imagenette-128.tar.gz"
)


def _readable(sets: dict[str, ImageSet]) -> dict[str, ImageSet]:
    """Replace wnid folder names by class names wherever bench knows them."""
    for s in sets.values():
        s.class_names = [IMAGENETTE_CLASSES.get(c, c) for c in s.class_names]
    return sets


def _imagenette_source(req: DataRequest) -> Source:
    """train/ and val/ of Imagenette from --data-root, or torchvision's download when online."""
    root = req.root
    if root is None:
        target = cache_root() / "torchvision"
        try:
            from torchvision.datasets import Imagenette

            Imagenette(str(target), split="train", size="full", download=True)
        except Exception as exc:
            raise _offline_error("Imagenette", target, exc, IMAGENET_LAYOUTS) from None
        root = target / "imagenette2"
    if is_tree(root, ("train", "val")) or is_archive(root):
        return _decoded(root, ("train", "val"), req)
    raise UsageError(f"--data-root {root} has no recognisable Imagenette layout; expected {IMAGENET_LAYOUTS}")


def concat(sets: list[ImageSet]) -> ImageSet:
    return ImageSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]),
                    sets[0].class_names)


def select_classes(data: ImageSet, wanted: tuple[str, ...]) -> ImageSet:
    missing = [w for w in wanted if w not in data.class_names]
    if missing:
        raise UsageError(f"--classes {', '.join(missing)} not found; the data has "
                         f"{', '.join(data.class_names[:12])}...")
    old = torch.tensor([data.class_names.index(w) for w in wanted])
    keep = torch.isin(data.labels, old)
    remap = torch.full((len(data.class_names),), -1, dtype=torch.long)
    remap[old] = torch.arange(len(wanted))
    return ImageSet(data.images[keep], remap[data.labels[keep]], list(wanted))


IMAGENET10_PER_CLASS = 600
IMAGENET10_SPLIT = (360, 120, 120)  # 3:1:1


@register_dataset(
    "imagenet10", 64,
    "the seed report's ImageNet-10: 10 classes x 600 images, split 3:1:1 (3,600 / 1,200 / 1,200) by "
    "--split-seed",
    IMAGENET_LAYOUTS + "; --classes picks wnids from a full ILSVRC train folder",
)
def imagenet10(req: DataRequest) -> Source:
    root = req.root
    if root is not None and not (is_tree(root, ("train", "val")) or is_archive(root)):
        # a plain ImageNet folder, one sub-folder per wnid (e.g. a full ILSVRC train dir)
        pooled, skipped = _decoded_flat(root, req)
    else:
        source = _imagenette_source(req)
        pooled, skipped = concat([source.splits["train"], source.splits["val"]]), source.skipped_images
    wanted = (
        req.classes
        or tuple(w for w in IMAGENETTE_CLASSES if w in pooled.class_names)
        or tuple(pooled.class_names)
    )
    pooled = (
        select_classes(pooled, wanted) if req.classes or len(pooled.class_names) != len(wanted) else pooled
    )
    counts = torch.bincount(pooled.labels, minlength=len(pooled.class_names))
    short = [f"{IMAGENETTE_CLASSES.get(pooled.class_names[c], pooled.class_names[c])} ({int(n)})"
             for c, n in enumerate(counts) if n < IMAGENET10_PER_CLASS]
    if short:
        raise UsageError(f"imagenet10 needs {IMAGENET10_PER_CLASS} images per class; too few in: "
                         f"{', '.join(short)}")
    generator = torch.Generator().manual_seed(req.split_seed)
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for c in range(len(pooled.class_names)):
        members = torch.nonzero(pooled.labels == c).squeeze(1)
        chosen = members[torch.randperm(len(members), generator=generator)[:IMAGENET10_PER_CLASS]]
        bounds = np.cumsum((0,) + IMAGENET10_SPLIT)
        for split, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            parts[split].append(chosen[lo:hi])
    sets = {split: pooled.subset(torch.cat(idx).sort().values) for split, idx in parts.items()}
    return Source(_readable(sets), skipped)


def _decoded_flat(root: Path, req: DataRequest) -> tuple[ImageSet, int]:
    """A folder of class sub-folders with no split level, decoded as one pool (and the skipped count)."""
    if not root.is_dir():
        raise UsageError(f"--data-root {root} has no recognisable ImageNet layout; expected "
                         f"{IMAGENET_LAYOUTS}")
    tree = load_image_tree(root.parent, (root.name,), req.image_size, req.skip_bad_images)
    return tree.splits[root.name], len(tree.skipped)


@register_dataset(
    "imagenette", 64,
    "Imagenette's official split: 9,469 train (bench's val carved from it) / 3,925 val reported as test",
    IMAGENET_LAYOUTS + "; omitted: torchvision downloads it",
)
def imagenette(req: DataRequest) -> Source:
    source = _imagenette_source(req)
    return Source(_readable({"train": source.splits["train"], "test": source.splits["val"]}),
                  source.skipped_images)


FOLDER_TEST_FRACTION = 0.2


def image_folder(path: Path, req: DataRequest) -> Source:
    """`folder:PATH`: train/ + test/ class folders, or one root of class folders split 4:1 by --split-seed."""
    if not path.exists():
        raise UsageError(f"folder dataset {path} does not exist")
    if is_tree(path, ("train", "test")) or is_archive(path):
        return _decoded(path, ("train", "test"), req)
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        pooled, skipped = _decoded_flat(path, req)
        test_index = stratified_pick(pooled.labels, round(len(pooled) * FOLDER_TEST_FRACTION),
                                     torch.Generator().manual_seed(req.split_seed))
        sets = {"train": pooled.subset(complement(len(pooled), test_index)),
                "test": pooled.subset(test_index)}
        return Source(sets, skipped)
    raise UsageError(
        f"{path} is not an image tree: expected train/<class>/ + test/<class>/, a .tar.gz of that, or a "
        "folder of <class>/ sub-folders"
    )


@dataclass
class DataSplits:
    """What a run trains, tunes and reports on, with the training split's statistics."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped_images: int = 0

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> list[int]:
        """Training images per class (as trained on: after any long-tail or noise variant)."""
        return torch.bincount(self.train.labels, minlength=len(self.class_names)).tolist()

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def check_splits(data: DataSplits, batch_size: int) -> list[str]:
    """Refuse data that cannot support a classification benchmark (one line, exit 2); return the
    warnings a run that can still mean something carries in its record."""
    names = data.class_names
    if len(names) < 2:
        raise UsageError(f"dataset {data.name} has {len(names)} class ({', '.join(names) or 'none'}); a "
                         "classification benchmark needs at least two (one folder per class)")
    counts = {split: torch.bincount(getattr(data, split).labels, minlength=len(names)).tolist()
              for split in ("train", "val", "test")}
    untrained = [names[c] for c, n in enumerate(counts["train"]) if n == 0]
    if untrained:
        raise UsageError(f"dataset {data.name}: class {', '.join(untrained)} has no training images; give "
                         "every class training images, or leave the class out")
    warnings = []
    for split in ("val", "test"):
        empty = [names[c] for c, n in enumerate(counts[split]) if n == 0]
        if empty:
            warnings.append(f"class {', '.join(empty)} has no {split} images: its {split} accuracy is "
                            "undefined (shown as 0) and macro averages count it as 0")
    if len(data.train) < batch_size:
        warnings.append(f"the training split has {len(data.train)} images, fewer than one batch of "
                        f"{batch_size}: each epoch is a single step")
    return warnings


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


def variant_name(config: RunConfig) -> str:
    """The dataset's display name, with its imbalance / noise variant so tables never mix them."""
    name = config.dataset
    if config.imbalance is not None:
        name += f"-lt{config.imbalance:g}"
    if config.label_noise:
        name += f"-{config.noise_type[:3]}{config.label_noise:g}" + ("-cleanval" if config.clean_val else "")
    return name


def prepare_splits(config: RunConfig) -> DataSplits:
    """Load the dataset and produce train / val / test for this run's seed.

    Validation is carved from train (unless the protocol fixes it) before the long-tail and
    label-noise variants touch the training split: val and test stay balanced, and test clean.
    Under label noise, val gets the same noise (rate and type) as train unless `clean_val`.
    """
    spec = get_dataset(config.dataset)
    root = config.data_path
    if root is not None and not root.exists():
        raise UsageError(f"--data-root {root} does not exist")
    request = DataRequest(root, config.image_size or spec.image_size, config.split_seed, config.classes,
                          config.skip_bad_images)
    source = spec.load(request)
    train, test = source.splits["train"], source.splits["test"]
    generator = torch.Generator().manual_seed(config.seed)
    if config.limit_train is not None and config.limit_train < len(train):
        train = train.subset(stratified_pick(train.labels, config.limit_train, generator))
    if config.limit_test is not None and config.limit_test < len(test):
        test = test.subset(stratified_pick(test.labels, config.limit_test, generator))
    if "val" in source.splits:
        val = source.splits["val"]
    else:
        n_val = round(len(train) * config.val_fraction)
        if n_val < 1 or n_val >= len(train):
            raise UsageError(
                f"--val-fraction {config.val_fraction} leaves {n_val} of {len(train)} training images for "
                "validation; choose a fraction that leaves at least one image on each side"
            )
        val_index = stratified_pick(train.labels, n_val, generator)
        val = train.subset(val_index)
        train = train.subset(complement(len(train), val_index))
    if config.imbalance is not None:
        train = long_tail(train, config.imbalance, generator)
    if config.label_noise:
        train = noisy_labels(train, config.label_noise, config.noise_type, generator)
        if not config.clean_val:  # a real user's validation labels are as noisy as their training labels
            val = noisy_labels(val, config.label_noise, config.noise_type, generator)
    mean, std = channel_stats(train.images)
    return DataSplits(variant_name(config), train, val, test, mean, std, source.skipped_images)
