"""Convolutional models: a small batch-norm CNN and the seed report's tiny ConvNet."""

from __future__ import annotations

from torch import nn

from bench.models import register_model


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@register_model("cnn", convolutional=True)
def cnn(input_shape: tuple[int, int, int], num_classes: int, widths=(32, 64, 128)) -> nn.Module:
    """Small CNN: three stages of two 3x3 conv-BN-ReLU and a 2x2 max-pool, global pool, linear."""
    layers: list[nn.Module] = []
    c_in = input_shape[0]
    for width in widths:
        layers += [conv_bn(c_in, width), conv_bn(width, width), nn.MaxPool2d(2)]
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


@register_model("cnn-tiny", convolutional=True)
def cnn_tiny(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The seed report's CIFAR-10 ConvNet: conv 3->4, pool, conv 4->8, pool, fc ->32 -> classes."""
    channels, height, width = input_shape
    # Two unpadded 3x3 convs, each followed by a 2x2 pool: 32 px -> 6 px, so 8 * 6 * 6 = 288.
    out_h, out_w = ((height - 2) // 2 - 2) // 2, ((width - 2) // 2 - 2) // 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"cnn-tiny needs inputs of at least 10x10 pixels, got {height}x{width}")
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * out_h * out_w, 32),
        nn.ReLU(inplace=True),
        nn.Linear(32, num_classes),
    )
