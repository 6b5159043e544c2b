"""Tiled processing of frames too large for memory: the memory budget, the tile plan and the blending.

The kernel-estimation network is a 5-level U-Net, so every output pixel depends on a wide
neighbourhood, and the warp offsets can reach far. Tiles therefore overlap generously; every tile
starts on a multiple of 32 so that it sees the same pooling grid as the whole frame, the last tile of
a row or column ends at the frame border (where it gets the same reflect padding as the whole frame),
and overlapping outputs are blended with linear ramps that discard the outermost quarter of the
overlap of each tile, where its missing context matters most. The ramps form a partition of unity,
so a pixel covered by one tile gets exactly that tile's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cdfi.inference.frames import ALIGN, InterpolationError

DEFAULT_OVERLAP = 128
"""Overlap of neighbouring tiles in pixels; see ``tests/test_interpolator.py`` for the agreement it buys."""

MIN_TILE = 128
"""Smallest tile the automatic choice picks."""

TileSetting = int | str | None
"""``"auto"`` (tile when memory requires), a size in pixels, or ``None``/0 (never tile)."""


def bytes_per_pixel(model: nn.Module, precision: str = "fp32") -> int:
    """Rough peak activation memory of one forward pass per input pixel (batch 1).

    Measured on the CPU in fp32 (peak RSS at 256x256 and 512x512): about 2.1 kB for AdaCoF and
    compressed AdaCoF F5/D1 and 5.8 kB for CDFI F11/D2. The heads emit 6 maps of F*F channels at full
    resolution, which dominates; the formula errs on the large side. Reduced precision saves on the
    convolutions only, hence the modest discount.
    """
    taps = getattr(model, "kernel_size", 11) ** 2
    per_px = 1200 + 36 * taps
    if getattr(model, "model_name", "") == "cdfi_adacof":
        per_px += 1200
    return int(per_px * (0.75 if precision in ("bf16", "fp16") else 1.0))


def available_ram(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """Bytes of RAM available to new allocations (``MemAvailable``), ``None`` where unknown."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_memory_budget(device: torch.device) -> int:
    """Bytes of activations one forward pass may use. GPU: 60% of its free memory. CPU: a quarter of the
    available RAM, between 1 and 4 GiB (2 GiB where unknown). Measured for CDFI F11/D2 in fp32: a 4K
    pair with a 2 GiB budget (544 px tiles) peaked at 3.5 GiB RSS; one 768 px tile (the 4 GiB choice)
    peaks at 4.05 GiB, so a 4K pair stays near 4.5 GiB, inside the 8 GB goal, while machines with
    room to spare get fewer, larger tiles (less overlap work)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    ram = available_ram()
    if ram is None:
        return 2 << 30
    return int(min(max(ram // 4, 1 << 30), 4 << 30))


def check_tile_setting(tile: TileSetting) -> int | str | None:
    """``tile`` validated: ``"auto"``, a size rounded down to a multiple of 32 (at least 64), or ``None``."""
    if isinstance(tile, str):
        if tile != "auto":
            raise InterpolationError(f"tile must be 'auto', a size in pixels or 0, got {tile!r}")
        return tile
    if not tile:
        return None
    if tile < 2 * ALIGN:
        raise InterpolationError(f"tile {tile} is too small; use at least {2 * ALIGN} px (or 0 for no tiling)")
    return int(tile) // ALIGN * ALIGN


def auto_tile_size(height: int, width: int, per_px: int, memory_budget: int, overlap: int) -> int | None:
    """The tile side for frames whose activations (``per_px`` bytes per padded pixel) would exceed
    ``memory_budget``; ``None`` when they fit whole."""
    padded = (-(-height // ALIGN) * ALIGN) * (-(-width // ALIGN) * ALIGN)
    if padded * per_px <= memory_budget:
        return None
    side = int((memory_budget / per_px) ** 0.5) // ALIGN * ALIGN
    return max(side, MIN_TILE, overlap + 2 * ALIGN)


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``y0:y1`` and columns ``x0:x1`` of the frame."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of tiles along one axis: multiples of 32, consecutive tiles overlapping by at least
    ``overlap``, the last one ending at ``length`` (and possibly shorter than ``tile``)."""
    if length <= tile:
        return [0]
    stride = (tile - overlap) // ALIGN * ALIGN
    if stride < ALIGN:
        raise InterpolationError(f"tile {tile} is too small for an overlap of {overlap} px (needs >= overlap + 32)")
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return starts


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """All tiles covering a frame, row by row."""
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    return [Tile(y, min(y + tile, height), x, min(x + tile, width)) for y in rows for x in cols]


def ramp(length: int, ramp_start: bool, ramp_end: bool, overlap: int) -> torch.Tensor:
    """1-D blending weights of a tile side: 1 inside, a linear ramp over the middle half of the overlap
    at each edge shared with a neighbour, 0 on the outer quarter. Two neighbours' ramps sum to 1."""
    margin = overlap // 4
    width = max(overlap - 2 * margin, 1)
    w = torch.ones(length)
    d = torch.arange(length, dtype=torch.float32)
    if ramp_start:
        w = torch.minimum(w, ((d - margin + 0.5) / width).clamp(0, 1))
    if ramp_end:
        w = torch.minimum(w, ((length - 1 - d - margin + 0.5) / width).clamp(0, 1))
    return w


def run_tiled(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    frame0: torch.Tensor,
    frame1: torch.Tensor,
    tile: int,
    overlap: int,
) -> torch.Tensor:
    """``forward`` over the tiles of an (N, 3, H, W) pair, blended into one float32 frame on the CPU,
    clamped to [0, 1]."""
    n, _, h, w = frame0.shape
    out = torch.zeros(n, 3, h, w)
    weight = torch.zeros(1, 1, h, w)
    for t in plan_tiles(h, w, tile, overlap):
        rows = ramp(t.y1 - t.y0, t.y0 > 0, t.y1 < h, overlap)
        cols = ramp(t.x1 - t.x0, t.x0 > 0, t.x1 < w, overlap)
        mask = (rows[:, None] * cols[None, :])[None, None]
        part = forward(frame0[..., t.y0 : t.y1, t.x0 : t.x1], frame1[..., t.y0 : t.y1, t.x0 : t.x1])
        out[..., t.y0 : t.y1, t.x0 : t.x1] += part.cpu() * mask
        weight[..., t.y0 : t.y1, t.x0 : t.x1] += mask
    return out.div_(weight).clamp_(0, 1)


__all__ = [
    "DEFAULT_OVERLAP",
    "MIN_TILE",
    "Tile",
    "TileSetting",
    "auto_tile_size",
    "available_ram",
    "bytes_per_pixel",
    "check_tile_setting",
    "default_memory_budget",
    "plan_tiles",
    "ramp",
    "run_tiled",
    "tile_starts",
]
