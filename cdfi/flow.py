"""Classical optical flow (OpenCV DIS) and backward warping: a bottom-layer utility shared by the
baselines, the flow-based training data and the motion diagnostics."""

from __future__ import annotations

import numpy as np
import torch


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
