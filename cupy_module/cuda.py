"""CUDA backend of the AdaCoF warp: the kernels of kernels/adacof_cuda.cu, launched through CuPy.

The launch logic (dtype choice, buffers, grid, argument list) is written once against a small
"runner" interface. The CuPy runner compiles the source with ``cupy.RawModule`` and launches on
PyTorch's current stream; the shim runner launches the same kernels compiled for the host
(kernels/host_shim.cpp), which is how the kernels are tested without a GPU. Importing this module
never needs CuPy.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from functools import cache

import torch

from cupy_module.build import CUDA_SOURCE, shim_library

# A kernel argument: ("ptr", tensor), ("i64", int) or ("i32", int).
Arg = tuple[str, object]
Runner = Callable[[str, int, int, Sequence[Arg]], None]

BLOCK = 256
MAX_GRID = 1 << 20
CHUNK = 8  # ADACOF_CHUNK in adacof_cuda.cu: channels per forward thread
BACKWARD_BLOCK = 256  # ADACOF_BACKWARD_BLOCK in adacof_cuda.cu: the backward's largest block


def _suffix_and_input(input: torch.Tensor, dtype: torch.dtype) -> tuple[str, torch.Tensor]:
    """Kernel variant and the input it reads: fp16 is read as is, anything else in ``dtype``."""
    if dtype == torch.float64:
        return "f64", input.to(torch.float64).contiguous()
    if input.dtype == torch.float16:
        return "f16", input.contiguous()
    return "f32", input.to(torch.float32).contiguous()


def _grid(total: int, block: int, max_grid: int) -> int:
    return max(1, min(-(-total // block), max_grid))


def _geometry(input: torch.Tensor, weight: torch.Tensor, dilation: int) -> list[Arg]:
    c, hp, wp = input.shape[1:]
    taps, h, w = weight.shape[1:]
    return [("i32", v) for v in (c, hp, wp, h, w, round(taps**0.5), dilation)]


def forward(
    run: Runner,
    input: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    sampling: str,
    block: int = BLOCK,
    max_grid: int = MAX_GRID,
) -> torch.Tensor:
    """Warped (N, C, H, W) in the dtype of ``weight`` (float32 or float64)."""
    suffix, x = _suffix_and_input(input, weight.dtype)
    n, c = input.shape[:2]
    h, w = weight.shape[2:]
    out = torch.empty(n, c, h, w, dtype=weight.dtype, device=weight.device)
    total = n * (-(-c // CHUNK)) * h * w
    args: list[Arg] = [("ptr", t) for t in (x, weight, offset_i, offset_j, out)]
    args += [("i64", total), *_geometry(input, weight, dilation), ("i32", int(sampling == "floor"))]
    run(f"adacof_forward_{suffix}", _grid(total, block, max_grid), block, args)
    return out


def backward_lanes(channels: int) -> int:
    """Lanes of a warp that share one output pixel in the backward kernel.

    The smallest power of two covering the channels, at most 8: eight fp32 lanes fill one 32-byte
    sector, so each corner's atomics and loads are whole sectors, and more lanes would only repeat the
    tap geometry on more lanes.
    """
    lanes = 1
    while lanes < min(channels, 8):
        lanes *= 2
    return lanes


def _row_stride(channels: int) -> int:
    """Elements per row of the backward's input-gradient buffer: the channels rounded up to a power of
    two below 8 or a multiple of 8, so that no row straddles more 32-byte sectors than it must."""
    step = backward_lanes(channels)
    return -(-channels // step) * step


def _channel_rows(t: torch.Tensor, dtype: torch.dtype, stride: int | None = None) -> tuple[torch.Tensor, int]:
    """``t`` (N, C, H, W) as (N, H, W, C) rows of channels in ``dtype`` and the row stride in elements.

    A tensor that already is such rows (channels_last, or a channel slice of a channels_last tensor;
    with ``stride`` given, only one with exactly that row stride) is read in place; anything else is
    copied once (transpose and cast in one pass) into rows of ``stride`` (default C) elements, whose
    padding is never read.
    """
    rows = t.permute(0, 2, 3, 1)
    n, h, w, c = rows.shape
    sn, sh, sw, sc = rows.stride()
    dense = sc == 1 and sw >= c and sh == w * sw and sn == h * sh
    if rows.dtype == dtype and dense and stride in (None, sw):
        return rows, sw
    stride = c if stride is None else stride
    buffer = torch.empty(n, h, w, stride, dtype=dtype, device=rows.device)
    buffer[..., :c].copy_(rows)
    return buffer, stride


def backward(
    run: Runner,
    input: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    grad_output: torch.Tensor,
    dilation: int,
    sampling: str,
    need_input_grad: bool,
    block: int = BLOCK,
    max_grid: int = MAX_GRID,
    lanes: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (input, weight, offset_i, offset_j) in the dtype of ``weight``.

    One fused kernel (see ``adacof_backward_body``) reads the input and the output gradient as rows of
    channels: channels_last tensors (and channel slices of them) are read in place, anything else is
    transposed once here. The input gradient (None unless ``need_input_grad``) comes back as an
    (N, C, Hp, Wp) view of a channels-last buffer whose rows are padded to whole 32-byte sectors (the
    input is then read in rows of the same stride: in place if it has them, else from a padded copy).
    ``block`` is rounded up to a multiple of 32 (the kernel shuffles within warps) and capped at
    ``BACKWARD_BLOCK`` (its launch bound); ``lanes`` (a power of two up to 32, default
    ``backward_lanes(C)``) is the number of lanes per output pixel.
    """
    dtype = weight.dtype
    n, c, hp, wp = input.shape
    h, w = weight.shape[2:]
    lanes = backward_lanes(c) if lanes is None else lanes
    if lanes not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"lanes must be a power of two up to 32, got {lanes}")
    in_dtype = dtype if dtype == torch.float64 or input.dtype != torch.float16 else torch.float16
    suffix = {torch.float64: "f64", torch.float16: "f16"}.get(in_dtype, "f32")
    # With an input gradient, input and gradient share one row stride, padded to whole sectors.
    x, stride = _channel_rows(input, in_dtype, _row_stride(c) if need_input_grad else None)
    go, go_stride = _channel_rows(grad_output, dtype)
    weight, offset_i, offset_j = (t.contiguous() for t in (weight, offset_i, offset_j))
    gin = torch.zeros(n, hp, wp, stride, dtype=dtype, device=weight.device) if need_input_grad else None
    gw, gi, gj = (torch.empty_like(weight) for _ in range(3))
    pixels = n * h * w
    block = min(max(32, -(-block // 32) * 32), BACKWARD_BLOCK)
    threads = -(-pixels // (32 // lanes)) * 32
    # With need_input_grad == 0 the kernel never touches grad_input; any valid pointer will do.
    args: list[Arg] = [("ptr", t) for t in (x, weight, offset_i, offset_j, go, gin if gin is not None else gw)]
    args += [("ptr", gw), ("ptr", gi), ("ptr", gj), ("i64", pixels), *_geometry(input, weight, dilation)]
    args += [("i32", v) for v in (int(sampling == "floor"), int(need_input_grad), lanes, stride, go_stride)]
    run(f"adacof_backward_{suffix}", _grid(threads, block, max_grid), block, args)
    return (gin[..., :c].permute(0, 3, 1, 2) if gin is not None else None), gw, gi, gj


# --- CuPy -----------------------------------------------------------------------------------------


@cache
def cupy_available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@cache
def _raw_module():  # -> cupy.RawModule
    import cupy

    return cupy.RawModule(code=CUDA_SOURCE.read_text())


def cupy_runner(device: torch.device) -> Runner:
    """Runner that launches on ``device`` and on PyTorch's current stream there."""
    import cupy
    import numpy as np

    index = device.index if device.index is not None else torch.cuda.current_device()

    def convert(kind: str, value: object) -> object:
        if isinstance(value, torch.Tensor):
            span = 1 + sum((size - 1) * stride for size, stride in zip(value.shape, value.stride(), strict=True))
            nbytes = span * value.element_size()
            memory = cupy.cuda.UnownedMemory(value.data_ptr(), nbytes, value, index)
            return cupy.ndarray((nbytes,), dtype=np.uint8, memptr=cupy.cuda.MemoryPointer(memory, 0))
        return np.int64(value) if kind == "i64" else np.int32(value)

    def run(name: str, grid: int, block: int, args: Sequence[Arg]) -> None:
        with cupy.cuda.Device(index):
            kernel = _raw_module().get_function(name)
            stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream, index)
            with stream:
                kernel((grid,), (block,), tuple(convert(k, v) for k, v in args))

    return run


# --- host shim (tests) ----------------------------------------------------------------------------

_CTYPES = {"ptr": ctypes.c_void_p, "i64": ctypes.c_longlong, "i32": ctypes.c_int}


def shim_run(name: str, grid: int, block: int, args: Sequence[Arg]) -> None:
    """Run kernel ``name`` on the CPU, thread by thread, over the given launch grid."""
    fn = getattr(shim_library(), f"shim_{name}")
    fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [_CTYPES[k] for k, _ in args]
    fn.restype = None
    values = [v.data_ptr() if k == "ptr" else v for k, v in args]  # type: ignore[union-attr]
    fn(grid, block, *values)
