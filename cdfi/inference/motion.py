"""What a trained AdaCoF-family model does with its kernels: the motion they encode and how spread they are.

Each output pixel of an AdaCoF warp is a weighted sum of bilinear samples at ``tap + offset``; the
kernel weights sum to one (softmax), so the weighted mean sample position is the displacement the
kernel applies to a locally linear image, the model's motion for that pixel. Comparing it with a
classical flow says whether a model misses motion by direction or by size (``benchmarks/motion_check.py``).
"""

from __future__ import annotations

import torch

__all__ = ["kernel_mean_motion", "kernel_motion"]


def _tap_grid(kernel_size: int, dilation: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each tap relative to the kernel centre, as (1, F*F, 1, 1) tensors."""
    taps = kernel_size * kernel_size
    grid = (torch.arange(kernel_size, device=like.device, dtype=torch.float32) - (kernel_size - 1) / 2) * dilation
    return grid.repeat_interleave(kernel_size).view(1, taps, 1, 1), grid.repeat(kernel_size).view(1, taps, 1, 1)


def _check(weight: torch.Tensor, offset_i: torch.Tensor, offset_j: torch.Tensor, kernel_size: int) -> None:
    taps = kernel_size * kernel_size
    if weight.shape[1] != taps or offset_i.shape != weight.shape or offset_j.shape != weight.shape:
        raise ValueError(
            f"kernel_motion: weight and offsets must be (N, {taps}, H, W) for F={kernel_size}, got "
            f"{tuple(weight.shape)}, {tuple(offset_i.shape)}, {tuple(offset_j.shape)}"
        )


def kernel_mean_motion(
    weight: torch.Tensor, offset_i: torch.Tensor, offset_j: torch.Tensor, kernel_size: int, dilation: int
) -> torch.Tensor:
    """The ``motion`` of ``kernel_motion`` alone (N, 2, H, W), x then y, without the spread's extra passes."""
    _check(weight, offset_i, offset_j, kernel_size)
    w = weight.float()
    tap_i, tap_j = _tap_grid(kernel_size, dilation, w)
    mean_i = (w * tap_i).sum(1, keepdim=True) + (w * offset_i.float()).sum(1, keepdim=True)
    mean_j = (w * tap_j).sum(1, keepdim=True) + (w * offset_j.float()).sum(1, keepdim=True)
    return torch.cat([mean_j, mean_i], 1)


def kernel_motion(
    weight: torch.Tensor, offset_i: torch.Tensor, offset_j: torch.Tensor, kernel_size: int, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(motion, spread)`` of AdaCoF kernels (N, F*F, H, W).

    ``motion`` (N, 2, H, W) is the weighted mean sample position relative to the output pixel, x
    (horizontal) then y, in pixels: output pixel p samples its input near ``p + motion(p)``, the
    convention of a backward-warp flow. ``spread`` (N, 1, H, W) is the weighted standard deviation of
    the sample positions around that mean (0 for a kernel that picks one tap)."""
    _check(weight, offset_i, offset_j, kernel_size)
    w = weight.float()
    tap_i, tap_j = _tap_grid(kernel_size, dilation, w)
    pos_i = tap_i + offset_i.float()
    pos_j = tap_j + offset_j.float()
    mean_i = (w * pos_i).sum(1, keepdim=True)
    mean_j = (w * pos_j).sum(1, keepdim=True)
    var = (w * ((pos_i - mean_i) ** 2 + (pos_j - mean_j) ** 2)).sum(1, keepdim=True)
    return torch.cat([mean_j, mean_i], 1), var.clamp_min(0).sqrt()
