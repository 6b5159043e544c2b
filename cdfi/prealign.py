"""Coarse-to-fine pre-alignment: the model's own motion at half resolution brings large motion in reach.

AdaCoF-family kernels sample a few pixels around each output pixel plus learned offsets; models trained
on little data follow motions of a few pixels but only a third of a 20-pixel one
(``docs/small_budget_training.md``), which is where they lose most to optical flow. Halving the frames
halves the motion, so:

1. The model runs on the pair downscaled by ``scale``; its kernels' weighted mean sample positions
   (``cdfi.diagnostics.kernel_motion``), scaled back up, give each input frame's motion towards the
   middle time.
2. Both full-resolution inputs are warped by that motion (bilinear, border replicated): what is left
   between them is the residual motion, small, and the model interpolates this aligned pair.
3. Where the coarse motion is wrong (thin structures, motion boundaries) the aligned pass is worse
   than the plain one, so the plain full-resolution output is computed too and the two are blended per
   pixel by which pass's two warped frames agree better (their mean absolute difference over a
   ``2 * radius + 1`` window): a pass whose warps agree has found the motion there. The aligned pass
   must beat the plain one by ``margin`` to be chosen, because its inputs have been resampled once
   more (slightly softer) and its motion is only as good as the coarse pass's.

Three model calls, one of them at a quarter of the pixels: about 2.4 times the plain cost. This is
this project's addition, not part of the published method; off unless asked for (``--prealign``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from cdfi.diagnostics import kernel_motion
from models.adacof import check_frames, pad_to_multiple

Parts = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]

MIN_COARSE = 32
"""Frames whose downscaled shorter side would be below this go through the plain model only."""

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
    eval-mode output (see the module docstring). ``margin`` and ``temperature`` (in units of the 0-1
    intensity difference) set where and how sharply the per-pixel blend switches to the aligned pass."""

    def __init__(
        self, model: nn.Module, scale: int = 2, radius: int = 7, margin: float = MARGIN, temperature: float = 0.01
    ) -> None:
        super().__init__()
        if scale < 2:
            raise ValueError(f"prealign scale must be at least 2, got {scale}")
        self.model, self.scale, self.radius = model, scale, radius
        self.margin, self.temperature = margin, temperature

    def parts(self, frame0: torch.Tensor, frame2: torch.Tensor) -> Parts:
        """``(frame, kernels, warp0, warp2)`` of one model pass, cropped to the input size."""
        h, w = frame0.shape[-2:]
        a, b = pad_to_multiple(frame0), pad_to_multiple(frame2)
        k = self.model.get_kernel(a, b)
        frame, warp0, warp2 = self.model.synthesize_parts(a, b, k)
        return frame[..., :h, :w], k, warp0[..., :h, :w], warp2[..., :h, :w]

    def coarse_motion(self, frame0: torch.Tensor, frame2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each input's motion towards the middle time, (N, 2, H, W) in full-resolution pixels, from a
        model pass on the pair downscaled by ``scale``."""
        h, w = frame0.shape[-2:]
        small = [F.interpolate(f.float(), scale_factor=1 / self.scale, mode="area") for f in (frame0, frame2)]
        hc, wc = small[0].shape[-2:]
        _, k, _, _ = self.parts(*small)
        gain = torch.tensor([w / wc, h / hc], device=frame0.device).view(1, 2, 1, 1)
        motions = []
        for side in (1, 2):
            motion, _ = kernel_motion(
                k[f"Weight{side}"], k[f"Alpha{side}"], k[f"Beta{side}"], self.model.kernel_size, self.model.dilation
            )
            up = F.interpolate(motion[..., :hc, :wc], size=(h, w), mode="bilinear", align_corners=False)
            motions.append(up * gain)
        return motions[0], motions[1]

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        check_frames(frame0, frame2)
        plain, _, p0, p2 = self.parts(frame0, frame2)
        if min(frame0.shape[-2:]) // self.scale < MIN_COARSE:
            return plain
        motion0, motion2 = self.coarse_motion(frame0, frame2)
        aligned0 = backward_warp(frame0, motion0)
        aligned2 = backward_warp(frame2, motion2)
        fine, _, q0, q2 = self.parts(aligned0, aligned2)
        gain = _agreement_error(p0, p2, self.radius) - _agreement_error(q0, q2, self.radius)
        choose_fine = torch.sigmoid((gain - self.margin) / self.temperature)
        return choose_fine * fine.float() + (1 - choose_fine) * plain.float()


def with_prealign(model: nn.Module, enabled: bool) -> nn.Module:
    """``Prealigned(model)`` when ``enabled``, else ``model``."""
    return Prealigned(model) if enabled else model


def add_prealign_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--prealign`` (off by default) to a CLI."""
    parser.add_argument(
        "--prealign",
        action="store_true",
        help="coarse-to-fine pre-alignment for large motion: a half-resolution pass warps both inputs towards "
        "the middle first (about 2.4x the time; this project's addition, see docs/inference.md)",
    )
