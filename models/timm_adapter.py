"""`timm:<name>`: any timm model, sized from the dataset, with a small-image stem on request."""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

import torch
from torch import nn

from bench.errors import UsageError

def timm_names(pattern: str = "*") -> list[str]:
    import timm

    return [n for n in timm.list_models() if fnmatch.fnmatchcase(n, pattern)]


def check_name(name: str) -> None:
    names = timm_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f"closest: {', '.join(close)}" if close else "see 'bench models --timm PATTERN'"
        raise UsageError(f"unknown timm model {name!r}; {hint}")


def swap_stem_for_small_images(model: nn.Module) -> bool:
    """Replace an ImageNet stem (stride-2 7x7 conv + max-pool, or a stride-2 conv_stem) by a
    stride-1 3x3 conv, as CIFAR ResNets do. Returns False when the model has no such stem."""
    conv1, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if isinstance(conv1, nn.Conv2d) and pool is not None:  # ResNet family
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=conv1.bias is not None)
        model.maxpool = nn.Identity()
        return True
    stem = getattr(model, "conv_stem", None)
    if isinstance(stem, nn.Conv2d) and stem.stride != (1, 1):  # EfficientNet, MobileNet
        stem.stride = (1, 1)
        return True
    return False


def build_timm(
    name: str, input_shape: tuple[int, int, int], num_classes: int,
    stem: str = "auto", pretrained: bool = False, weights: str | None = None,
) -> tuple[nn.Module, str]:
    """Create the model and return it with the stem actually used ('cifar' or 'imagenet')."""
    import timm

    check_name(name)
    channels, height, _ = input_shape
    kwargs = dict(num_classes=num_classes, in_chans=channels, pretrained=pretrained)
    try:
        try:
            model = timm.create_model(name, img_size=height, **kwargs)
        except TypeError:  # the model has a fixed input size (CNNs adapt to any)
            model = timm.create_model(name, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        raise UsageError(
            f"could not load pretrained weights for timm:{name} ({type(exc).__name__}; offline?); "
            "download them where there is a network and pass --weights FILE, or drop --pretrained"
        ) from None
    wants_small = stem == "cifar" or (stem == "auto" and height <= 32)
    used = "imagenet"
    if wants_small:
        if swap_stem_for_small_images(model):
            used = "cifar"
        elif stem == "cifar":
            raise UsageError(f"--stem cifar: timm:{name} has no ResNet-like stem to swap; use --stem imagenet")
    if weights is not None:
        load_weights(model, Path(weights), name)
    return model, used


def load_weights(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise UsageError(f"--weights {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"--weights {path} is not a readable state dict ({type(exc).__name__})") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    if mismatched or missing:
        raise UsageError(
            f"--weights {path} does not fit timm:{name} here: {len(missing)} missing and "
            f"{len(mismatched)} mis-shaped tensors (e.g. {(missing + mismatched)[0]})"
        )
    model.load_state_dict(state, strict=False)
