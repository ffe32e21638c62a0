"""Harder variants of a training split: long-tailed class counts and noisy labels.

Both touch the training split only (validation and test stay balanced and clean) and are
deterministic per seed.
"""

from __future__ import annotations

import torch

from bench.errors import UsageError
from bench.imagefolder import ImageSet

# The usual CIFAR-10 asymmetric noise (Patrini et al. 2017): visually similar classes swap.
CIFAR10_PAIR_FLIPS = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}


def long_tail_counts(largest: int, num_classes: int, ratio: float) -> list[int]:
    """Exponential profile (Cui et al. 2019): n_c = largest * ratio^(-c / (C - 1))."""
    return [max(1, int(largest * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def long_tail(train: ImageSet, ratio: float, generator: torch.Generator) -> ImageSet:
    """Keep n_c images of class c so that largest / smallest = `ratio` (class 0 keeps the most)."""
    num_classes = len(train.class_names)
    counts = torch.bincount(train.labels, minlength=num_classes)
    targets = long_tail_counts(int(counts.min()), num_classes, ratio)
    keep = []
    for c, n in enumerate(targets):
        members = torch.nonzero(train.labels == c).squeeze(1)
        keep.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return train.subset(torch.cat(keep).sort().values)


def noisy_labels(train: ImageSet, rate: float, kind: str, generator: torch.Generator) -> ImageSet:
    """Flip a fraction `rate` of training labels.

    symmetric: exactly round(rate * N) samples move to a uniformly drawn *other* class.
    asymmetric: in each class of CIFAR10_PAIR_FLIPS, round(rate * n_c) samples move to its pair.
    """
    labels = train.labels.clone()
    num_classes = len(train.class_names)
    if kind == "symmetric":
        flip = torch.randperm(len(labels), generator=generator)[: round(rate * len(labels))]
        shift = torch.randint(1, num_classes, (len(flip),), generator=generator)
        labels[flip] = (labels[flip] + shift) % num_classes
    else:
        missing = sorted({*CIFAR10_PAIR_FLIPS, *CIFAR10_PAIR_FLIPS.values()} - set(train.class_names))
        if missing:
            raise UsageError(
                "--noise-type asymmetric flips CIFAR-10 class pairs, but this dataset lacks "
                f"{', '.join(missing)}; use --noise-type symmetric"
            )
        for source, target in CIFAR10_PAIR_FLIPS.items():
            members = torch.nonzero(train.labels == train.class_names.index(source)).squeeze(1)
            flip = members[torch.randperm(len(members), generator=generator)[: round(rate * len(members))]]
            labels[flip] = train.class_names.index(target)
    return ImageSet(train.images, labels, train.class_names)
