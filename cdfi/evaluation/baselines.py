"""Classical baselines that any trained interpolation model must beat.

* ``Overlay``: the average (A + C) / 2 of the two inputs. A network whose kernels collapse onto the
  centre tap produces exactly this, so it is the floor that tells "learned nothing" apart.
* ``DISFlow``: OpenCV's DIS optical flow from A to C, then both frames backward-warped half-way and
  averaged: I1(x) = (A(x - f(x)/2) + C(x + f(x)/2)) / 2.

Both are ``nn.Module``s with the models' calling convention (``(N, 3, H, W)`` pairs in [0, 1] in,
middle frame out), so the evaluation loop scores them with the same code as the networks.
"""

from __future__ import annotations

import torch
from torch import nn

from cdfi.flow import backward_warp, dis_flow


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
