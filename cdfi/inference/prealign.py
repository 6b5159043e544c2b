"""Coarse-to-fine pre-alignment: the model's own motion at lower resolutions brings large motion in reach.

AdaCoF-family kernels sample a few pixels around each output pixel plus learned offsets; models trained
on little data follow motions of a few pixels but only a third of a 20-pixel one
(``docs/training.md``), which is where they lose most to optical flow. Halving the frames
halves the motion, so, at each level from the coarsest up:

1. The motion found one level down (at half this resolution; none at the coarsest level), upsampled
   and doubled, is each frame's motion towards the middle time: both inputs are warped by it
   (bilinear, border replicated), leaving a small residual motion, and the model interpolates this
   aligned pair. Its kernels' weighted mean sample positions (``cdfi.inference.motion.kernel_motion``) are
   the residual, added to the coarse motion (a first-order composition).
2. Where the coarse motion is wrong (thin structures, motion boundaries) the aligned pass is worse
   than the plain one, so the plain pass is computed too and the two are blended per pixel, frames and
   motions alike, by which pass's two warped frames agree better (their mean absolute difference over
   a ``2 * radius + 1`` window): a pass whose warps agree has found the motion there. The aligned pass
   must beat the plain one by ``margin`` to be chosen, because its inputs have been resampled once
   more (slightly softer) and its motion is only as good as the coarse one.

By default the motion comes from as deep as the frame allows (the coarsest level keeps at least
``MIN_COARSE`` px on its shorter side): three levels for frames of 256 to 511 px, four for 720p, five
for 1080p, so that motion long in pixels because the frame is large is still reached. With three
levels that is two passes at each of the full, half and quarter resolutions and one at an eighth,
about 3 times the plain cost; deeper levels add little (a sixteenth of the pixels each time). This is
this project's addition, not part of the published method; off unless asked for (``--prealign``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from cdfi.inference.motion import kernel_mean_motion
from models.adacof import check_frames, pad_to_multiple

Parts = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]

MIN_COARSE = 32
"""Frames whose downscaled shorter side would be below this go through the plain model only."""


def auto_levels(size: tuple[int, int]) -> int:
    """The default depth: as many halvings as keep the coarsest level's shorter side at ``MIN_COARSE`` px or
    more (3 for 256 to 511 px, 4 for 720p, 5 for 1080p); see ``docs/inference.md``."""
    levels, side = 0, min(size)
    while side // 2 >= MIN_COARSE:
        levels, side = levels + 1, side // 2
    return levels


MARGIN = 0.02
"""How much better (mean absolute difference, 0-1 scale) the aligned pass's warps must agree to be
chosen; picked on the validation split of the training footage (``docs/inference.md``)."""


def backward_warp(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``frame`` (N, C, H, W) at ``p + flow(p)`` (flow (N, 2, H, W), x then y, in pixels),
    bilinearly, replicating the border."""
    h, w = frame.shape[-2:]
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], -1).to(frame.dtype)
    return F.grid_sample(frame, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _agreement_error(warp0: torch.Tensor, warp2: torch.Tensor, radius: int) -> torch.Tensor:
    """Local mean absolute difference of two warped frames, (N, 1, H, W)."""
    diff = (warp0.float() - warp2.float()).abs().mean(1, keepdim=True)
    return F.avg_pool2d(diff, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


class Prealigned(nn.Module):
    """``model`` (an AdaCoF-family ``WarpingModel``) with coarse-to-fine pre-alignment; same call signature,
    eval-mode output (see the module docstring). ``levels`` is how many halvings the motion comes from
    (1: half resolution only; ``None``, the default: as deep as the frame allows, ``auto_levels``).
    ``margin`` and ``temperature`` (in units of the 0-1 intensity difference)
    set where and how sharply the per-pixel blend switches to the aligned pass."""

    def __init__(
        self,
        model: nn.Module,
        levels: int | None = None,
        radius: int = 7,
        margin: float = MARGIN,
        temperature: float = 0.01,
    ) -> None:
        super().__init__()
        if levels is not None and levels < 1:
            raise ValueError(f"prealign levels must be at least 1, got {levels}")
        self.model, self.levels, self.radius = model, levels, radius
        self.margin, self.temperature = margin, temperature

    def parts(self, frame0: torch.Tensor, frame2: torch.Tensor) -> Parts:
        """``(frame, kernels, warp0, warp2)`` of one model pass, cropped to the input size."""
        h, w = frame0.shape[-2:]
        a, b = pad_to_multiple(frame0), pad_to_multiple(frame2)
        k = self.model.get_kernel(a, b)
        frame, warp0, warp2 = self.model.synthesize_parts(a, b, k)
        return frame[..., :h, :w], k, warp0[..., :h, :w], warp2[..., :h, :w]

    def motion(self, k: dict[str, torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each input's motion towards the middle time from a pass's kernels, (N, 2, H, W) in pixels."""
        h, w = size
        f, d = self.model.kernel_size, self.model.dilation
        m0, m2 = (kernel_mean_motion(k[f"Weight{s}"], k[f"Alpha{s}"], k[f"Beta{s}"], f, d) for s in (1, 2))
        return m0[..., :h, :w], m2[..., :h, :w]

    def level(
        self, frame0: torch.Tensor, frame2: torch.Tensor, levels: int, with_motion: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(frame, motion0, motion2)`` at the input's resolution, with motion from ``levels`` halvings
        (``None`` motions when ``with_motion`` is off: the finest level needs only the frame).

        The aligned pass's motion is the coarse motion plus the residual it found (a first-order
        composition, fine for smooth coarse motion); both frame and motion are blended with the same
        per-pixel weights, so the next finer level starts from the better of the two."""
        size = frame0.shape[-2:]
        plain, k, p0, p2 = self.parts(frame0, frame2)
        plain0, plain2 = self.motion(k, size) if with_motion else (None, None)
        if levels == 0 or min(size) // 2 < MIN_COARSE:
            return plain.float(), plain0, plain2
        small = [F.interpolate(f.float(), scale_factor=0.5, mode="area") for f in (frame0, frame2)]
        _, coarse0, coarse2 = self.level(*small, levels - 1)
        coarse0, coarse2 = upsample_flow(coarse0, size), upsample_flow(coarse2, size)
        fine, k_fine, q0, q2 = self.parts(backward_warp(frame0, coarse0), backward_warp(frame2, coarse2))
        gain = _agreement_error(p0, p2, self.radius) - _agreement_error(q0, q2, self.radius)
        w = torch.sigmoid((gain - self.margin) / self.temperature)
        frame = w * fine.float() + (1 - w) * plain.float()
        if not with_motion:
            return frame, None, None
        residual0, residual2 = self.motion(k_fine, size)
        return frame, w * (coarse0 + residual0) + (1 - w) * plain0, w * (coarse2 + residual2) + (1 - w) * plain2

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        check_frames(frame0, frame2)
        levels = self.levels if self.levels is not None else auto_levels(frame0.shape[-2:])
        return self.level(frame0, frame2, levels, with_motion=False)[0]


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A motion field (N, 2, h, w) resized bilinearly to ``size`` = (H, W), its x and y scaled by W/w and H/h."""
    h, w = flow.shape[-2:]
    gain = torch.tensor([size[1] / w, size[0] / h], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * gain


def with_prealign(model: nn.Module, enabled: bool) -> nn.Module:
    """``Prealigned(model)`` when ``enabled``, else ``model``."""
    return Prealigned(model) if enabled else model


def add_prealign_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--prealign`` (off by default) to a CLI."""
    parser.add_argument(
        "--prealign",
        action="store_true",
        help="coarse-to-fine pre-alignment for large motion: passes at 1/8, 1/4 and 1/2 resolution (deeper for "
        "frames over 511 px) warp both inputs towards the middle first (about 3x the time; this project's "
        "addition, see docs/inference.md)",
    )
