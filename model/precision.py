"""How inference runs on its device: the memory format, the autocast dtype, and batch norm folded
into the convolutions. The ``Predictor`` applies it; ``--precision`` and the app choose it.

Why these choices (measured on 2-core Xeon and EPYC machines, issue 19):

- **Channels-last** on the CPU and CUDA: oneDNN's and cuDNN's convolutions are NHWC; an NCHW
  model pays a layout conversion around each one (ResNet-50-FPN backbone 1413 -> 1054 ms).
- **bfloat16 autocast on the CPU only where the processor computes in bfloat16** (AMX or
  AVX512-BF16): there the convolutions and matrix products run at several times the float32
  rate. Elsewhere oneDNN emulates bfloat16 through float32 and it is slower than float32, so
  ``auto`` keeps float32; ``bf16`` forced there still runs (the results are as correct) but warns.
  bfloat16 keeps float32's exponent range, so nothing overflows; what it loses is mantissa
  (8 bits), so the network's activations are rounded but its decisions are not: box decoding,
  scores, NMS, mask paste-back and keypoint decoding take float32 (the model casts the heads'
  outputs, and autocast leaves those ops alone), and RoIAlign accumulates in float32.
- **float16 autocast on CUDA** (tensor cores), as before this module; float32 on other devices.
- **Frozen batch norm folded into the preceding convolution** for inference: ``y = conv(x) * s + t``
  becomes ``conv'(x) + t`` with the weights scaled by ``s``, computed in float64 from the float32
  weights and stored as float32, once at load time, before any cast. It removes one pass over every
  feature map of the body (the ``addcmul`` after each convolution) and changes float32 results
  only by rounding. It changes the module tree and state dict, so it is for modules the Predictor
  owns, never for one the training loop keeps training.

Which precision runs is a run-time decision, so a model file never carries it, and
``ExecutionPolicy.description`` ("cpu · bf16") says what runs.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from model.backbone import FrozenBatchNorm2d

# what --precision accepts; "fp16" is what "auto" picks on CUDA
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# /proc/cpuinfo flags of native bfloat16 arithmetic (x86: AMX tiles, AVX512-BF16 dot products)
_NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def cpu_name() -> str:
    """The processor's model name from ``/proc/cpuinfo`` (Linux); "" where there is none."""
    try:
        lines = _CPUINFO.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this processor computes in bfloat16 natively (AMX or AVX512-BF16).

    The one place that detects it (tests mock this function): torch's own probes where this
    build has them, else the CPU flags in ``/proc/cpuinfo`` (Linux). Anywhere else (macOS,
    Windows without the probes, ARM) the answer is no, and ``auto`` stays in float32, which is
    never wrong, only slower.
    """
    probes = [getattr(torch._C._cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probe is not None and probe() for probe in probes):
        return True
    try:
        cpuinfo = _CPUINFO.read_text(errors="replace")
    except OSError:
        return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & _NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class ExecutionPolicy:
    """What inference on ``device`` runs as: autocast dtype (None: float32) and memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return _NAMES[self.autocast_dtype]

    @property
    def description(self) -> str:
        """What runs, for a status bar or a log line: ``"cpu · bf16"``, ``"cuda · fp16"``."""
        return f"{self.device.type} · {self.precision}"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this policy (a no-op for float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def choose_policy(
    device: torch.device, precision: str = "auto", *, channels_last: bool | None = None
) -> ExecutionPolicy:
    """The policy for ``device`` and a requested precision (one of ``PRECISIONS``).

    ``auto``: float16 on CUDA, bfloat16 on a CPU with native bfloat16, float32 elsewhere.
    ``bf16`` on a CPU without it runs, with a warning that it is slower than float32.
    ``channels_last`` None: on for CUDA and the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"
        elif device.type == "cpu" and cpu_has_native_bf16():
            precision = "bf16"
        else:
            precision = "fp32"
    elif precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "bfloat16 on a CPU without AMX or AVX512-BF16 is emulated and slower than float32 "
            "(precision 'auto' would run float32 here)",
            RuntimeWarning,
            stacklevel=2,
        )
    if channels_last is None:
        channels_last = device.type in ("cuda", "cpu")
    return ExecutionPolicy(device=device, autocast_dtype=_DTYPES[precision], channels_last=channels_last)


# Training on the CPU autocasts to bfloat16 by default only where that pays: measured on the
# 2-core AMX Xeon (2026-12-04, bench/results/2026-12-04-cpu-training-bf16.md), a ResNet-50-FPN step
# took 9.3 s in bfloat16 against 20.3 s in float32, while the small ResNet-18 / GroupNorm model
# took as long either way (0.41-0.44 s against 0.44-0.48 s: its narrow convolutions and norms are
# not where bfloat16 gains); the loss curves and the fine-tuned model's proposals agreed.
BF16_TRAINING_MIN_DEPTH = 50


def training_autocast(device: torch.device, backbone_depth: int) -> bool:
    """Whether training autocasts when ``--amp`` / ``--no-amp`` is not given: always on CUDA
    (float16 with a gradient scaler), on a CPU with native bfloat16 when the ResNet body is at
    least ``BF16_TRAINING_MIN_DEPTH`` deep, never elsewhere."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and backbone_depth >= BF16_TRAINING_MIN_DEPTH and cpu_has_native_bf16()


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every frozen batch norm (and eval-mode ``BatchNorm2d``) that directly follows a
    convolution into that convolution's weights and bias, in place; the norm becomes an
    ``nn.Identity``. For inference only: the folded model no longer trains as before.

    The pairs are found by structure, as this project's and torchvision's modules lay them out:
    consecutive children of an ``nn.Sequential`` (downsample branches, ``conv_norm``), and
    ``convK`` / ``bnK`` attributes (the ResNet stem and blocks, whose ``forward`` calls
    ``self.bnK(self.convK(x))``).

    Returns:
        The number of norms folded.
    """
    folded = 0
    for module in list(model.modules()):
        for conv_name, norm_name in _conv_norm_pairs(module):
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if isinstance(conv, nn.Conv2d) and _is_foldable_norm(norm):
                _fold_into(conv, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


def _conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    names = [name for name, _ in module.named_children()]
    if isinstance(module, nn.Sequential):
        return list(zip(names, names[1:]))
    return [(name, "bn" + name[4:]) for name in names if name.startswith("conv") and "bn" + name[4:] in names]


def _is_foldable_norm(norm: nn.Module) -> bool:
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    # a BatchNorm2d in eval mode normalises with its running statistics: a fixed affine map
    return isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None


def _fold_into(conv: nn.Conv2d, norm: nn.Module) -> None:
    """conv.weight *= s, conv.bias = conv.bias * s + t with s = w / sqrt(var + eps), t = b - mean * s."""
    weight: Tensor = conv.weight
    with torch.no_grad():
        gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        beta = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_var)
        scale = gamma.double() * (norm.running_var.double() + norm.eps).rsqrt()
        shift = beta.double() - norm.running_mean.double() * scale
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        folded = weight.double() * scale.view(-1, 1, 1, 1)
        # keep the weight's memory format (channels-last stays channels-last)
        weight.copy_(folded.to(weight.dtype))
        conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=weight.requires_grad)
