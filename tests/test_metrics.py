"""PSNR/SSIM of ``cdfi.evaluation.metrics`` against skimage and against closed-form / hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cdfi.evaluation.metrics import MetricInputError, psnr, ssim


def _pair(seed: int, shape: tuple[int, int] = (24, 31)) -> tuple[np.ndarray, np.ndarray]:
    """Two related random 8-bit RGB images."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=gt.shape)
    return gt, np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


def _ssim_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with a 7x7 uniform window, sample covariance, K1=0.01, K2=0.03, L=1, border of 3 cropped,
    averaged over channels: the definition the published protocol relies on, written out."""
    c1, c2, n = 0.01**2, 0.03**2, 49
    values = []
    for ch in range(3):
        x, y = a[..., ch], b[..., ch]
        mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
        vx = (uniform_filter(x * x, 7) - mx * mx) * n / (n - 1)
        vy = (uniform_filter(y * y, 7) - my * my) * n / (n - 1)
        cxy = (uniform_filter(x * y, 7) - mx * my) * n / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        values.append(s[3:-3, 3:-3].mean())
    return float(np.mean(values))


def test_psnr_closed_form() -> None:
    gt = np.zeros((8, 8, 3))
    assert psnr(gt, gt + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(gt, gt + 0.01) == pytest.approx(40.0, abs=1e-9)
    assert psnr(gt, gt) == float("inf")


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_and_ssim_match_skimage(seed: int) -> None:
    gt, pred = _pair(seed)
    gt_f, pred_f = gt / 255.0, pred / 255.0
    expected_psnr = peak_signal_noise_ratio(gt_f, pred_f, data_range=1)
    expected_ssim = structural_similarity(gt_f, pred_f, data_range=1, channel_axis=-1)
    for a, b in ((gt, pred), (gt_f, pred_f), (_tensor(gt), _tensor(pred)), (_tensor(gt)[None], _tensor(pred))):
        assert psnr(a, b) == pytest.approx(expected_psnr, abs=1e-5)
        assert ssim(a, b) == pytest.approx(expected_ssim, abs=1e-6)


def test_ssim_is_the_7x7_uniform_per_channel_definition() -> None:
    gt, pred = _pair(3, (40, 33))
    assert ssim(gt, pred) == pytest.approx(_ssim_by_hand(gt / 255.0, pred / 255.0), abs=1e-9)
    assert ssim(gt, gt) == pytest.approx(1.0)


def test_bad_inputs_raise_one_line() -> None:
    gt, pred = _pair(5)
    with pytest.raises(MetricInputError, match="ground truth is 31x24 but prediction is 30x24"):
        psnr(gt, pred[:, :30])
    with pytest.raises(MetricInputError, match=r"\(3, H, W\)"):
        ssim(torch.zeros(4, 8, 8), torch.zeros(4, 8, 8))
    with pytest.raises(MetricInputError, match="at least 7x7"):
        ssim(np.zeros((5, 9, 3)), np.zeros((5, 9, 3)))
