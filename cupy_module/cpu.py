"""Compiled CPU backend of the AdaCoF warp (kernels/adacof_cpu.cpp, loaded through ctypes)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from functools import cache

import torch

from cupy_module.build import cpu_library

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_ARGTYPES = {
    "forward": [_P] * 5 + [_I64] * 9 + [_I32] * 2,
    "backward": [_P] * 9 + [_I64] * 9 + [_I32] * 2,
    "planar": [_P] * 2 + [_I64] * 4 + [_I32],
    "planar_bf16": [_P] * 2 + [_I64] * 4 + [_I32],
    "forward_layouts": [_P] * 5 + [_I64] * 9 + [_I32] * 6,
    "backward_layouts": [_P] * 9 + [_I64] * 9 + [_I32] * 6,
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


@cache
def _function(kind: str, dtype: torch.dtype) -> ctypes._CFuncPtr:
    fn = getattr(cpu_library(), f"adacof_cpu_{kind}_{_SUFFIX[dtype]}")
    fn.argtypes = _ARGTYPES[kind]
    fn.restype = ctypes.c_int
    return fn


def channel_stride(c: int) -> int:
    """Channel stride of the kernel's channels-last buffers: ``c`` rounded up so that whole SIMD
    blocks of 16, 8 or 4 channels cover it, picking the widest block that wastes at most 25%."""
    for block in (16, 8):
        padded = -(-c // block) * block
        if padded * 4 <= c * 5:
            return padded
    return -(-c // 4) * 4


def pack(input: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, H, W) -> the kernels' layout: contiguous (N, H, W, channel_stride(C)) in ``dtype``, zero beyond C.

    One copy; the forward's packed input is kept for the backward, which then needs none.
    """
    return pack_many([input], dtype)


