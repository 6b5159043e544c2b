"""Test-time self-ensemble: average a frame interpolator over flipped and time-reversed input pairs.

The middle frame of a pair is, ideally, unchanged by playing the pair backwards and commutes with
mirroring both inputs. A trained network is neither exactly, and its errors differ between these
views; averaging the views' outputs (each mapped back) cancels part of them at the cost of one
forward pass per view. The views are taken in a fixed order, so a size N ensemble always uses the
first N of:

1. the pair as given,
2. the pair reversed in time,
3. and 4. both mirrored left-right (then also reversed),
5. to 8. both mirrored top-bottom, and both rotated by 180 degrees (each also reversed).

Time reversal comes first because it is the cheapest win (``docs/inference.md`` has the measured
gains). Every size is a group of these transformations, so the result is itself exactly symmetric
under its views: the size-2 output of ``(b, a)`` equals that of ``(a, b)``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

ENSEMBLE_SIZES = (1, 2, 4, 8)
"""Accepted ensemble sizes (1 = the plain model)."""


@dataclass(frozen=True)
class View:
    """One input transformation: flip these spatial dims of both frames, and maybe swap their order."""

    flip_dims: tuple[int, ...]
    reverse_time: bool

    def apply(self, frame0: torch.Tensor, frame1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed pair."""
        if self.flip_dims:
            frame0, frame1 = frame0.flip(self.flip_dims), frame1.flip(self.flip_dims)
        return (frame1, frame0) if self.reverse_time else (frame0, frame1)

    def invert(self, frame: torch.Tensor) -> torch.Tensor:
        """Map an output of the transformed pair back (time reversal leaves the middle frame alone)."""
        return frame.flip(self.flip_dims) if self.flip_dims else frame


VIEWS = tuple(View(dims, swap) for dims in ((), (-1,), (-2,), (-2, -1)) for swap in (False, True))
"""All eight views in the order the ensemble sizes take them."""


def check_ensemble_size(size: int) -> int:
    """``size`` if it is one of ``ENSEMBLE_SIZES``; ValueError otherwise."""
    if size not in ENSEMBLE_SIZES:
        raise ValueError(f"ensemble size must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {size}")
    return size


class SelfEnsemble(nn.Module):
    """``model`` averaged over the first ``size`` views (see the module docstring); same call signature.

    The model is called once per view, one after another, so peak memory is that of one call. Outputs
    may be a tensor or a dict holding ``frame1`` (train-mode models); the result is a float32 tensor.
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model = model
        self.views = VIEWS[: check_ensemble_size(size)]

    def forward(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for view in self.views:
            out = self.model(*view.apply(frame0, frame1))
            out = view.invert(out["frame1"] if isinstance(out, dict) else out).float()
            total = out if total is None else total.add_(out)
        assert total is not None
        return total.div_(len(self.views))


def with_ensemble(model: nn.Module, size: int) -> nn.Module:
    """``model`` itself for size 1, else ``SelfEnsemble(model, size)``."""
    return model if check_ensemble_size(size) == 1 else SelfEnsemble(model, size)


def add_ensemble_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--ensemble {1,2,4,8}`` (default 1, the plain model) to a CLI."""
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        choices=ENSEMBLE_SIZES,
        help="test-time self-ensemble: average N passes over time-reversed and mirrored inputs; N times slower, "
        "2 = both frame orders (see docs/inference.md; default 1, the published protocol)",
    )
