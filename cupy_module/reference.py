"""Pure-PyTorch AdaCoF warp: the executable statement of the published formula.

It is written for clarity, not speed: one gather per tap, autograd through ordinary tensor ops. That
makes its backward pass the true gradient of its forward pass, which the fast backends are tested
against.
"""

from __future__ import annotations

import torch

SAMPLING_RULES = ("trunc", "floor")


def integer_part(offset: torch.Tensor, sampling: str) -> torch.Tensor:
    """Integer part of a sampling offset under the given rule (no gradient flows through it).

    ``trunc`` is the published CUDA kernel's C cast (toward zero, so the fraction is signed);
    ``floor`` gives true bilinear interpolation (fraction in [0, 1)).
    """
    if sampling == "trunc":
        return torch.trunc(offset.detach())
    if sampling == "floor":
        return torch.floor(offset.detach())
    raise ValueError(f"unknown sampling rule {sampling!r}; expected one of {SAMPLING_RULES}")


def adacof_warp_reference(
    input: torch.Tensor,
    weight: torch.Tensor,
    offset_i: torch.Tensor,
    offset_j: torch.Tensor,
    dilation: int,
    sampling: str = "trunc",
) -> torch.Tensor:
    """AdaCoF warp of ``input`` (N, C, H+2p, W+2p) into (N, C, H, W), gathering tap by tap.

    ``weight``, ``offset_i`` (vertical) and ``offset_j`` (horizontal) are (N, F*F, H, W). Each of the
    four bilinear corner indices is clamped to the border independently, as in the published kernel.
    """
    n, c, hp, wp = input.shape
    taps, h, w = weight.shape[1:]
    f = round(taps**0.5)
    rows = torch.arange(h, device=input.device).view(1, h, 1)
    cols = torch.arange(w, device=input.device).view(1, 1, w)
    flat = input.reshape(n, c, hp * wp)
    out = input.new_zeros(n, c, h, w)

    def gather(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        idx = (y.clamp(0, hp - 1) * wp + x.clamp(0, wp - 1)).reshape(n, 1, h * w).expand(n, c, h * w)
        return torch.gather(flat, 2, idx).reshape(n, c, h, w)

    for k in range(f):
        for l in range(f):  # noqa: E741 (k, l: the tap row and column, as in the paper)
            t = k * f + l
            a, b = offset_i[:, t], offset_j[:, t]
            ia, ib = integer_part(a, sampling), integer_part(b, sampling)
            fa, fb = (a - ia).unsqueeze(1), (b - ib).unsqueeze(1)
            y = rows + k * dilation + ia.long()
            x = cols + l * dilation + ib.long()
            sample = (
                (1 - fa) * (1 - fb) * gather(y, x)
                + fa * (1 - fb) * gather(y + 1, x)
                + (1 - fa) * fb * gather(y, x + 1)
                + fa * fb * gather(y + 1, x + 1)
            )
            out = out + weight[:, t : t + 1] * sample
    return out
