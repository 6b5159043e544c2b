"""Public entry point of the AdaCoF warp: input validation, dtype policy and backend dispatch.

Backends: ``"cpu"`` (compiled C++/OpenMP, kernels/adacof_cpu.cpp), ``"cupy"`` (CUDA kernels of
kernels/adacof_cuda.cu through CuPy), ``"reference"`` (pure PyTorch, any device) and ``"cuda_shim"``
(the CUDA kernels run on the CPU thread by thread; for tests). ``"auto"`` picks ``cupy`` for CUDA
tensors and ``cpu`` for CPU tensors, and falls back to the reference with one warning when the
fast backend cannot be used.

Dtypes: float16, bfloat16, float32 and float64 inputs are accepted. Weights and offsets are upcast
to float32 (float64 if any argument is float64) and all accumulation happens in that precision, with
autocast disabled inside the warp; the output has the input's dtype.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from cupy_module import cpu, cuda
from cupy_module.build import BuildError, cpu_library
from cupy_module.reference import SAMPLING_RULES, adacof_warp_reference

BACKENDS = ("auto", "cpu", "cupy", "reference", "cuda_shim")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_warned: set[str] = set()


def _validate(
    input: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    sampling: str,
    legacy_grad: bool = False,
    backend: str = "auto",
) -> None:
    """Raise a one-line ValueError for anything the kernels cannot take."""
    if not isinstance(sampling, str) or sampling not in SAMPLING_RULES:
        raise ValueError(f"adacof_warp: unknown sampling rule {sampling!r}; expected one of {SAMPLING_RULES}")
    if not isinstance(legacy_grad, bool):
        raise ValueError(f"adacof_warp: legacy_grad must be True or False, got {legacy_grad!r}")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"adacof_warp: unknown backend {backend!r}; expected one of {BACKENDS}")
    for name, t in (("input", input), ("weight", weight), ("offset_i", offset_i), ("offset_j", offset_j)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"adacof_warp: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"adacof_warp: {name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"adacof_warp: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"adacof_warp: {name} is empty (shape {tuple(t.shape)})")
    if not (weight.shape == offset_i.shape == offset_j.shape):
        raise ValueError(
            "adacof_warp: weight, offset_i and offset_j must have one shape, got "
            f"{tuple(weight.shape)}, {tuple(offset_i.shape)}, {tuple(offset_j.shape)}"
        )
    if isinstance(dilation, bool) or not isinstance(dilation, numbers.Integral) or dilation < 1:
        raise ValueError(f"adacof_warp: dilation must be a positive integer, got {dilation!r}")
    n, taps, h, w = weight.shape
    f = round(taps**0.5)
    if f * f != taps:
        raise ValueError(f"adacof_warp: weight has {taps} channels, which is not a square kernel size F*F")
    pad = (f - 1) * int(dilation)
    if input.shape[0] != n or input.shape[2] != h + pad or input.shape[3] != w + pad:
        raise ValueError(
            f"adacof_warp: input of shape {tuple(input.shape)} does not match weights {tuple(weight.shape)} "
            f"with F={f}, dilation={dilation}: expected (N={n}, C, {h + pad}, {w + pad})"
        )
    devices = {t.device for t in (input, weight, offset_i, offset_j)}
    if len(devices) != 1:
        raise ValueError(f"adacof_warp: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = input.device.type
    if backend in ("cpu", "cuda_shim") and device != "cpu":
        raise ValueError(f"adacof_warp: backend {backend!r} needs CPU tensors, got {device}")
    if backend == "cupy" and device != "cuda":
        raise ValueError(f"adacof_warp: backend 'cupy' needs CUDA tensors, got {device}")


def _fallback(reason: str) -> str:
    """Warn once per reason that the slow reference is used instead of a fast backend."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"adacof_warp: {reason}; using the slow PyTorch reference", RuntimeWarning, stacklevel=4)
    return "reference"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend ``adacof_warp`` will run for ``backend`` on ``device``."""
    if backend == "auto":
        if device.type == "cuda":
            return "cupy" if cuda.cupy_available() else _fallback("CuPy with a CUDA device is not available")
        if device.type == "cpu":
            try:
                cpu_library()
            except BuildError as exc:
                return _fallback(f"the CPU warp library cannot be built ({exc})")
            return "cpu"
        return "reference"
    if backend == "cupy" and not cuda.cupy_available():
        raise RuntimeError("adacof_warp: backend 'cupy' asked for, but CuPy with a CUDA device is not available")
    return backend


def _reference_forward(
    input: torch.Tensor, weight: torch.Tensor, oi: torch.Tensor, oj: torch.Tensor, dilation: int, sampling: str
) -> torch.Tensor:
    return adacof_warp_reference(input.to(weight.dtype), weight, oi, oj, dilation, sampling)


def _reference_backward(
    input: torch.Tensor,
    weight: torch.Tensor,
    oi: torch.Tensor,
    oj: torch.Tensor,
    grad_output: torch.Tensor,
    dilation: int,
    sampling: str,
    need_input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the reference by recomputing it under autograd."""
    with torch.enable_grad():
        x = input.detach().to(weight.dtype).requires_grad_(need_input_grad)
        params = [t.detach().requires_grad_() for t in (weight, oi, oj)]
        out = adacof_warp_reference(x, *params, dilation, sampling)
        leaves = [x, *params] if need_input_grad else params
        grads = torch.autograd.grad(out, leaves, grad_output.to(weight.dtype))
    if need_input_grad:
        return grads[0], grads[1], grads[2], grads[3]
    return None, grads[0], grads[1], grads[2]


