"""Precision policy: the one place that decides fp32 / bf16 / fp16, autocast and memory format.

Every script (inference API, CLIs, ``train.py``, ``prune.py``, ``test.py``, benchmarks) goes through
these functions so that the rules are the same everywhere:

- ``fp32`` works everywhere; ``bf16`` works on the CPU and on GPUs that support it; ``fp16`` is GPU only.
- ``resolve_precision(name, device)`` validates *before any work*: an unknown name, or ``fp16`` on the
  CPU, raises ``PrecisionError`` (a ``ValueError``) with a one-line message. ``bf16`` on a CPU without
  native bf16 instructions (``avx512_bf16`` or ``amx_bf16``) prints one warning line on stderr and
  returns ``"fp32"``. ``"auto"`` (or ``None``) means ``default_inference_precision(device)``.
- Reduced precision is *mixed* precision: weights stay fp32, ``autocast(device, precision)`` runs the
  convolutions in bf16/fp16. The AdaCoF warp upcasts its weights and offsets to fp32 and accumulates in
  fp32, so reduced precision only touches the convolutions.
- ``prepare_model(model, device, precision)`` moves the model to the device, puts it in
  ``channels_last`` where that measures faster (see ``use_channels_last``) and returns it.
- ``tune_cpu_allocator()`` (called by ``prepare_model`` on the CPU) stops glibc from unmapping and
  re-faulting every large activation, which otherwise costs as much as the ReLUs and adds themselves.
- ``compile_model(model)`` is the opt-in ``torch.compile`` (with inductor freezing for inference).
- ``make_grad_scaler(device, precision)`` gives the loss scaler for training: enabled for fp16 only
  (bf16 has fp32's exponent range and needs none).

Typical inference::

    precision = resolve_precision(args.precision, device)      # before loading anything
    model = prepare_model(load_model(...), device, precision)
    with torch.inference_mode(), autocast(device, precision):
        out = model(frame0, frame2).float()

Typical training step::

    scaler = make_grad_scaler(device, precision)
    with autocast(device, precision):
        loss = criterion(model(f0, f2), gt)
    scaler.scale(loss).backward(); scaler.step(opt); scaler.update()

The command-line flag is ``--precision`` of ``cdfi.runtime.add_runtime_arguments`` (``test.py`` keeps
``fp32`` as its default so that its numbers stay comparable with the paper).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
"""Precision names accepted everywhere."""

CPU_PRECISIONS = ("fp32", "bf16")
"""The subset that runs on the CPU."""

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags that mean the CPU computes bf16 dot products natively (AVX512-BF16 or AMX)."""


BF16_DEFAULT_ON_CPU = True
"""Whether ``auto`` picks bf16 on CPUs with native bf16. Switched on after benchmarks/bf16_quality.py
passed on the project's shipped compressed AdaCoF checkpoint: on Middlebury every bf16 frame is at least
69 dB from its fp32 frame and the mean PSNR against ground truth moved by less than 0.001 dB."""


class PrecisionError(ValueError):
    """An unknown precision, or one the device cannot run (fp16 on the CPU)."""


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The native-bf16 flags this CPU reports (empty where /proc/cpuinfo is missing)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[-1].split()) & frozenset(CPU_BF16_FLAGS)
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16 (from /proc/cpuinfo, or torch's capability
    string on systems without it)."""
    if cpu_bf16_flags():
        return True
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "AMX" in capability or "BF16" in capability


def cuda_supports_bf16(device: torch.device | str = "cuda") -> bool:
    """True when the CUDA device computes bf16 natively (Ampere or newer)."""
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def default_inference_precision(device: torch.device | str) -> str:
    """The default of the inference CLIs: bf16 on CPUs with native bf16 (while ``BF16_DEFAULT_ON_CPU``
    is set), fp32 elsewhere. GPUs stay at fp32: on an H200, fp16 and bf16 were not faster end to end
    (docs/inference.md), so reduced precision there is opt-in."""
    kind = _device_type(device)
    if kind == "cpu":
        return "bf16" if BF16_DEFAULT_ON_CPU and cpu_has_native_bf16() else "fp32"
    return "fp32"


def resolve_precision(precision: str | None, device: torch.device | str, *, warn: bool = True) -> str:
    """Validate ``precision`` for ``device`` and return the one to use (``"fp32"``, ``"bf16"``, ``"fp16"``).

    ``None`` or ``"auto"`` give ``default_inference_precision(device)``. Raises ``PrecisionError``
    for an unknown name, for fp16 on the CPU, and for bf16 on a GPU without it. bf16 on a CPU without
    native support prints one warning line and falls back to fp32.
    """
    kind = _device_type(device)
    if precision is None or precision == "auto":
        return default_inference_precision(device)
    name = str(precision).lower()
    if name not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; choose one of auto, {', '.join(PRECISIONS)}")
    if kind == "cpu":
        if name == "fp16":
            raise PrecisionError("precision fp16 is not supported on the CPU; use fp32 or bf16")
        if name == "bf16" and not cpu_has_native_bf16():
            if warn:
                print("warning: this CPU has no native bf16 (avx512_bf16/amx_bf16); using fp32", file=sys.stderr)
            return "fp32"
        return name
    if kind == "cuda":
        if name == "bf16" and torch.cuda.is_available() and not cuda_supports_bf16(device):
            raise PrecisionError("precision bf16 needs a GPU of compute capability 8.0 or newer; use fp16 or fp32")
        return name
    if name != "fp32":
        raise PrecisionError(f"precision {name} is not supported on device type {kind!r}; use fp32")
    return name


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision, ``None`` for fp32."""
    if precision not in DTYPES:
        raise PrecisionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return None if precision == "fp32" else DTYPES[precision]


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """``torch.autocast`` for a resolved precision; a no-op for fp32 (and explicitly disables any
    enclosing autocast, so an fp32 region inside a bf16 one really is fp32)."""
    dtype = autocast_dtype(precision)
    kind = _device_type(device)
    if dtype is None:
        with torch.autocast(kind, enabled=False):
            yield
        return
    with torch.autocast(kind, dtype=dtype):
        yield


