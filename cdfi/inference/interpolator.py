"""Inference API shared by every user-facing script: load a model once, then interpolate.

``Interpolator`` wraps a CDFI/AdaCoF model with what users need around it: the device (CUDA when
available), the numeric precision (through ``cdfi.runtime.precision``), batching of independent pairs,
slow motion by a factor 2^k (recursive midpoints), and tiled processing for frames too large for
memory.

Tiling. The kernel-estimation network is a 5-level U-Net, so every output pixel depends on a wide
neighbourhood, and the warp offsets can reach far. Tiles therefore overlap generously; every tile
starts on a multiple of 32 so that it sees the same pooling grid as the whole frame, the last tile of
a row or column ends at the frame border (where it gets the same reflect padding as the whole frame),
and overlapping outputs are blended with linear ramps that discard the outermost quarter of the
overlap of each tile, where its missing context matters most. The ramps form a partition of unity,
so a pixel covered by one tile gets exactly that tile's value.

>>> interp = Interpolator.from_checkpoint("checkpoints/CDFI_adacof.pth")
>>> middle = interp.interpolate(frame0, frame1)            # (3, H, W) in [0, 1]
>>> frames = list(interp.interpolate_sequence(video, 4))   # 3 new frames between each pair
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cdfi.inference.ensemble import ENSEMBLE_SIZES, with_ensemble
from cdfi.inference.prealign import with_prealign
from cdfi.io.checkpoint import load_model
from cdfi.runtime.precision import autocast, prepare_model, resolve_precision, to_memory_format, use_channels_last
from models import variant_name

ALIGN = 32
"""Tile origins and strides are multiples of this (the models' pooling depth)."""

DEFAULT_OVERLAP = 128
"""Overlap of neighbouring tiles in pixels; see ``tests/test_interpolator.py`` for the agreement it buys."""

MIN_TILE = 128
"""Smallest tile the automatic choice picks."""

FACTORS = (1, 2, 4, 8, 16, 32, 64)
"""Slow-motion factors accepted by ``interpolate_sequence`` (powers of two)."""


class InterpolationError(ValueError):
    """Frames or settings the interpolator cannot work with; the message is one line."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU. An explicit CUDA device must exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InterpolationError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InterpolationError(f"device {device} asked for, but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InterpolationError(f"device {device} does not exist ({torch.cuda.device_count()} CUDA GPU(s))")
    elif dev.type != "cpu":
        raise InterpolationError(f"device type {dev.type!r} is not supported; use cpu or cuda")
    return dev


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


def scene_change(frame0: torch.Tensor, frame1: torch.Tensor) -> float:
    """Mean absolute difference of two frames on a 0-255 scale (a cheap scene-cut score)."""
    return float((frame0.float() - frame1.float()).abs().mean()) * 255.0


def _as_batch(frame: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(frame, torch.Tensor):
        raise InterpolationError(f"{name} must be a tensor, got {type(frame).__name__}")
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4 or frame.shape[1] != 3:
        raise InterpolationError(f"{name} must be (3, H, W) or (N, 3, H, W), got shape {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise InterpolationError(f"{name} must be a float tensor in [0, 1], got {frame.dtype}")
    return frame


def check_pair(frame0: torch.Tensor, frame1: torch.Tensor) -> None:
    """Raise ``InterpolationError`` unless two frames can be interpolated (same shape, >= 17 px)."""
    a, b = _as_batch(frame0, "frame0"), _as_batch(frame1, "frame1")
    if a.shape != b.shape:
        raise InterpolationError(
            f"frames differ in size: {a.shape[-1]}x{a.shape[-2]} vs {b.shape[-1]}x{b.shape[-2]}"
            + (f" (batch {a.shape[0]} vs {b.shape[0]})" if a.shape[0] != b.shape[0] else "")
        )
    h, w = a.shape[-2:]
    if min(h, w) < ALIGN // 2 + 1:
        raise InterpolationError(f"frames of {w}x{h} are too small; both sides need at least {ALIGN // 2 + 1} px")


class Interpolator:
    """A loaded model plus device, precision, batching and tiling; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        precision: str | None = "fp32",
        tile: int | str | None = "auto",
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = 1,
        memory_budget: int | None = None,
        ensemble: int = 1,
        prealign: bool = False,
    ) -> None:
        """``tile``: ``"auto"`` tiles only when a frame would exceed ``memory_budget`` bytes of
        activations; an int forces tiles of that size (rounded down to a multiple of 32); ``None`` or
        0 never tiles. ``precision``: fp32, bf16, fp16 or auto (see ``cdfi.runtime.precision``).
        ``ensemble``: 1, 2, 4 or 8 flipped/time-reversed passes averaged per call (``cdfi.inference.ensemble``);
        ``prealign``: coarse-to-fine pre-alignment for large motion (``cdfi.inference.prealign``)."""
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        if isinstance(tile, str) and tile != "auto":
            raise InterpolationError(f"tile must be 'auto', a size in pixels or 0, got {tile!r}")
        if isinstance(tile, int) and tile and tile < 2 * ALIGN:
            raise InterpolationError(f"tile {tile} is too small; use at least {2 * ALIGN} px (or 0 for no tiling)")
        if overlap < 0:
            raise InterpolationError(f"overlap must be >= 0, got {overlap}")
        if batch_size < 1:
            raise InterpolationError(f"batch_size must be >= 1, got {batch_size}")
        if ensemble not in ENSEMBLE_SIZES:
            raise InterpolationError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {ensemble}")
        self.tile = tile if tile == "auto" else (int(tile) // ALIGN * ALIGN if tile else None)
        self.overlap = int(overlap)
        self.batch_size = int(batch_size)
        self.memory_budget = memory_budget or default_memory_budget(self.device)
        self.channels_last = use_channels_last(self.device, self.precision)
        self.model = prepare_model(model.eval(), self.device, self.precision, channels_last=self.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.net = with_ensemble(with_prealign(self.model, prealign), ensemble)
        self.ensemble, self.prealign = ensemble, prealign
        self.calls = 0

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        name: str | None = None,
        kernel_size: int | None = None,
        dilation: int | None = None,
        **kwargs: object,
    ) -> Interpolator:
        """Load the checkpoint's variant (detected from the file; given values must agree)."""
        return cls(load_model(path, name, kernel_size, dilation), **kwargs)  # type: ignore[arg-type]

    @property
    def variant(self) -> str:
        """Published-style variant name, e.g. ``cdfi_adacof_F_11_D_2``."""
        m = self.model
        return variant_name(getattr(m, "model_name", type(m).__name__), m.kernel_size, m.dilation)

    def tile_size(self, height: int, width: int, batch: int = 1) -> int | None:
        """The tile size used for frames of this size, ``None`` when they go through whole."""
        if self.tile is None:
            return None
        if self.tile != "auto":
            return self.tile if max(height, width) > self.tile else None
        per_px = bytes_per_pixel(self.model, self.precision) * batch
        padded = (-(-height // ALIGN) * ALIGN) * (-(-width // ALIGN) * ALIGN)
        if padded * per_px <= self.memory_budget:
            return None
        side = int((self.memory_budget / per_px) ** 0.5) // ALIGN * ALIGN
        return max(side, MIN_TILE, self.overlap + 2 * ALIGN)

    # --- single pairs and batches -------------------------------------------------------------

    def interpolate(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        """The middle frame of one pair (3, H, W) or of a batch (N, 3, H, W); same device as the input,
        float32, clamped to [0, 1]."""
        check_pair(frame0, frame1)
        single = frame0.dim() == 3
        a, b = _as_batch(frame0, "frame0"), _as_batch(frame1, "frame1")
        out = torch.cat(
            [
                self._run(a[i : i + self.batch_size], b[i : i + self.batch_size]).to(frame0.device)
                for i in range(0, a.shape[0], self.batch_size)
            ]
        )
        return out[0] if single else out

    def interpolate_batch(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Middle frames of several independent (3, H, W) pairs, run ``batch_size`` at a time when
        their sizes agree."""
        outputs: list[torch.Tensor | None] = [None] * len(pairs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (a, b) in enumerate(pairs):
            check_pair(a, b)
            if a.dim() != 3:
                raise InterpolationError(f"pair {i}: interpolate_batch takes (3, H, W) frames, got {tuple(a.shape)}")
            groups.setdefault(tuple(a.shape), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                a = torch.stack([pairs[i][0] for i in chunk])
                b = torch.stack([pairs[i][1] for i in chunk])
                out = self._run(a, b).to(pairs[chunk[0]][0].device)
                for j, i in enumerate(chunk):
                    outputs[i] = out[j]
        return outputs  # type: ignore[return-value]

    # --- slow motion --------------------------------------------------------------------------

    def is_cut(self, frame0: torch.Tensor, frame1: torch.Tensor, scene_threshold: float | None) -> bool:
        """True when ``scene_change`` of the pair exceeds ``scene_threshold`` (``None``: never)."""
        return scene_threshold is not None and scene_change(frame0, frame1) > scene_threshold

    def iter_intermediates(
        self, frame0: torch.Tensor, frame1: torch.Tensor, factor: int, scene_threshold: float | None = None
    ) -> Iterator[torch.Tensor]:
        """The ``factor - 1`` frames between two (3, H, W) frames, in time order, by recursive midpoints
        (t = 1/2 first, then 1/4 and 3/4, ...), yielded as soon as each is due. Across a scene cut
        (see ``is_cut``) the first half are copies of ``frame0`` and the rest copies of ``frame1``.
        With ``batch_size`` 1 only ``log2(factor)`` new frames are held at a time."""
        levels = _levels(factor)
        check_pair(frame0, frame1)
        if self.is_cut(frame0, frame1, scene_threshold):
            yield from _cut_frames(frame0, frame1, factor)
        elif self.batch_size == 1:
            yield from self._depth_first(frame0, frame1, levels)
        else:
            yield from self._breadth_first([(frame0, frame1)], levels)[0]

    def intermediates(
        self, frame0: torch.Tensor, frame1: torch.Tensor, factor: int, scene_threshold: float | None = None
    ) -> list[torch.Tensor]:
        """``iter_intermediates`` as a list."""
        return list(self.iter_intermediates(frame0, frame1, factor, scene_threshold))

    def intermediates_batch(
        self,
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        factor: int,
        scene_threshold: float | None = None,
    ) -> list[list[torch.Tensor]]:
        """``intermediates`` of several pairs, computed level by level so that each level runs in
        batches of ``batch_size`` across all pairs (fast on GPUs; holds every new frame in memory)."""
        levels = _levels(factor)
        for a, b in pairs:
            check_pair(a, b)
        cuts = [self.is_cut(a, b, scene_threshold) for a, b in pairs]
        todo = [pair for pair, cut in zip(pairs, cuts, strict=True) if not cut]
        mids = iter(self._breadth_first(todo, levels))
        return [_cut_frames(a, b, factor) if cut else next(mids) for (a, b), cut in zip(pairs, cuts, strict=True)]

    def interpolate_sequence(
        self,
        frames: Iterable[torch.Tensor],
        factor: int,
        scene_threshold: float | None = None,
        on_cut: Callable[[int], None] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Stream a sequence of (3, H, W) frames raised by ``factor`` (a power of two): each input
        frame followed by the ``factor - 1`` new frames before the next one; n inputs give
        (n - 1) * factor + 1 outputs. ``on_cut(i)`` is called when pair i is treated as a scene cut.
        With ``batch_size`` > 1, that many pairs are processed together (more memory, faster on GPUs)."""
        _levels(factor)
        it = iter(frames)
        try:
            prev = next(it)
        except StopIteration:
            return
        check_pair(prev, prev)
        yield prev
        chunk: list[tuple[torch.Tensor, torch.Tensor]] = []
        index = 0
        for cur in it:
            chunk.append((prev, cur))
            prev = cur
            if len(chunk) < self.batch_size:
                continue
            yield from self._emit(chunk, index, factor, scene_threshold, on_cut)
            index += len(chunk)
            chunk = []
        if chunk:
            yield from self._emit(chunk, index, factor, scene_threshold, on_cut)

    def _emit(
        self,
        chunk: list[tuple[torch.Tensor, torch.Tensor]],
        first_index: int,
        factor: int,
        scene_threshold: float | None,
        on_cut: Callable[[int], None] | None,
    ) -> Iterator[torch.Tensor]:
        """New frames and right-hand frames of consecutive pairs, in order."""
        if on_cut is not None:
            for i, (a, b) in enumerate(chunk):
                check_pair(a, b)
                if self.is_cut(a, b, scene_threshold):
                    on_cut(first_index + i)
        if len(chunk) == 1:
            a, b = chunk[0]
            yield from self.iter_intermediates(a, b, factor, scene_threshold)
            yield b
            return
        for (_, b), mids in zip(chunk, self.intermediates_batch(chunk, factor, scene_threshold), strict=True):
            yield from mids
            yield b

    def _depth_first(self, a: torch.Tensor, b: torch.Tensor, levels: int) -> Iterator[torch.Tensor]:
        """Midpoints in time order, keeping only ``levels`` frames in memory (batch 1)."""
        if levels == 0:
            return
        mid = self.interpolate(a, b)
        yield from self._depth_first(a, mid, levels - 1)
        yield mid
        yield from self._depth_first(mid, b, levels - 1)

    def _breadth_first(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], levels: int) -> list[list[torch.Tensor]]:
        """Midpoints of several pairs, one level at a time so that each level runs as batches."""
        rows = [[a, b] for a, b in pairs]
        for _ in range(levels if rows else 0):
            jobs = [(row[i], row[i + 1]) for row in rows for i in range(len(row) - 1)]
            mids = iter(self.interpolate_batch(jobs))
            rows = [_interleave(row, mids) for row in rows]
        return [row[1:-1] for row in rows]

    # --- the model call -----------------------------------------------------------------------

    def _run(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        """Model output for a batch, tiled when needed; float32 clamped to [0, 1], on the model's device
        when untiled and on the CPU when assembled from tiles."""
        n, _, h, w = frame0.shape
        tile = self.tile_size(h, w, n)
        if tile is None:
            return self._forward(frame0, frame1)
        out = torch.zeros(n, 3, h, w)
        weight = torch.zeros(1, 1, h, w)
        for t in plan_tiles(h, w, tile, self.overlap):
            rows = ramp(t.y1 - t.y0, t.y0 > 0, t.y1 < h, self.overlap)
            cols = ramp(t.x1 - t.x0, t.x0 > 0, t.x1 < w, self.overlap)
            mask = (rows[:, None] * cols[None, :])[None, None]
            part = self._forward(frame0[..., t.y0 : t.y1, t.x0 : t.x1], frame1[..., t.y0 : t.y1, t.x0 : t.x1])
            out[..., t.y0 : t.y1, t.x0 : t.x1] += part.cpu() * mask
            weight[..., t.y0 : t.y1, t.x0 : t.x1] += mask
        return out.div_(weight).clamp_(0, 1)

    def _forward(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        """One model call on the device under the chosen precision."""
        a = to_memory_format(frame0.to(self.device, torch.float32), self.channels_last)
        b = to_memory_format(frame1.to(self.device, torch.float32), self.channels_last)
        try:
            with torch.no_grad(), autocast(self.device, self.precision):
                out = self.net(a, b)
        except RuntimeError as exc:  # torch.OutOfMemoryError on CUDA; a plain RuntimeError on the CPU
            if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in str(exc):
                raise
            raise InterpolationError(
                f"out of memory on {self.device} for {a.shape[0]} frame(s) of {a.shape[-1]}x{a.shape[-2]}; "
                "use a smaller --tile (e.g. 512) or batch size"
            ) from None
        self.calls += 1
        return out.float().clamp_(0, 1).contiguous()


def _levels(factor: int) -> int:
    if factor not in FACTORS:
        raise InterpolationError(f"factor must be one of {', '.join(map(str, FACTORS))}, got {factor}")
    return factor.bit_length() - 1


def _cut_frames(frame0: torch.Tensor, frame1: torch.Tensor, factor: int) -> list[torch.Tensor]:
    """Copies instead of new frames across a scene cut: the cut falls at the middle of the gap."""
    half = factor // 2
    return [frame0.clone() for _ in range(half - 1)] + [frame1.clone() for _ in range(factor - half)]


def _interleave(row: list[torch.Tensor], mids: Iterator[torch.Tensor]) -> list[torch.Tensor]:
    out = [row[0]]
    for frame in row[1:]:
        out += [next(mids), frame]
    return out


__all__ = [
    "DEFAULT_OVERLAP",
    "FACTORS",
    "InterpolationError",
    "Interpolator",
    "Tile",
    "available_ram",
    "bytes_per_pixel",
    "check_pair",
    "default_memory_budget",
    "pick_device",
    "plan_tiles",
    "ramp",
    "scene_change",
    "tile_starts",
]
