"""Which precision a run computes in, and why: the one place `--precision auto` is decided.

On a GPU with bf16, auto is bf16 autocast. On the CPU, bf16 pays only where the processor has
native bf16 arithmetic (AVX512-BF16 or AMX) *and* the model's time goes into matrix products:
measured on a 2-core AVX512-BF16 EPYC, mlp2 (1.6 M MACs per image) trains 2.0x faster in bf16 and
cnn (38.6 M) 1.5x, while cnn-tiny (0.16 M MACs) is 0.9x, because its time is max-pool, ReLU and the
casts autocast adds, not convolution. Without native bf16 the CPU emulates it, slower than fp32.
A loss whose value or gradient moves under bf16-rounded logits (`LossSpec.bf16 = False`, or a
user's loss that fails `bf16_sensitivity`) keeps fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BF16_MIN_MACS = 1_000_000  # forward MACs per image below which bf16 autocast does not pay on a CPU
# bf16_sensitivity limits: every built-in loss but exponential and ghm-c stays below a tenth of them
BF16_MAX_LOSS_ERROR = 2e-3
BF16_MAX_GRAD_ERROR = 0.1


# autocast dtype -> the name records use
NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Precision:
    amp_dtype: torch.dtype | None  # None: plain fp32
    reason: str

    @property
    def name(self) -> str:
        return NAMES[self.amp_dtype]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles, as torch's own CPU capability checks report them."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def choose_precision(requested: str, device: torch.device, macs: int | None, loss_bf16: bool) -> Precision:
    """The autocast dtype for `requested` (auto, fp32, bf16, fp16) and the reason, as the record states it.

    `macs` is the model's forward multiply-accumulates per image (None: unknown, bf16 allowed)."""
    explicit = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if requested != "auto":
        return Precision(explicit[requested], f"--precision {requested}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "auto: bf16 on a GPU that supports it")
        return Precision(None, "auto: this GPU has no bf16")
    if not loss_bf16:
        return Precision(None, "auto: the loss is sensitive to bf16-rounded logits, so fp32")
    if not cpu_has_native_bf16():
        return Precision(None, "auto: this CPU has no native bf16 (AVX512-BF16 or AMX), so fp32")
    if macs is not None and macs < BF16_MIN_MACS:
        return Precision(None, f"auto: {macs / 1e6:.2f} M MACs per image is below {BF16_MIN_MACS / 1e6:g} "
                               "M, where bf16 does not pay on a CPU, so fp32")
    return Precision(torch.bfloat16, "auto: bf16, native on this CPU")


def bf16_sensitivity(criterion: nn.Module, num_classes: int, scale: float = 10.0) -> tuple[float, float]:
    """Relative change of a loss's value and gradient when its logits are rounded to bf16, as
    autocast hands them over (losses compute in float32 after that): (value error, gradient error).

    Logits are N(0, scale^2), a trained network's range. A stateful loss keeps its state."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(512, num_classes, generator=generator) * scale
    targets = torch.randint(0, num_classes, (512,), generator=generator)
    state = {k: v.clone() for k, v in criterion.state_dict().items()}
    device = next((b.device for b in criterion.buffers()), torch.device("cpu"))
    results = []
    for z in (logits, logits.bfloat16().float()):
        z = z.to(device).requires_grad_(True)
        value = criterion(z, targets.to(device))
        results.append((value.detach().float(), torch.autograd.grad(value, z)[0].float()))
        criterion.load_state_dict(state)
    (v32, g32), (v16, g16) = results
    value_error = ((v16 - v32).abs() / v32.abs().clamp_min(1e-12)).item()
    grad_error = ((g16 - g32).norm() / g32.norm().clamp_min(1e-12)).item()
    return value_error, grad_error


def bf16_safe(criterion: nn.Module, num_classes: int) -> bool:
    value_error, grad_error = bf16_sensitivity(criterion, num_classes)
    return value_error <= BF16_MAX_LOSS_ERROR and grad_error <= BF16_MAX_GRAD_ERROR
