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


def swap_stem_for_small_images(model: nn.Module, patchify: bool = False) -> bool:
    """Replace an ImageNet stem (stride-2 7x7 conv + max-pool, a stride-2 conv_stem, and with
    `patchify` a ConvNeXt-style patchify conv) by a stride-1 3x3 conv, as CIFAR ResNets do.
    Returns False when the model has no such stem (vision transformers get smaller patches at
    creation instead)."""
    conv1, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if isinstance(conv1, nn.Conv2d) and pool is not None:  # ResNet family
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=conv1.bias is not None)
        model.maxpool = nn.Identity()
        return True
    stem = getattr(model, "conv_stem", None)
    if isinstance(stem, nn.Conv2d) and stem.stride != (1, 1):  # EfficientNet, MobileNet
        stem.stride = (1, 1)
        return True
    stem = getattr(model, "stem", None)
    first = stem[0] if patchify and isinstance(stem, nn.Sequential) and len(stem) else None
    # ConvNeXt
    if isinstance(first, nn.Conv2d) and first.stride != (1, 1) and first.kernel_size == first.stride:
        stem[0] = nn.Conv2d(first.in_channels, first.out_channels, 3, 1, 1, bias=first.bias is not None)
        return True
    return False


def small_patch_size(model: nn.Module, height: int) -> int | None:
    """For a patch-embedding transformer whose patches leave fewer than 8 x 8 tokens at this
    height: the patch size that gives 8 x 8 (a 16 px patch makes 2 x 2 tokens of a CIFAR image)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return None
    wanted = max(1, height // 8)
    return wanted if tuple(patch)[0] > wanted else None


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
            f"could not load pretrained weights for timm:{name} ({type(exc).__name__}; offline?); download "
            "them where there is a network and pass --weights FILE, or drop --pretrained"
        ) from None
    wants_small = stem == "cifar" or (stem == "auto" and height <= 32)
    used = "imagenet"
    if wants_small:
        # Patch stems change only on request: at 32 px they cost 10-16x the compute, and at short
        # budgets they trained worse (README); `auto` keeps what it has always built.
        patch = small_patch_size(model, height) if stem == "cifar" else None
        if patch is not None:
            model = timm.create_model(name, img_size=height, patch_size=patch, **kwargs)
            used = "cifar"
        elif swap_stem_for_small_images(model, patchify=stem == "cifar"):
            used = "cifar"
        elif stem == "cifar":
            raise UsageError(
                f"--stem cifar: timm:{name} has no stem bench knows how to shrink (ResNet, "
                "EfficientNet/MobileNet, ConvNeXt, ViT patches); use --stem imagenet"
            )
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
            f"--weights {path} does not fit timm:{name} here: {len(missing)} missing and {len(mismatched)} "
            f"mis-shaped tensors (e.g. {(missing + mismatched)[0]})"
        )
    model.load_state_dict(state, strict=False)
