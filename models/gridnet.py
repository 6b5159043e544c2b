"""GridNet (Fourure et al., BMVC 2017) as used by CDFI's frame synthesis: 3 rows x 6 columns."""

from __future__ import annotations

import torch
from torch import nn


def _prelu_conv(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
    return [nn.PReLU(), nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)]


class LateralBlock(nn.Module):
    """PReLU, conv, PReLU, conv plus a residual (through its own conv when widths differ)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.f = nn.Sequential(*_prelu_conv(in_ch, out_ch), *_prelu_conv(out_ch, out_ch))
        if in_ch != out_ch:
            self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv(x) if hasattr(self, "conv") else x
        return self.f(x) + residual


class DownSamplingBlock(nn.Module):
    """PReLU, stride-2 conv, PReLU, conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.f = nn.Sequential(*_prelu_conv(in_ch, out_ch, stride=2), *_prelu_conv(out_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class UpSamplingBlock(nn.Module):
    """Bilinear x2 (align_corners=False), PReLU, conv, PReLU, conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            *_prelu_conv(in_ch, out_ch),
            *_prelu_conv(out_ch, out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class GridNet(nn.Module):
    """Three resolution rows; columns 0-2 go down, columns 3-5 come back up (see the reference doc)."""

    def __init__(self, in_ch: int, out_ch: int, widths: tuple[int, int, int] | list[int] = (32, 64, 96)) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.lateral_init = LateralBlock(in_ch, c0)
        for row, ch in enumerate((c0, c1, c2)):
            for col in range(5):
                setattr(self, f"lateral_{row}_{col}", LateralBlock(ch, ch))
        for row, (a, b) in enumerate(((c0, c1), (c1, c2))):
            for col in range(3):
                setattr(self, f"down_{row}_{col}", DownSamplingBlock(a, b))
        for row, (a, b) in enumerate(((c1, c0), (c2, c1))):
            for col in range(3):
                setattr(self, f"up_{row}_{col}", UpSamplingBlock(a, b))
        self.lateral_final = LateralBlock(c0, out_ch)

    def _block(self, kind: str, row: int, col: int) -> nn.Module:
        return getattr(self, f"{kind}_{row}_{col}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.lateral_init(x)
        s1 = self.down_0_0(s0)
        s2 = self.down_1_0(s1)
        for c in (1, 2):
            s0 = self._block("lateral", 0, c - 1)(s0)
            s1 = self._block("down", 0, c)(s0) + self._block("lateral", 1, c - 1)(s1)
            s2 = self._block("down", 1, c)(s1) + self._block("lateral", 2, c - 1)(s2)
        for c in (3, 4, 5):
            u = c - 3
            s2 = self._block("lateral", 2, c - 1)(s2)
            s1 = self._block("up", 1, u)(s2) + self._block("lateral", 1, c - 1)(s1)
            s0 = self._block("up", 0, u)(s1) + self._block("lateral", 0, c - 1)(s0)
        return self.lateral_final(s0)
