"""Test-time self-ensemble: each view against a hand-written formula on toy interpolators, the exact
symmetries a group average must have on a real (seeded) model, and the API and two-frame CLI (the
evaluation CLI's ``--ensemble`` is tested in ``test_evaluation.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference_helpers import example_frames, lively_model, load_rgb, reference_middle, save_lively, save_rgb
from torch import nn

import interpolate_twoframe
from cdfi.inference.ensemble import ENSEMBLE_SIZES, VIEWS, SelfEnsemble, with_ensemble
from cdfi.inference.interpolator import InterpolationError, Interpolator


class Weighted(nn.Module):
    """Not time-symmetric: 0.75 of the first frame plus 0.25 of the second."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 0.75 * a + 0.25 * b


class ShiftRight(nn.Module):
    """Not mirror-symmetric: the first frame moved one pixel right and one down (wrapping), as a dict."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"frame1": torch.roll(a, shifts=(1, 1), dims=(-2, -1))}


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    a, b = example_frames(40, 56)
    return a[None], b[None]


def test_views_are_eight_distinct_involutions(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    assert len(set(VIEWS)) == 8 and VIEWS[0].flip_dims == () and not VIEWS[0].reverse_time
    assert VIEWS[1].reverse_time and VIEWS[1].flip_dims == ()  # size 2 = both frame orders
    for view in VIEWS:
        x, y = view.apply(*view.apply(a, b))
        torch.testing.assert_close((x, y), (a, b), rtol=0, atol=0)
        torch.testing.assert_close(view.invert(view.invert(a)), a, rtol=0, atol=0)


def test_time_reversal_averages_the_two_orders(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    # (0.75 a + 0.25 b + 0.75 b + 0.25 a) / 2 = (a + b) / 2 for sizes 2, 4 and 8
    for size in (2, 4, 8):
        torch.testing.assert_close(SelfEnsemble(Weighted(), size)(a, b), (a + b) / 2)
    torch.testing.assert_close(SelfEnsemble(Weighted(), 1)(a, b), 0.75 * a + 0.25 * b)


def test_mirrors_cancel_a_shift(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    roll = lambda dy, dx: torch.roll(a, shifts=(dy, dx), dims=(-2, -1))  # noqa: E731
    # size 4: identity and left-right mirror, each in both orders (frame0 is a, then b)
    got4 = SelfEnsemble(ShiftRight(), 4)(a, b)
    rollb = lambda dy, dx: torch.roll(b, shifts=(dy, dx), dims=(-2, -1))  # noqa: E731
    want4 = (roll(1, 1) + rollb(1, 1) + roll(1, -1) + rollb(1, -1)) / 4
    torch.testing.assert_close(got4, want4)
    got8 = SelfEnsemble(ShiftRight(), 8)(a, b)
    shifts = ((1, 1), (1, -1), (-1, 1), (-1, -1))
    want8 = sum(roll(*s) + rollb(*s) for s in shifts) / 8
    torch.testing.assert_close(got8, want8)


def test_group_average_is_exactly_symmetric_on_a_real_model(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = lively_model()
    a, b = pair
    with torch.no_grad():
        plain_ab, plain_ba = model(a, b), model(b, a)
        assert (plain_ab - plain_ba).abs().max() > 0.05  # the model alone is far from time-symmetric
        ens2 = SelfEnsemble(model, 2)
        torch.testing.assert_close(ens2(a, b), ens2(b, a), rtol=0, atol=1e-6)
        torch.testing.assert_close(ens2(a, b), (plain_ab + plain_ba) / 2, rtol=0, atol=1e-6)
        ens8 = SelfEnsemble(model, 8)
        out = ens8(a, b)
        for dims in ((-1,), (-2,), (-2, -1)):
            torch.testing.assert_close(ens8(a.flip(dims), b.flip(dims)), out.flip(dims), rtol=0, atol=1e-5)
        torch.testing.assert_close(ens8(b, a), out, rtol=0, atol=1e-5)


def test_sizes_and_errors() -> None:
    model = Weighted()
    assert with_ensemble(model, 1) is model
    assert isinstance(with_ensemble(model, 4), SelfEnsemble)
    for bad in (0, 3, 16):
        with pytest.raises(ValueError, match="ensemble size must be one of 1, 2, 4, 8"):
            with_ensemble(model, bad)
        with pytest.raises(InterpolationError, match="ensemble must be one of"):
            Interpolator(lively_model(), device="cpu", ensemble=bad)
    assert ENSEMBLE_SIZES == (1, 2, 4, 8)


def test_interpolator_ensemble_matches_both_orders() -> None:
    model = lively_model()
    a, b = example_frames(40, 56)
    interp = Interpolator(model, device="cpu", precision="fp32", tile=None, ensemble=2)
    want = (reference_middle(model, a, b) + reference_middle(model, b, a)) / 2
    # the ensemble averages before clamping; both terms here are clamped, so allow what clamping moves
    torch.testing.assert_close(interp.interpolate(a, b), want, rtol=0, atol=2e-3)
    torch.testing.assert_close(interp.interpolate(b, a), interp.interpolate(a, b), rtol=0, atol=1e-6)


def test_twoframe_cli_ensemble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_lively(tmp_path / "m.pth")
    a, b = example_frames(40, 56)
    fa, fb = save_rgb(tmp_path / "a.png", a), save_rgb(tmp_path / "b.png", b)
    outs = {}
    for order, (x, y) in {"ab": (fa, fb), "ba": (fb, fa)}.items():
        out = tmp_path / f"{order}.png"
        argv = ["--first_frame", str(x), "--second_frame", str(y), "--output_frame", str(out)]
        argv += ["--checkpoint", str(ckpt), "--device", "cpu", "--precision", "fp32", "--ensemble", "2"]
        assert interpolate_twoframe.main(argv) == 0
        assert "self-ensemble of 2" in capsys.readouterr().err
        outs[order] = load_rgb(out)
    assert float((outs["ab"] - outs["ba"]).abs().max()) <= 1 / 255 + 1e-6
