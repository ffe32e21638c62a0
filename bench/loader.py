"""Batches straight from tensors that hold a whole split: no DataLoader, no per-sample Python.

Batch order and augmentation draws depend only on (seed, epoch), never on the model or the
loss, so two runs with the same seed see exactly the same batches.
"""

from __future__ import annotations

from typing import Iterator

import torch

from bench.augment import draw_crop_flip, normalize, random_crop_flip
from bench.imagefolder import ImageSet


def place(images: torch.Tensor, device: torch.device, share: float = 0.5) -> torch.Tensor:
    """On the GPU when the split takes at most `share` of its free memory; otherwise in pinned
    host memory, from which each batch is gathered into pinned memory and copied asynchronously."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    return images.to(device) if images.nbytes <= share * free else images.pin_memory()


class TensorBatches:
    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        *,
        train: bool = False,
        seed: int = 0,
        crop_pad: int = 4,
        crop_fill: str = "zeros",
        alternate_flip: bool = False,
        channels_last: bool = False,
    ) -> None:
        self.device = device
        self.images = place(data.images, device)
        self.labels = data.labels.to(device)  # small: always on the device
        # Indexing a pinned tensor gives a pageable one, whose copy blocks the host: re-pin it.
        self.pin_batches = self.images.is_pinned()
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)
        self.train = train
        self.seed = seed
        self.crop_pad = crop_pad
        self.crop_fill = crop_fill
        # airbench's flips: each image's flip drawn once (from the seed), then inverted every other epoch
        self.first_flips = (torch.rand(len(self.labels), generator=torch.Generator().manual_seed(seed)) < 0.5
                            if alternate_flip else None)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Training drops a last partial batch (batch norm cannot train on one sample) unless
        # the split is smaller than one batch.
        self.drop_last = train and len(self.labels) > batch_size

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plain(self, n: int) -> torch.Tensor:
        """The first `n` images of the split as they are stored (no shuffle, no augmentation),
        normalised, on the device: what a model's data-dependent initialisation reads."""
        return self.normalized(self.images[:n].to(self.device))

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images on the device -> the model's input: standardised, in its memory format."""
        return normalize(images, self.mean, self.std).contiguous(memory_format=self.memory_format)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of `epoch`: a seeded permutation for training, identity otherwise."""
        if not self.train:
            return torch.arange(len(self.labels))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.labels), generator=generator)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cpu_order = self.order(epoch)
        host_order, order = cpu_order.to(self.images.device), cpu_order.to(self.device)
        augment = self.train and self.crop_pad > 0
        if augment:  # the whole epoch's draws, copied to the device once
            sizes = [min(self.batch_size, len(order) - i * self.batch_size) for i in range(len(self))]
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 50_000)
            offsets, flips = draw_crop_flip(sizes, self.crop_pad, generator)
            if self.first_flips is not None:  # the crop draws stay as they are: runs differ in flips only
                flips = self.first_flips[cpu_order[:len(flips)]] ^ bool(epoch % 2)
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        for i in range(len(self)):
            batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
            images = self.images[host_order[batch]]
            if self.pin_batches:
                images = images.pin_memory()
            images = images.to(self.device, non_blocking=True)
            if augment:
                images = random_crop_flip(images, self.crop_pad, offsets[:, batch], flips[batch],
                                          self.crop_fill)
            yield self.normalized(images), self.labels[order[batch]]
