"""PSNR and SSIM exactly as the published CDFI evaluation computes them.

Both go through ``skimage.metrics`` on H x W x 3 float arrays in [0, 1] with ``data_range=1``;
SSIM is per channel with skimage's default 7x7 uniform window. Callers pass the 8-bit-quantised
prediction (the PNG read back), as the published protocol does.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["MetricInputError", "psnr", "ssim", "to_hwc"]


class MetricInputError(ValueError):
    """Raised when two images cannot be compared (wrong layout or different sizes)."""


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return ``image`` as a float64 H x W x 3 array in [0, 1].

    Accepts a (3, H, W) or (1, 3, H, W) tensor in [0, 1], or an H x W x 3 array (uint8 arrays are
    divided by 255) so that metrics see exactly the values a PNG holds.
    """
    if isinstance(image, torch.Tensor):
        tensor = image.detach().to("cpu", torch.float64)
        if tensor.dim() == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 3 or tensor.shape[0] != 3:
            raise MetricInputError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
        return tensor.permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise MetricInputError(f"expected an H x W x 3 image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return array.astype(np.float64)


def _pair(gt: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert both images and check that their sizes agree."""
    gt_hwc, pred_hwc = to_hwc(gt), to_hwc(pred)
    if gt_hwc.shape != pred_hwc.shape:
        raise MetricInputError(
            f"ground truth is {gt_hwc.shape[1]}x{gt_hwc.shape[0]} but prediction is "
            f"{pred_hwc.shape[1]}x{pred_hwc.shape[0]}"
        )
    return gt_hwc, pred_hwc


def psnr(gt: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB: ``peak_signal_noise_ratio(gt, pred, data_range=1)`` (inf for identical images)."""
    gt_hwc, pred_hwc = _pair(gt, pred)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(gt_hwc, pred_hwc, data_range=1))


def ssim(gt: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> float:
    """SSIM: ``structural_similarity`` per channel on H x W x 3, ``data_range=1``, 7x7 uniform window."""
    gt_hwc, pred_hwc = _pair(gt, pred)
    if min(gt_hwc.shape[:2]) < 7:
        height, width = gt_hwc.shape[:2]
        raise MetricInputError(f"SSIM needs images of at least 7x7 pixels, got {width}x{height}")
    return float(structural_similarity(gt_hwc, pred_hwc, data_range=1, channel_axis=-1))
