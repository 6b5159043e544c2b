"""The pure-PyTorch AdaCoF reference against independent statements of the formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cupy_module import adacof_warp_reference


def naive_warp(inp: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, d: int, rule: str) -> torch.Tensor:
    """The published formula as plain Python loops over every output element and tap."""
    n_, c_, hp, wp = inp.shape
    taps, h, wd = w.shape[1:]
    f = math.isqrt(taps)
    ip = math.trunc if rule == "trunc" else math.floor
    out = torch.zeros(n_, c_, h, wd, dtype=torch.float64)
    for n in range(n_):
        for i in range(h):
            for j in range(wd):
                for k in range(f):
                    for l in range(f):  # noqa: E741
                        t = k * f + l
                        av, bv = float(a[n, t, i, j]), float(b[n, t, i, j])
                        ia, ib = ip(av), ip(bv)
                        fa, fb = av - ia, bv - ib
                        y, x = i + k * d + ia, j + l * d + ib
                        y0, y1 = min(max(y, 0), hp - 1), min(max(y + 1, 0), hp - 1)
                        x0, x1 = min(max(x, 0), wp - 1), min(max(x + 1, 0), wp - 1)
                        for c in range(c_):
                            s = (
                                (1 - fa) * (1 - fb) * float(inp[n, c, y0, x0])
                                + fa * (1 - fb) * float(inp[n, c, y1, x0])
                                + (1 - fa) * fb * float(inp[n, c, y0, x1])
                                + fa * fb * float(inp[n, c, y1, x1])
                            )
                            out[n, c, i, j] += float(w[n, t, i, j]) * s
    return out


def make(n: int, c: int, f: int, d: int, h: int, w: int, spread: float, seed: int = 0):
    """Random input, weights and offsets; offsets reach well past the border on both sides."""
    g = torch.Generator().manual_seed(seed)
    p = (f - 1) * d
    inp = torch.rand(n, c, h + p, w + p, generator=g, dtype=torch.float64)
    wt = torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64)
    a = (torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64) - 0.5) * 2 * spread
    b = (torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64) - 0.5) * 2 * spread
    return inp, wt, a, b


@pytest.mark.parametrize("rule", ["trunc", "floor"])
def test_reference_matches_naive_loops(rule: str) -> None:
    inp, wt, a, b = make(2, 2, 3, 2, 4, 5, spread=7.0)
    ref = adacof_warp_reference(inp, wt, a, b, 2, rule)
    assert torch.allclose(ref, naive_warp(inp, wt, a, b, 2, rule), atol=1e-12)


def test_rules_agree_for_positive_offsets_and_differ_for_negative() -> None:
    inp, wt, a, b = make(1, 3, 3, 1, 6, 6, spread=2.0)
    pos_a, pos_b = a.abs(), b.abs()
    assert torch.allclose(
        adacof_warp_reference(inp, wt, pos_a, pos_b, 1, "trunc"),
        adacof_warp_reference(inp, wt, pos_a, pos_b, 1, "floor"),
        atol=1e-12,
    )
    neg_a = -pos_a - 0.25
    diff = adacof_warp_reference(inp, wt, neg_a, pos_b, 1, "trunc") - adacof_warp_reference(
        inp, wt, neg_a, pos_b, 1, "floor"
    )
    assert diff.abs().max() > 1e-3


def grid_sample_warp(inp: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, d: int) -> torch.Tensor:
    """Sum over taps of weight * bilinear sample taken by grid_sample at the tap's position."""
    _, _, hp, wp = inp.shape
    taps, h, wd = w.shape[1:]
    f = math.isqrt(taps)
    rows = torch.arange(h, dtype=inp.dtype).view(1, h, 1)
    cols = torch.arange(wd, dtype=inp.dtype).view(1, 1, wd)
    out = 0
    for t in range(taps):
        y = rows + (t // f) * d + a[:, t]
        x = cols + (t % f) * d + b[:, t]
        grid = torch.stack([2 * x / (wp - 1) - 1, 2 * y / (hp - 1) - 1], dim=-1)
        sample = F.grid_sample(inp, grid, mode="bilinear", padding_mode="border", align_corners=True)
        out = out + w[:, t : t + 1] * sample
    return out


def test_floor_equals_grid_sample_forward_and_backward() -> None:
    inp, wt, a, b = make(2, 3, 3, 2, 5, 6, spread=6.0, seed=3)
    # Keep every position's fraction away from integers, where both are only one-sided differentiable.
    a = a.floor() + 0.15 + 0.7 * (a - a.floor())
    b = b.floor() + 0.15 + 0.7 * (b - b.floor())
    leaves1 = [t.clone().requires_grad_() for t in (inp, wt, a, b)]
    leaves2 = [t.clone().requires_grad_() for t in (inp, wt, a, b)]
    ours = adacof_warp_reference(*leaves1, 2, "floor")
    theirs = grid_sample_warp(*leaves2, 2)
    assert torch.allclose(ours, theirs, atol=1e-10)
    g = torch.randn_like(ours)
    ours.backward(g)
    theirs.backward(g)
    for x, y in zip(leaves1, leaves2, strict=True):
        assert torch.allclose(x.grad, y.grad, atol=1e-9)