def pack_many(inputs: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Several (N, C_k, H, W) tensors -> one packed buffer (see ``pack``) of their channels in order,
    each copied once (converted to ``dtype`` on the way)."""
    n, _, h, w = inputs[0].shape
    c = sum(t.shape[1] for t in inputs)
    out = torch.empty(n, h, w, channel_stride(c), dtype=dtype)
    start = 0
    for t in inputs:
        out[..., start : start + t.shape[1]].copy_(t.permute(0, 2, 3, 1))
        start += t.shape[1]
    out[..., c:].zero_()
    return out


def contiguous_as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype).contiguous()``, in one blocked pass for a channels-last float32 or bfloat16 ``t``.

    Weights and offsets come out of convolutions in channels_last memory format (in bf16 under
    autocast); torch would convert them and then transpose them, two passes with a slow strided one.
    """
    if t.dtype == dtype and t.is_contiguous():
        return t
    if dtype == torch.float32 and t.dtype in (torch.float32, torch.bfloat16) and _is_channels_last(t):
        n, c, h, w = t.shape
        out = torch.empty(n, c, h, w, dtype=dtype)
        fn = _function("planar" if t.dtype == torch.float32 else "planar_bf16", dtype)
        _check(fn(t.data_ptr(), out.data_ptr(), n, c, c, h * w, torch.get_num_threads()))
        return out
    return t.to(dtype).contiguous()


def _layout(t: torch.Tensor) -> int | None:
    """Layout code of the float32 forward kernel for a weight or offset tensor, or None if it cannot
    read it: 0 float32 planes, 1 float32 channels_last, 2 bfloat16 channels_last."""
    if t.dtype == torch.float32 and t.is_contiguous():
        return 0
    if t.dtype in (torch.float32, torch.bfloat16) and _is_channels_last(t):
        return 1 if t.dtype == torch.float32 else 2
    return None


def operand(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A weight or offset tensor as the forward kernel of ``dtype`` takes it: as it is when the float32
    kernel reads its layout (channels_last convolution outputs, bf16 under autocast, are upcast tile by
    tile inside the kernel), else ``contiguous_as(t, dtype)``."""
    return t if dtype == torch.float32 and _layout(t) is not None else contiguous_as(t, dtype)


def _is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is a dense (N, H, W, C) buffer seen as (N, C, H, W), by its strides."""
    _, c, h, w = t.shape
    return t.stride() == (h * w * c, 1, w * c, c)


def _planar(t: torch.Tensor, c: int, start: int = 0) -> torch.Tensor:
    """Channels ``[start, start + c)`` of channels-last (N, H, W, stride) -> contiguous (N, c, H, W), through
    the library's transpose."""
    n, h, w, stride = t.shape
    out = torch.empty(n, c, h, w, dtype=t.dtype)
    src = t.data_ptr() + start * t.element_size()
    _check(_function("planar", t.dtype)(src, out.data_ptr(), n, c, stride, h * w, torch.get_num_threads()))
    return out


def _check(status: int) -> None:
    if status != 0:
        raise RuntimeError(f"adacof_warp: CPU kernel rejected its arguments (status {status})")


def forward(
    x: torch.Tensor,
    channels: int,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    sampling: str,
    channels_last: bool = False,
) -> torch.Tensor:
    """Warped (N, channels, H, W) of the packed input ``x`` (see ``pack``), in the dtype of ``x``
    (float32 or float64); weights and offsets as ``operand`` gives them. With ``channels_last`` (float32
    only) the output is written in channels_last memory format (a dense (N, H, W, channels) buffer)."""
    n, hp, wp, stride = x.shape
    taps, h, w = weight.shape[1:]
    if channels_last and x.dtype != torch.float32:
        raise ValueError("adacof_warp: the CPU forward writes channels_last output in float32 only")
    if channels_last:
        out = torch.empty(n, h, w, channels, dtype=x.dtype).permute(0, 3, 1, 2)
    else:
        out = torch.empty(n, channels, h, w, dtype=x.dtype)
    ptrs = (x.data_ptr(), weight.data_ptr(), offset_i.data_ptr(), offset_j.data_ptr(), out.data_ptr())
    sizes = (n, channels, stride, hp, wp, h, w, round(taps**0.5), dilation)
    rule = int(sampling == "floor")
    if x.dtype == torch.float32:
        layouts = [_layout(t) for t in (weight, offset_i, offset_j)]
        if None in layouts:
            raise ValueError("adacof_warp: the CPU forward cannot read weights and offsets in this layout/dtype")
        fn = _function("forward_layouts", x.dtype)
        _check(fn(*ptrs, *sizes, *layouts, int(channels_last), rule, torch.get_num_threads()))
    else:
        if not all(t.dtype == x.dtype and t.is_contiguous() for t in (weight, offset_i, offset_j)):
            raise ValueError("adacof_warp: the CPU forward needs contiguous weights and offsets of the input's dtype")
        _check(_function("forward", x.dtype)(*ptrs, *sizes, rule, torch.get_num_threads()))
    return out


def _gradient_like(t: torch.Tensor, layout: int) -> torch.Tensor:
    """An uninitialised gradient buffer for a weight or offset read in ``layout`` (see ``_layout``):
    float32 planes, or channels_last in the argument's own dtype (float32 or bfloat16)."""
    if layout == 0:
        return torch.empty(t.shape, dtype=torch.float32)
    return torch.empty(t.shape, dtype=t.dtype, memory_format=torch.channels_last)


def backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    grad_output: torch.Tensor,
    dilation: int,
    sampling: str,
    need_input_grad: bool,
    packed_input_grad: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (input, weight, offset_i, offset_j) of the warp of the packed input ``x``, whose
    channel count is that of ``grad_output``, computed in the dtype of ``x``.

    float32: weights and offsets are read in any layout ``operand`` takes (others are converted), and
    each gradient comes back in its argument's layout: float32 planes for planes, channels_last in the
    argument's dtype for a channels_last argument (a bf16 convolution output under autocast gets a bf16
    channels_last gradient, written so by the kernel; no converting or transposing copy). The output
    gradient is read planar or channels_last as it comes. float64: everything as float64 planes.

    The input gradient is None unless asked for; when it is, the kernel scatters it into a
    channels-last buffer, returned as a contiguous (N, C, Hp, Wp) tensor (autograd would otherwise
    make a slow strided copy of a permuted view), or with ``packed_input_grad`` as that buffer itself,
    (N, Hp, Wp, channel_stride(C)).
    """
    dtype = x.dtype
    n, hp, wp, stride = x.shape
    c = grad_output.shape[1]
    taps, h, w = weight.shape[1:]
    gin = torch.zeros(n, hp, wp, stride, dtype=dtype) if need_input_grad else None
    sizes = (n, c, stride, hp, wp, h, w, round(taps**0.5), dilation)
    rule = int(sampling == "floor")
    if dtype == torch.float32:
        operands = [operand(t, dtype) for t in (weight, offset_i, offset_j)]
        layouts = [_layout(t) for t in operands]
        grads = [_gradient_like(t, layout) for t, layout in zip(operands, layouts, strict=True)]
        go = grad_output.to(dtype)
        go_layout = 1 if _is_channels_last(go) else 0
        if go_layout == 0:
            go = go.contiguous()
        ptrs = (x.data_ptr(), *(t.data_ptr() for t in operands), go.data_ptr())
        gptrs = (gin.data_ptr() if gin is not None else None, *(g.data_ptr() for g in grads))
        fn = _function("backward_layouts", dtype)
        _check(fn(*ptrs, *gptrs, *sizes, *layouts, go_layout, rule, torch.get_num_threads()))
        gw, gi, gj = grads
    else:
        weight, offset_i, offset_j = (contiguous_as(t, dtype) for t in (weight, offset_i, offset_j))
        go = grad_output.to(dtype).contiguous()
        gw, gi, gj = (torch.empty_like(weight) for _ in range(3))
        ptrs = (x.data_ptr(), weight.data_ptr(), offset_i.data_ptr(), offset_j.data_ptr(), go.data_ptr())
        gptrs = (gin.data_ptr() if gin is not None else None, gw.data_ptr(), gi.data_ptr(), gj.data_ptr())
        _check(_function("backward", dtype)(*ptrs, *gptrs, *sizes, rule, torch.get_num_threads()))
    if gin is not None and not packed_input_grad:
        gin = _planar(gin, c)
    return gin, gw, gi, gj


def _pixel_layout(t: torch.Tensor) -> int | None:
    """Layout code of a channels_last float32 (1) or bfloat16 (2) tensor for the channel-mean kernels."""
    if t.dim() == 4 and t.dtype in (torch.float32, torch.bfloat16) and _is_channels_last(t):
        return 1 if t.dtype == torch.float32 else 2
    return None


def channel_means_supported(weight: torch.Tensor, offset_i: torch.Tensor, offset_j: torch.Tensor) -> bool:
    """Whether ``channel_means`` takes these tensors: CPU, channels_last, float32 or bfloat16, one shape,
    both offsets of one dtype."""
    tensors = (weight, offset_i, offset_j)
    return (
        all(t.device.type == "cpu" and _pixel_layout(t) is not None for t in tensors)
        and weight.shape == offset_i.shape == offset_j.shape
        and offset_i.dtype == offset_j.dtype
    )


def channel_means(
    weight: torch.Tensor, offset_i: torch.Tensor, offset_j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight * offset).mean(1, keepdim=True)`` in float32 for both offsets, one pass over channels_last
    tensors (see ``channel_means_supported``); (N, 1, H, W) float32 results."""
    n, c, h, w = weight.shape
    mi, mj = (torch.empty(n, 1, h, w, dtype=torch.float32) for _ in range(2))
    fn = cpu_library().adacof_cpu_channel_means
    fn.argtypes = [_P] * 5 + [_I64] * 2 + [_I32] * 3
    fn.restype = ctypes.c_int
    ptrs = (weight.data_ptr(), offset_i.data_ptr(), offset_j.data_ptr(), mi.data_ptr(), mj.data_ptr())
    layouts = (_pixel_layout(weight), _pixel_layout(offset_i))
    _check(fn(*ptrs, n * h * w, c, *layouts, torch.get_num_threads()))
    return mi, mj


def channel_means_backward(
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    grad_i: torch.Tensor | None,
    grad_j: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``channel_means`` for (weight, offset_i, offset_j), each channels_last in its
    argument's dtype, from the (N, 1, H, W) gradients of the two means (None for zero)."""
    n, c, h, w = weight.shape
    grads = [
        torch.zeros(n, 1, h, w, dtype=torch.float32) if g is None else g.to(torch.float32).contiguous()
        for g in (grad_i, grad_j)
    ]
    outs = [
        torch.empty(t.shape, dtype=t.dtype, memory_format=torch.channels_last) for t in (weight, offset_i, offset_j)
    ]
    fn = cpu_library().adacof_cpu_channel_means_backward
    fn.argtypes = [_P] * 8 + [_I64] * 2 + [_I32] * 3
    fn.restype = ctypes.c_int
    ptrs = (weight.data_ptr(), offset_i.data_ptr(), offset_j.data_ptr(), *(g.data_ptr() for g in grads))
    layouts = (_pixel_layout(weight), _pixel_layout(offset_i))
    _check(fn(*ptrs, *(o.data_ptr() for o in outs), n * h * w, c, *layouts, torch.get_num_threads()))
    gw, gi, gj = outs
    return gw, gi, gj


def softmax_backward_bf16(y: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """Gradient, as bf16 channels_last, of a float32 softmax over dim 1 of a bf16 channels_last input,
    from its channels_last float32 output ``y`` and output gradient ``grad_y``: one pass."""
    n, c, h, w = y.shape
    out = torch.empty(y.shape, dtype=torch.bfloat16, memory_format=torch.channels_last)
    fn = cpu_library().adacof_cpu_softmax_backward_bf16
    fn.argtypes = [_P] * 3 + [_I64] * 2 + [_I32]
    fn.restype = ctypes.c_int
    _check(fn(y.data_ptr(), grad_y.data_ptr(), out.data_ptr(), n * h * w, c, torch.get_num_threads()))
    return out
