"""Checks on the frames handed to the interpolator, shared by the ``Interpolator``, its tiling and the
inference scripts: what a pair must look like before any model call, and a cheap scene-cut score."""

from __future__ import annotations

import torch

ALIGN = 32
"""The models' pooling depth: they pad to multiples of this, and tile origins are multiples of it."""

MIN_SIDE = ALIGN // 2 + 1
"""Smallest frame side the models' reflect padding accepts."""


class InterpolationError(ValueError):
    """Frames or settings the interpolator cannot work with; the message is one line."""


def as_batch(frame: torch.Tensor, name: str) -> torch.Tensor:
    """``frame`` as an (N, 3, H, W) float tensor (a (3, H, W) frame gains a batch axis)."""
    if not isinstance(frame, torch.Tensor):
        raise InterpolationError(f"{name} must be a tensor, got {type(frame).__name__}")
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4 or frame.shape[1] != 3:
        raise InterpolationError(f"{name} must be (3, H, W) or (N, 3, H, W), got shape {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise InterpolationError(f"{name} must be a float tensor in [0, 1], got {frame.dtype}")
    return frame


def check_pair(frame0: torch.Tensor, frame1: torch.Tensor) -> None:
    """Raise ``InterpolationError`` unless two frames can be interpolated (same shape, >= 17 px)."""
    a, b = as_batch(frame0, "frame0"), as_batch(frame1, "frame1")
    if a.shape != b.shape:
        raise InterpolationError(
            f"frames differ in size: {a.shape[-1]}x{a.shape[-2]} vs {b.shape[-1]}x{b.shape[-2]}"
            + (f" (batch {a.shape[0]} vs {b.shape[0]})" if a.shape[0] != b.shape[0] else "")
        )
    h, w = a.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise InterpolationError(f"frames of {w}x{h} are too small; both sides need at least {MIN_SIDE} px")


def scene_change(frame0: torch.Tensor, frame1: torch.Tensor) -> float:
    """Mean absolute difference of two frames on a 0-255 scale (a cheap scene-cut score)."""
    return float((frame0.float() - frame1.float()).abs().mean()) * 255.0


__all__ = ["ALIGN", "MIN_SIDE", "InterpolationError", "as_batch", "check_pair", "scene_change"]