def use_channels_last(device: torch.device | str, precision: str) -> bool:
    """Whether ``prepare_model`` uses channels_last by default.

    On the CPU channels_last lets oneDNN skip layout reorders around every convolution; measured on
    the 2-core AVX512-BF16 machine it is faster in both fp32 and bf16 (see ``docs/speed.md``). On CUDA
    it pays off with tensor cores (fp16/bf16) and is left off for fp32.
    """
    kind = _device_type(device)
    if kind == "cpu":
        return True
    if kind == "cuda":
        return precision in ("fp16", "bf16")
    return False


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D tensor in channels_last (or contiguous) layout; other tensors are returned unchanged."""
    if x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


def tune_cpu_allocator(enable: bool = True) -> bool:
    """Keep freed memory inside the process (glibc ``mallopt``): no ``mmap`` for large blocks, no trimming.

    Every activation of a 640x480 forward pass is a fresh block of tens of MB. glibc serves blocks over
    32 MB with ``mmap`` and unmaps them on free, so each new tensor page-faults all its pages again; on
    this VM that made an out-of-place ReLU of a (1, 64, 480, 640) tensor take 70-90 ms instead of 2-16 ms.
    With this setting freed blocks are reused; the process keeps its peak footprint. ``enable=False``
    restores glibc's defaults. Returns False (and does nothing) where glibc is not the C library.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    values = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_MMAP_MAX: 0} if enable else _GLIBC_DEFAULTS
    return all(mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in values.items())


def prepare_model(
    model: nn.Module,
    device: torch.device | str,
    precision: str,
    *,
    channels_last: bool | None = None,
    tune_allocator: bool = True,
) -> nn.Module:
    """Move ``model`` to ``device`` (weights stay fp32: autocast does the casting) and set its memory
    format; ``channels_last=None`` means ``use_channels_last(device, precision)``. On the CPU it also
    calls ``tune_cpu_allocator()`` unless ``tune_allocator=False``. Returns the model."""
    autocast_dtype(precision)
    if channels_last is None:
        channels_last = use_channels_last(device, precision)
    if tune_allocator and _device_type(device) == "cpu":
        tune_cpu_allocator()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=torch.device(device), memory_format=fmt)


def compile_model(model: nn.Module, *, inference: bool = True) -> Callable[..., object]:
    """Opt-in ``torch.compile`` (inductor) of a prepared model; the first call per input size compiles
    (about a minute on 2 cores).

    For inference it compiles with ``freezing``: weights become constants, pre-cast to bf16 and pre-packed
    for oneDNN, and ReLUs fuse into the convolutions. That is what makes compilation pay on the CPU
    (compressed AdaCoF 640x480 bf16: about 1.6x over eager; without freezing it was slower than eager).
    A frozen model does not see later weight updates: compile again after loading new weights. Call the
    result under ``torch.inference_mode()`` (or ``no_grad``) and ``autocast``. ``inference=False``
    compiles for training (no freezing).
    """
    options = {"freezing": True} if inference else None
    return torch.compile(model, options=options)


def make_grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """Loss scaler for mixed-precision training: enabled for fp16 only (a pass-through otherwise)."""
    autocast_dtype(precision)
    kind = _device_type(device)
    enabled = precision == "fp16"
    if enabled and kind != "cuda":
        raise PrecisionError("fp16 training needs a CUDA device")
    return torch.amp.GradScaler(kind, enabled=enabled)


__all__ = [
    "CPU_PRECISIONS",
    "DTYPES",
    "PRECISIONS",
    "PrecisionError",
    "autocast",
    "autocast_dtype",
    "compile_model",
    "cpu_has_native_bf16",
    "cuda_supports_bf16",
    "default_inference_precision",
    "make_grad_scaler",
    "prepare_model",
    "resolve_precision",
    "to_memory_format",
    "tune_cpu_allocator",
    "use_channels_last",
]
