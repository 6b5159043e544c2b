"""Public entry point of the AdaCoF warp: input validation and backend dispatch."""

from __future__ import annotations

import torch

from cupy_module.reference import SAMPLING_RULES, adacof_warp_reference


def _validate(
    input: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    sampling: str,
) -> None:
    """Raise a one-line ValueError for anything the kernels cannot take."""
    if sampling not in SAMPLING_RULES:
        raise ValueError(f"unknown sampling rule {sampling!r}; expected one of {SAMPLING_RULES}")
    for name, t in (("input", input), ("weight", weight), ("offset_i", offset_i), ("offset_j", offset_j)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"adacof_warp: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"adacof_warp: {name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"adacof_warp: {name} must be a floating-point tensor, got {t.dtype}")
    if not (weight.shape == offset_i.shape == offset_j.shape):
        raise ValueError(
            "adacof_warp: weight, offset_i and offset_j must have one shape, got "
            f"{tuple(weight.shape)}, {tuple(offset_i.shape)}, {tuple(offset_j.shape)}"
        )
    if int(dilation) != dilation or dilation < 1:
        raise ValueError(f"adacof_warp: dilation must be a positive integer, got {dilation!r}")
    n, taps, h, w = weight.shape
    f = int(round(taps**0.5))
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

    ``sampling="trunc"`` is the published rule (needed by published checkpoints), ``"floor"`` true
    bilinear sampling. ``legacy_grad`` reproduces the published backward pass.
    """
    _validate(input, weight, offset_i, offset_j, dilation, sampling)
    if legacy_grad:
        raise NotImplementedError("adacof_warp: legacy_grad is not implemented yet")
    if backend not in ("auto", "reference"):
        raise ValueError(f"adacof_warp: unknown backend {backend!r}")
    return adacof_warp_reference(input, weight, offset_i, offset_j, int(dilation), sampling)
