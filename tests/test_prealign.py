"""Coarse-to-fine pre-alignment: the warp against OpenCV's remap, motion sign and scale on a known
translation (hand-derived middle frame), no change for a model that sees no motion, the small-frame
fallback, and the API/CLI plumbing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from inference_helpers import example_frames, lively_model, load_rgb, save_lively, save_rgb
from torch import nn

import interpolate_twoframe
from cdfi.flow import backward_warp as cv2_backward_warp
from cdfi.inference.interpolator import Interpolator
from cdfi.inference.prealign import MIN_COARSE, Prealigned, auto_levels, backward_warp, with_prealign
from cdfi.runtime.precision import use_channels_last
from models import make_model

cv2 = pytest.importorskip("cv2")


def texture(h: int, w: int) -> torch.Tensor:
    """A smooth random texture (1, 3, H, W): bilinear upsampling of coarse noise, so shifts interpolate well."""
    torch.manual_seed(3)
    coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_backward_warp_matches_opencv_remap() -> None:
    frame = texture(48, 64)
    torch.manual_seed(4)
    flow = torch.randn(1, 2, 48, 64) * 3
    ours = backward_warp(frame, flow)[0]
    ref = cv2_backward_warp(frame[0], flow[0])
    torch.testing.assert_close(ours, ref, atol=2e-3, rtol=0)  # OpenCV's remap uses 5-bit fractions
    shifted = backward_warp(frame, torch.tensor([2.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 48, 64))
    torch.testing.assert_close(shifted[..., 1:, :-2], frame[..., :-1, 2:], atol=1e-5, rtol=0)


class ConstantMotion(nn.Module):
    """A stand-in ``WarpingModel``: one-hot centre kernels with a constant offset, so its kernel motion
    is ``motion0`` for frame 0 and ``-motion0`` for frame 2 at every pixel, at any resolution; its
    synthesis ignores the kernels and returns the inputs and their average (what a pass sees)."""

    kernel_size, dilation = 3, 1

    def __init__(self, motion0: tuple[float, float]) -> None:
        super().__init__()
        self.motion0 = motion0

    def get_kernel(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = a.shape
        weight = torch.zeros(n, 9, h, w)
        weight[:, 4] = 1
        dx, dy = self.motion0
        k = {}
        for side, sign in ((1, 1.0), (2, -1.0)):
            k[f"Weight{side}"] = weight
            k[f"Alpha{side}"] = torch.full((n, 9, h, w), sign * dy)
            k[f"Beta{side}"] = torch.full((n, 9, h, w), sign * dx)
        return k

    def synthesize_parts(self, a: torch.Tensor, b: torch.Tensor, k: dict[str, torch.Tensor]):
        return (a + b) / 2, a, b


def test_known_translation_gives_the_true_middle_frame() -> None:
    # frame 2 is frame 0 moved 8 px right: c(x) = T(x - 8), the middle M(x) = T(x - 4) = a(x - 4) = c(x + 4).
    # At half resolution the motion of frame 0 towards the middle is -2 px, which the stand-in reports.
    big = texture(96, 160)
    a, c = big[..., :, 16:144], big[..., :, 8:136]
    middle = big[..., :, 12:140]
    out = Prealigned(ConstantMotion((-2.0, 0.0)))(a, c)
    inner = (..., slice(8, -8), slice(8, -8))
    torch.testing.assert_close(out[inner], middle[inner], atol=2e-3, rtol=0)
    assert (((a + c) / 2 - middle)[inner]).abs().max() > 0.05  # the plain pass alone is far from it
    # the opposite sign finds nothing that agrees, so the blend keeps the plain output
    wrong = Prealigned(ConstantMotion((2.0, 0.0)))(a, c)
    assert float((wrong - (a + c) / 2)[inner].abs().mean()) < float((wrong - middle)[inner].abs().mean())


class CappedShift(ConstantMotion):
    """A stand-in that finds the global horizontal shift between its inputs by brute force but, like the
    trained models, reports at most ``cap`` px of motion per frame."""

    def __init__(self, cap: float) -> None:
        super().__init__((0.0, 0.0))
        self.cap = cap

    def get_kernel(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        r = a.shape[-1] // 8
        err = {d: float((torch.roll(a, d, -1) - b)[..., r:-r].abs().mean()) for d in range(-r, r + 1)}
        shift = min(err, key=err.__getitem__)  # b(x) = a(x - shift)
        self.motion0 = (max(-self.cap, min(self.cap, -shift / 2)), 0.0)
        return super().get_kernel(a, b)


def test_two_levels_reach_twice_the_motion() -> None:
    # c(x) = a(x - 16): 8 px per frame to the middle; 4 at half and 2 at quarter resolution, where the
    # stand-in's 2-px cap first stops mattering, so one level cannot align the pair and two can.
    big = texture(128, 288)
    a, c, middle = big[..., 16:272], big[..., 0:256], big[..., 8:264]
    inner = (..., slice(16, -16), slice(24, -24))
    two = Prealigned(CappedShift(2.0), levels=2)(a, c)
    torch.testing.assert_close(two[inner], middle[inner], atol=2e-3, rtol=0)
    one = Prealigned(CappedShift(2.0), levels=1)(a, c)
    assert float((one - middle)[inner].abs().max()) > 0.05


def test_default_depth_follows_the_frame_size() -> None:
    assert [auto_levels((h, 2 * h)) for h in (40, 144, 256, 480, 511, 512, 720, 1080)] == [0, 2, 3, 3, 3, 4, 4, 5]
    assert auto_levels((1080, 60)) == auto_levels((60, 1080)) == 0


def test_default_depth_reaches_motion_that_three_levels_cannot() -> None:
    # 512-px frames, c(x) = a(x - 64): 32 px per frame, within the 2-px cap only at a sixteenth of the size,
    # so the default (four levels at this size) aligns the pair and three levels cannot.
    big = texture(512, 640)
    a, c, middle = big[..., 64:640], big[..., 0:576], big[..., 32:608]
    inner = (..., slice(64, -64), slice(96, -96))
    auto = Prealigned(CappedShift(2.0))(a, c)
    torch.testing.assert_close(auto[inner], middle[inner], atol=2e-3, rtol=0)
    three = Prealigned(CappedShift(2.0), levels=3)(a, c)
    assert float((three - middle)[inner].abs().max()) > 0.05


@pytest.mark.parametrize("levels", [1, 2])
def test_no_motion_leaves_the_model_output_unchanged(levels: int) -> None:
    torch.manual_seed(0)
    model = make_model("compressed_adacof", 5, 1).eval()
    with torch.no_grad():
        for side in (1, 2):
            for head in ("Alpha", "Beta"):
                conv = getattr(model.get_kernel, f"module{head}{side}")[7]
                conv.weight.zero_()
                conv.bias.zero_()
            conv = getattr(model.get_kernel, f"moduleWeight{side}")[7]
            conv.weight.zero_()
            conv.bias.fill_(-20.0)
            conv.bias[12] = 20.0  # the centre tap of 5x5
        a, b = (f[None] for f in example_frames(160, 192))
        torch.testing.assert_close(Prealigned(model, levels=levels)(a, b), model(a, b), atol=1e-5, rtol=0)


def test_small_frames_use_the_plain_model() -> None:
    model = lively_model()
    a, b = (f[None] for f in example_frames(2 * MIN_COARSE - 2, 80))
    with torch.no_grad():
        torch.testing.assert_close(Prealigned(model)(a, b), model(a, b), atol=1e-6, rtol=0)
    assert with_prealign(model, False) is model
    with pytest.raises(ValueError, match="at least 1"):
        Prealigned(model, levels=0)


def test_interpolator_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = lively_model()
    pa, pb = (save_rgb(tmp_path / f"{n}.png", f) for n, f in zip("ab", example_frames(96, 128), strict=True))
    a, b = load_rgb(pa), load_rgb(pb)  # the 8-bit frames the CLI reads
    # The Interpolator runs the model in its device's memory format (channels_last on the CPU), whose
    # convolutions differ from the contiguous ones in the last bits; the blend's sigmoid (temperature
    # 0.01) amplifies that to ~1e-4 at a few pixels, so the direct call runs in the same format.
    layout = torch.channels_last if use_channels_last("cpu", "fp32") else torch.contiguous_format
    same_layout = copy.deepcopy(model).to(memory_format=layout)
    with torch.no_grad():
        want = Prealigned(same_layout)(a[None], b[None])[0].clamp(0, 1)
        plain = model(a[None], b[None])[0].clamp(0, 1)
    assert float((want - plain).abs().max()) > 0.02  # the lively model's motion changes the result
    got = Interpolator(model, device="cpu", precision="fp32", tile=None, prealign=True).interpolate(a, b)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    out = tmp_path / "mid.png"
    argv = ["--first_frame", str(pa), "--second_frame", str(pb), "--output_frame", str(out), "--prealign"]
    argv += ["--checkpoint", str(save_lively(tmp_path / "m.pth")), "--device", "cpu", "--precision", "fp32"]
    assert interpolate_twoframe.main(argv) == 0
    assert "pre-aligned" in capsys.readouterr().err
    assert float((load_rgb(out) - want).abs().max()) <= 1 / 255 + 1e-6