def _forward(backend: str, *args: Any) -> torch.Tensor:
    if backend == "cupy":
        return cuda.forward(cuda.cupy_runner(args[0].device), *args)
    if backend == "cuda_shim":
        return cuda.forward(cuda.shim_run, *args, block=32, max_grid=7)
    return _reference_forward(*args)


def _backward(backend: str, *args: Any) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    if backend == "cpu":
        return cpu.backward(*args)
    if backend == "cupy":
        return cuda.backward(cuda.cupy_runner(args[0].device), *args)
    if backend == "cuda_shim":
        return cuda.backward(cuda.shim_run, *args, block=32, max_grid=7)
    return _reference_backward(*args)


class _AdaCoFFunction(torch.autograd.Function):
    """Autograd wrapper around a backend's explicit forward and backward kernels.

    The CPU backend packs the input into its kernels' channels-last layout once and keeps that copy for
    the backward (in place of the input), so the backward repacks nothing.
    """

    @staticmethod
    def forward(
        ctx: Any,
        input: torch.Tensor,
        weight: torch.Tensor,
        offset_i: torch.Tensor,
        offset_j: torch.Tensor,
        dilation: int,
        sampling: str,
        legacy_grad: bool,
        backend: str,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        ctx.config = (dilation, sampling, legacy_grad, backend)
        ctx.input_dtype = input.dtype
        if backend == "cpu":
            # Weights and offsets as given (bf16 in channels_last layout under autocast), saved so; the
            # float32 kernel reads that layout and upcasts tile by tile, anything else is converted here.
            x = cpu.pack(input, dtype)
            ctx.save_for_backward(x, weight, offset_i, offset_j)
            weight, offset_i, offset_j = (cpu.operand(t, dtype) for t in (weight, offset_i, offset_j))
            return cpu.forward(x, input.shape[1], weight, offset_i, offset_j, dilation, sampling)
        ctx.save_for_backward(input, weight, offset_i, offset_j)
        return _forward(backend, input, weight, offset_i, offset_j, dilation, sampling)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        input, weight, offset_i, offset_j = ctx.saved_tensors  # the CPU backend saves its packed input
        dilation, sampling, legacy_grad, backend = ctx.config
        need_input = bool(ctx.needs_input_grad[0])
        if backend == "cpu":  # weights and offsets as the forward got them
            weight, offset_i, offset_j = (cpu.contiguous_as(t, input.dtype) for t in (weight, offset_i, offset_j))
        if legacy_grad:
            # The published backward: no input gradient, and weight/offset gradients that only see
            # the first three channels, i.e. the true ones of a warp of those channels alone.
            c = grad_output.shape[1]
            c3 = min(3, c)
            first = input[:, :c3] if backend != "cpu" else cpu.pack(input[..., :c3].permute(0, 3, 1, 2), weight.dtype)
            _, gw, gi, gj = _backward(
                backend, first, weight, offset_i, offset_j, grad_output[:, :c3], dilation, sampling, False
            )
            shape = (input.shape[0], c, *input.shape[1:3]) if backend == "cpu" else input.shape
            gin = torch.zeros(shape, dtype=ctx.input_dtype, device=weight.device) if need_input else None
        else:
            gin, gw, gi, gj = _backward(
                backend, input, weight, offset_i, offset_j, grad_output, dilation, sampling, need_input
            )
        if gin is not None:
            gin = gin.to(ctx.input_dtype)
        return gin, gw, gi, gj, None, None, None, None, None


class _WarpManyCPU(torch.autograd.Function):
    """The CPU warp of several inputs with one kernel set, with true gradients (not ``legacy_grad``).

    The inputs are packed once, straight into the kernel's channels-last layout (no concatenated copy
    first), and that buffer is kept for the backward. The output is one (N, sum C_k, H, W) tensor,
    channels_last when every input is (written so by the kernel), else planar. The backward reads the
    output gradient in whichever of those layouts it comes, writes the weight and offset gradients in
    their arguments' layouts and dtypes (``cpu.backward``), and hands each input its slice of the
    kernel's channels-last input gradient: a view for a float32 channels_last input, else a copy in
    the input's layout and dtype.
    """

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        offset_i: torch.Tensor,
        offset_j: torch.Tensor,
        dilation: int,
        sampling: str,
        dtype: torch.dtype,
        *inputs: torch.Tensor,
    ) -> torch.Tensor:
        channels_last = dtype == torch.float32 and all(_is_channels_last(t) for t in inputs)
        x = cpu.pack_many(inputs, dtype)
        ctx.save_for_backward(x, weight, offset_i, offset_j)
        ctx.config = (dilation, sampling)
        ctx.inputs = [(t.shape[1], t.dtype, _is_channels_last(t)) for t in inputs]
        operands = (cpu.operand(t, dtype) for t in (weight, offset_i, offset_j))
        channels = sum(t.shape[1] for t in inputs)
        return cpu.forward(x, channels, *operands, dilation, sampling, channels_last=channels_last)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, offset_i, offset_j = ctx.saved_tensors
        dilation, sampling = ctx.config
        wanted = ctx.needs_input_grad[6:]
        gin, gw, gi, gj = cpu.backward(
            x, weight, offset_i, offset_j, grad_output, dilation, sampling, any(wanted), packed_input_grad=True
        )
        input_grads: list[torch.Tensor | None] = []
        start = 0
        for (c, dtype, channels_last), want in zip(ctx.inputs, wanted, strict=True):
            if not want or gin is None:
                input_grads.append(None)
            elif channels_last:
                input_grads.append(gin[..., start : start + c].permute(0, 3, 1, 2).to(dtype))
            else:
                input_grads.append(cpu._planar(gin, c, start).to(dtype))
            start += c
        return gw, gi, gj, None, None, None, *input_grads


