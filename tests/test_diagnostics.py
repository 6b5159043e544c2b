"""Kernel motion: the displacement an AdaCoF kernel applies, checked through the warp itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdfi.inference.motion import kernel_mean_motion, kernel_motion
from cupy_module import adacof_warp

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("f", "d", "sampling"), [(5, 1, "floor"), (3, 2, "trunc"), (7, 1, "trunc")])
def test_motion_is_the_displacement_the_warp_applies_to_a_linear_image(f, d, sampling):
    # Bilinear sampling reproduces a linear image exactly (and trunc's extrapolation too), and the
    # softmax weights sum to one, so warping I(y, x) = a y + b x + c gives I(p + motion(p)) wherever no
    # sample is clamped to the border: away from the outermost output rows and columns.
    n, h, w, p = 2, 6, 7, (f - 1) * d
    yy, xx = torch.meshgrid(torch.arange(h + p).double(), torch.arange(w + p).double(), indexing="ij")
    image = (0.7 * yy - 0.3 * xx + 2.0).expand(n, 1, -1, -1).contiguous()
    weight = torch.randn(n, f * f, h, w, dtype=torch.float64).softmax(1)
    off_i = torch.empty(n, f * f, h, w, dtype=torch.float64).uniform_(-0.9, 0.9)
    off_j = torch.empty(n, f * f, h, w, dtype=torch.float64).uniform_(-0.9, 0.9)
    motion, spread = kernel_motion(weight, off_i, off_j, f, d)
    out = adacof_warp(image, weight, off_i, off_j, d, sampling=sampling, backend="reference")
    oy, ox = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    expected = 0.7 * (oy + p / 2 + motion[:, 1]) - 0.3 * (ox + p / 2 + motion[:, 0]) + 2.0
    inner = (slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(out[:, 0][inner], expected[inner].to(out.dtype), atol=1e-5, rtol=0)
    assert spread.shape == (n, 1, h, w) and bool((spread > 0).all())
    torch.testing.assert_close(kernel_mean_motion(weight, off_i, off_j, f, d), motion, atol=1e-5, rtol=0)


def test_one_tap_kernel_has_its_tap_position_and_no_spread():
    f, d = 5, 2
    weight = torch.zeros(1, f * f, 1, 1)
    weight[0, 3 * f + 0] = 1.0  # row 3 (one below the centre), column 0 (two left of it)
    off_i = torch.full_like(weight, 0.25)
    off_j = torch.full_like(weight, -0.5)
    motion, spread = kernel_motion(weight, off_i, off_j, f, d)
    assert motion.flatten().tolist() == pytest.approx([-2 * d - 0.5, 1 * d + 0.25])
    assert float(spread) == 0.0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 25, H, W\) for F=5"):
        kernel_motion(torch.rand(1, 9, 2, 2), torch.rand(1, 9, 2, 2), torch.rand(1, 9, 2, 2), 5, 1)


def test_motion_check_reports_missing_data(tmp_path):
    ckpt = REPO / "checkpoints" / "compressed_adacof_F_5_D_1_ours.pth"
    if not ckpt.is_file():
        pytest.skip("shipped checkpoint not present")
    script = REPO / "benchmarks" / "motion_check.py"
    run = subprocess.run(
        [sys.executable, str(script), "--checkpoint", str(ckpt), "--data_root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "middlebury" in run.stderr.lower() and str(tmp_path) in run.stderr
