"""A speed-run network: airbench94's (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single
GPU", github.com/KellerJordan/cifar10-airbench), written as an ordinary bench model so that any
registered loss can train it.

What makes it fast to train, and how each part lives in bench:
- a first 2x2 conv whose weights whiten the image patches (the eigenvectors of their covariance,
  and their negatives), fixed, not trained: `Whitening`. bench's trainer sets it from the first
  5,000 training images, un-augmented, as airbench does (`init_from_data`, a hook any model may
  offer); used outside bench's trainer it sets itself from the first training batch instead. Its
  weights stay in its state, so a resumed run continues with the same ones. Its bias trains for
  the first 3 epochs only (`train_epochs` on the parameter, which the trainer honours): then no
  gradient flows through the first layer at all, which is airbench's "progressive freezing";
- three conv groups (conv, max-pool, batch norm, GELU, conv, batch norm, GELU) of widths
  64-256-256 whose 3x3 convs start as identities (dirac init, an implicit residual);
- batch norms with a fixed scale of 1, a fast running-statistics momentum and a 64x learning rate
  on their biases: each bias carries `lr_scale = 64`, which `bench.train.make_optimizer` turns
  into a parameter group (weight decay divided by 64, so the decay per step is unchanged);
- a global max-pool and a bias-free linear head scaled by 1/9.
The recipe around it (batch 1024, Nesterov SGD, label smoothing 0.2, short warm-up then linear
decay, translate-2 augmentation with alternating flips, lookahead, test-time augmentation) is a
set of run settings: see README (`--crop-fill reflect` pads the crops as airbench does).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models import register_model

BN_LR_SCALE = 64.0  # airbench's bias_scaler
WHITENING_EPS = 5e-4
WHITENING_IMAGES = 5000  # airbench: the first 5,000 training images
WHITENING_BIAS_EPOCHS = 3  # airbench: whiten_bias_train_steps = 3 epochs of steps


class Whitening(nn.Conv2d):
    """A k x k conv (no padding) whose 2 * C * k * k filters whiten the input's patches: each
    eigenvector of the patch covariance scaled by 1/sqrt(eigenvalue + eps), and its negative.
    Set by bench's trainer from the first `data_init_images` training images (`init_from_data`),
    else from the first batch seen in training mode; its weights are never trained, its bias for
    the first `WHITENING_BIAS_EPOCHS` epochs."""

    data_init_images = WHITENING_IMAGES

    def __init__(self, channels: int, kernel_size: int = 2) -> None:
        super().__init__(channels, 2 * channels * kernel_size ** 2, kernel_size, padding=0, bias=True)
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)
        self.bias.train_epochs = WHITENING_BIAS_EPOCHS
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))  # travels in checkpoints
        self._ready = False  # the flag on the host: reading the buffer each step would sync a GPU

    @torch.no_grad()
    def set_from(self, images: torch.Tensor) -> None:
        with torch.autocast(images.device.type, enabled=False):  # a bf16 covariance would whiten badly
            self._set_from(images)

    init_from_data = set_from  # bench's trainer calls it once, before the first step of a fresh run

    def _set_from(self, images: torch.Tensor) -> None:
        c, (h, w) = images.shape[1], self.kernel_size
        covariance, count = 0.0, 0
        for chunk in images.split(500):  # the patches of 5,000 images at once would take GBs
            patches = chunk.float().unfold(2, h, 1).unfold(3, w, 1)  # [N, C, H', W', h, w]
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * h * w)  # one row a patch
            covariance, count = covariance + patches.T @ patches, count + len(patches)
        covariance = covariance / count
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + WHITENING_EPS)[:, None])
        filters = filters.reshape(-1, c, h, w)
        self.weight.copy_(torch.cat((filters, -filters)).to(self.weight.dtype))
        self.initialized.fill_(True)
        self._ready = True

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = bool(self.initialized)  # one read, when a checkpoint is loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._ready:
            self.set_from(x)
        return super().forward(x)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """airbench's batch norm: scale fixed at 1, bias trained at 64x the lr, running statistics
    updated with momentum 0.4 (torch's convention; airbench writes 0.6), eps 1e-12."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    norm.bias.lr_scale = BN_LR_SCALE
    return norm


def dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])  # the first c_in filters pass their input through
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(dirac_conv(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out), nn.GELU(),
                         dirac_conv(c_out, c_out), batch_norm(c_out), nn.GELU())


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@register_model("airbench", convolutional=True)
def airbench(input_shape: tuple[int, int, int], num_classes: int, widths=(64, 256, 256)) -> nn.Module:
    """airbench94's network (whitening conv, 3 dirac-init conv groups, 64x BN-bias lr), 2 M params."""
    channels, height, width = input_shape
    if min(height, width) < 16:
        raise ValueError(f"airbench needs inputs of at least 16x16 pixels, got {height}x{width}")
    whitening = Whitening(channels)
    layers: list[nn.Module] = [whitening, nn.GELU()]
    c_in = whitening.out_channels
    for c_out in widths:
        layers.append(ConvGroup(c_in, c_out))
        c_in = c_out
    # airbench: MaxPool2d(3) on the 3x3 map of a 32 px image, i.e. a global max-pool at any size
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes, bias=False), Scale(1 / 9)]
    return nn.Sequential(*layers)
