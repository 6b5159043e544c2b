"""Classical baselines that any trained interpolation model must beat.

* ``Overlay``: the average (A + C) / 2 of the two inputs. A network whose kernels collapse onto the
  centre tap produces exactly this, so it is the floor that tells "learned nothing" apart.
* ``DISFlow``: OpenCV's DIS optical flow from A to C, then both frames backward-warped half-way and
  averaged: I1(x) = (A(x - f(x)/2) + C(x + f(x)/2)) / 2.

Both are ``nn.Module``s with the models' calling convention (``(N, 3, H, W)`` pairs in [0, 1] in,
middle frame out), so the evaluation loop scores them with the same code as the networks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MissingOpenCVError(ImportError):
    """OpenCV is needed for flow-based baselines and warm starts."""


def require_cv2():
    """Import OpenCV, or raise a one-line error naming the package to install."""
    try:
        import cv2
    except ImportError:
        raise MissingOpenCVError(
            "OpenCV is not installed: pip install opencv-python-headless (needed for DIS optical flow)"
        ) from None
    return cv2


def _gray_u8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> H x W uint8 luma, the input DIS expects."""
    rgb = frame.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return require_cv2().cvtColor(np.ascontiguousarray(rgb), require_cv2().COLOR_RGB2GRAY)


def dis_flow(frame0: torch.Tensor, frame2: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """Dense flow (2, H, W) from ``frame0`` to ``frame2`` (x then y, in pixels) by OpenCV DIS."""
    cv2 = require_cv2()
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    if preset not in presets:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(presets)}")
    dis = cv2.DISOpticalFlow_create(presets[preset])
    flow = dis.calc(_gray_u8(frame0), _gray_u8(frame2), None)
    return torch.from_numpy(flow).permute(2, 0, 1).float()


def backward_warp(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``frame`` (3, H, W) at x + flow(x) bilinearly, replicating the border."""
    cv2 = require_cv2()
    _, h, w = frame.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    fx, fy = flow[0].numpy(), flow[1].numpy()
    image = np.ascontiguousarray(frame.permute(1, 2, 0).float().cpu().numpy())
    warped = cv2.remap(image, gx + fx, gy + fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(warped).permute(2, 0, 1)


class Overlay(nn.Module):
    """(A + C) / 2."""

    model_name = "overlay"

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        return (frame0 + frame2) / 2


class DISFlow(nn.Module):
    """Half-way backward warp of both frames along DIS flow, averaged."""

    model_name = "dis_flow"

    def __init__(self, preset: str = "medium") -> None:
        super().__init__()
        self.preset = preset

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        out = []
        for a, c in zip(frame0, frame2, strict=True):
            flow = dis_flow(a, c, self.preset)
            out.append((backward_warp(a, -flow / 2) + backward_warp(c, flow / 2)) / 2)
        return torch.stack(out).to(frame0.device, frame0.dtype)


BASELINES: dict[str, type[nn.Module]] = {"overlay": Overlay, "dis_flow": DISFlow}
