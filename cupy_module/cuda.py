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
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (input, weight, offset_i, offset_j) in the dtype of ``weight``."""
    suffix, x = _suffix_and_input(input, weight.dtype)
    go = grad_output.to(weight.dtype).contiguous()
    gin = torch.zeros(input.shape, dtype=weight.dtype, device=weight.device) if need_input_grad else None
    gw, gi, gj = (torch.empty_like(weight) for _ in range(3))
    total = weight.numel()
    # With need_input_grad == 0 the kernel never touches grad_input; any valid pointer will do.
    args: list[Arg] = [("ptr", t) for t in (x, weight, offset_i, offset_j, go, gin if gin is not None else gw)]
    args += [("ptr", gw), ("ptr", gi), ("ptr", gj), ("i64", total), *_geometry(input, weight, dilation)]
    args += [("i32", int(sampling == "floor")), ("i32", int(need_input_grad))]
    run(f"adacof_backward_{suffix}", _grid(total, block, max_grid), block, args)
    return gin, gw, gi, gj


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
            nbytes = value.numel() * value.element_size()
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