def adacof_warp(
    input: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    *,
    sampling: str = "trunc",
    legacy_grad: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Warp ``input`` (N, C, H+2p, W+2p) with per-pixel kernels into (N, C, H, W).

    ``weight``, ``offset_i`` (vertical) and ``offset_j`` (horizontal) are (N, F*F, H, W) with
    2p = (F - 1) * dilation. ``sampling="trunc"`` is the published rule (needed by published
    checkpoints), ``"floor"`` true bilinear sampling. Gradients are the true gradients of the forward
    pass unless ``legacy_grad``, which reproduces the published backward (see cupy_module/README.md).
    The output has the input's dtype; computation is in float32 (float64 for float64 arguments).
    """
    _validate(input, weight, offset_i, offset_j, dilation, sampling, legacy_grad, backend)
    dilation = int(dilation)
    name = resolve_backend(backend, input.device)
    tensors = (input, weight, offset_i, offset_j)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    with torch.autocast(device_type=input.device.type, enabled=False):
        if name == "cpu" and not legacy_grad:  # reads weights and offsets in their layouts (see _WarpManyCPU)
            out = _WarpManyCPU.apply(weight, offset_i, offset_j, dilation, sampling, dtype, input)
        elif name == "cpu":  # converts weights and offsets itself (autograd casts their gradients back)
            out = _AdaCoFFunction.apply(input, weight, offset_i, offset_j, dilation, sampling, legacy_grad, name, dtype)
        else:
            w, oi, oj = (t.to(dtype).contiguous() for t in (weight, offset_i, offset_j))
            if name == "reference" and not legacy_grad:
                out = adacof_warp_reference(input.to(dtype), w, oi, oj, dilation, sampling)
            else:
                out = _AdaCoFFunction.apply(input, w, oi, oj, dilation, sampling, legacy_grad, name, dtype)
    return out.to(input.dtype)


def _warp_many_cpu(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    sampling: str,
) -> list[torch.Tensor]:
    """``adacof_warp_many`` on the CPU when no gradient is needed: each input is copied once, straight
    into the kernel's packed layout, and the weights and offsets are read as ``adacof_warp`` reads them."""
    tensors = (*inputs, weight, offset_i, offset_j)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    weight, offset_i, offset_j = (cpu.operand(t, dtype) for t in (weight, offset_i, offset_j))
    channels = [t.shape[1] for t in inputs]
    # Output in the inputs' memory format: channels_last inputs (a channels_last model's tensors) get
    # channels_last outputs, written so by the kernel, which the next convolutions read without a copy.
    channels_last = dtype == torch.float32 and all(_is_channels_last(t) for t in inputs)
    x = cpu.pack_many(inputs, dtype)
    out = cpu.forward(x, sum(channels), weight, offset_i, offset_j, dilation, sampling, channels_last=channels_last)
    return [p.to(t.dtype) for p, t in zip(torch.split(out, channels, dim=1), inputs, strict=True)]


def _is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is in channels_last memory format and not also plain contiguous."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def adacof_warp_many(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    **options: Any,
) -> list[torch.Tensor]:
    """Warp several (N, C_k, H+2p, W+2p) tensors with the same kernels in one pass.

    Equivalent to ``[adacof_warp(x, ...) for x in inputs]``, but the tap geometry is computed once for
    all channels, and on the CPU the channels are gathered straight into the kernel's channels-last
    layout (one copy instead of two). Inputs are promoted to one dtype; each output keeps its own.
    """
    if not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise ValueError("adacof_warp_many: inputs must be a non-empty sequence of tensors")
    for k, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"adacof_warp_many: inputs[{k}] must be a 4-D tensor")
        if t.shape[0] != inputs[0].shape[0] or t.shape[2:] != inputs[0].shape[2:]:
            raise ValueError(
                f"adacof_warp_many: inputs[{k}] has shape {tuple(t.shape)}, which does not match "
                f"inputs[0] {tuple(inputs[0].shape)} in N, H or W"
            )
    if len(inputs) == 1:
        return [adacof_warp(inputs[0], weight, offset_i, offset_j, dilation, **options)]
    dtype = inputs[0].dtype
    for t in inputs[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    tensors = (*inputs, weight, offset_i, offset_j)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        options = {"sampling": "trunc", "legacy_grad": False, "backend": "auto", **options}
        for t in inputs:
            _validate(t, weight, offset_i, offset_j, dilation, **options)
        if resolve_backend(options["backend"], inputs[0].device) == "cpu":
            return _warp_many_cpu(inputs, weight, offset_i, offset_j, int(dilation), options["sampling"])
    else:
        options = {"sampling": "trunc", "legacy_grad": False, "backend": "auto", **options}
        for t in inputs:
            _validate(t, weight, offset_i, offset_j, dilation, **options)
        if not options["legacy_grad"] and resolve_backend(options["backend"], inputs[0].device) == "cpu":
            # One pack of all inputs into the kernel's layout (no concatenated copy), gradients in the
            # arguments' layouts; see _WarpManyCPU.
            dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
            with torch.autocast(device_type="cpu", enabled=False):
                out = _WarpManyCPU.apply(weight, offset_i, offset_j, int(dilation), options["sampling"], dtype, *inputs)
            parts = torch.split(out, [t.shape[1] for t in inputs], dim=1)
            return [p.to(t.dtype) for p, t in zip(parts, inputs, strict=True)]
    stacked = torch.cat([t.to(dtype).permute(0, 2, 3, 1) for t in inputs], dim=3).permute(0, 3, 1, 2)
    out = adacof_warp(stacked, weight, offset_i, offset_j, dilation, **options)
    parts = torch.split(out, [t.shape[1] for t in inputs], dim=1)
    return [p.to(t.dtype) for p, t in zip(parts, inputs, strict=True)]
