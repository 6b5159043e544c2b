"""Inference API shared by every user-facing script: load a model once, then interpolate.

``Interpolator`` wraps a CDFI/AdaCoF model with what users need around it: where and how it runs (a
``cdfi.runtime.Runtime``: device, precision, threads), what wraps it (``InferenceOptions``:
pre-alignment, self-ensemble; the stack is built by ``cdfi.inference.stack``), batching of
independent pairs, slow motion by a factor 2^k (recursive midpoints), and tiled processing for frames
too large for memory (``cdfi.inference.tiling``).

Scripts resolve their flags once and pass typed values::

    runtime = resolve_runtime(args)                       # --device/--gpu_id/--precision/--threads
    interp = Interpolator.from_checkpoint(path, runtime=runtime, options=InferenceOptions(ensemble=2))

From Python, the plain keywords ``device`` (default auto: CUDA when available), ``precision`` (default
fp32), ``ensemble`` and ``prealign`` are a shorthand that resolves through ``resolve_runtime`` and
``InferenceOptions``; give either those or ``runtime``/``options``, not both:

>>> interp = Interpolator.from_checkpoint("checkpoints/CDFI_adacof.pth", device="cpu")
>>> middle = interp.interpolate(frame0, frame1)            # (3, H, W) in [0, 1]
>>> frames = list(interp.interpolate_sequence(video, 4))   # 3 new frames between each pair
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from cdfi.inference.ensemble import ENSEMBLE_SIZES
from cdfi.inference.frames import InterpolationError, as_batch, check_pair, scene_change
from cdfi.inference.stack import InferenceOptions, build_inference_stack
from cdfi.inference.tiling import (
    DEFAULT_OVERLAP,
    TileSetting,
    auto_tile_size,
    bytes_per_pixel,
    check_tile_setting,
    default_memory_budget,
    run_tiled,
)
from cdfi.io.checkpoint import load_model
from cdfi.runtime import DeviceError, Runtime, resolve_runtime
from cdfi.runtime.precision import to_memory_format, use_channels_last
from models import variant_name

FACTORS = (1, 2, 4, 8, 16, 32, 64)
"""Slow-motion factors accepted by ``interpolate_sequence`` (powers of two)."""


def runtime_from(
    runtime: Runtime | None = None, device: str | torch.device | None = None, precision: str | None = None
) -> Runtime:
    """``runtime`` itself, or one resolved from the ``device``/``precision`` shorthand (device auto,
    precision fp32 when left out). Both at once is a ``TypeError``; a device that cannot be used is an
    ``InterpolationError``, a precision it cannot run a ``PrecisionError``."""
    if runtime is not None:
        if not isinstance(runtime, Runtime):
            raise TypeError(f"runtime must be a cdfi.runtime.Runtime, got {type(runtime).__name__}")
        if device is not None or precision is not None:
            raise TypeError("give either runtime or device/precision, not both")
        return runtime
    try:
        return resolve_runtime(device=device, precision="fp32" if precision is None else precision, announce=False)
    except DeviceError as exc:
        raise InterpolationError(str(exc)) from None


def options_from(
    options: InferenceOptions | None = None, ensemble: int | None = None, prealign: bool | None = None
) -> InferenceOptions:
    """``options`` itself, or ``InferenceOptions`` from the ``ensemble``/``prealign`` shorthand (1 and off
    when left out). Both at once is a ``TypeError``; an ensemble size not in 1, 2, 4, 8 an
    ``InterpolationError``."""
    if options is not None:
        if not isinstance(options, InferenceOptions):
            raise TypeError(f"options must be an InferenceOptions, got {type(options).__name__}")
        if ensemble is not None or prealign is not None:
            raise TypeError("give either options or ensemble/prealign, not both")
        return options
    size = 1 if ensemble is None else ensemble
    if size not in ENSEMBLE_SIZES:
        raise InterpolationError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {size}")
    return InferenceOptions(prealign=bool(prealign), ensemble=size)


def _check_settings(tile: TileSetting, overlap: int, batch_size: int) -> int | str | None:
    if overlap < 0:
        raise InterpolationError(f"overlap must be >= 0, got {overlap}")
    if batch_size < 1:
        raise InterpolationError(f"batch_size must be >= 1, got {batch_size}")
    return check_tile_setting(tile)


class Interpolator:
    """A loaded model plus its runtime, inference options, batching and tiling; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        runtime: Runtime | None = None,
        options: InferenceOptions | None = None,
        *,
        tile: TileSetting = "auto",
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = 1,
        memory_budget: int | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        ensemble: int | None = None,
        prealign: bool | None = None,
    ) -> None:
        """``runtime``: where and how to run (see ``runtime_from`` for the ``device``/``precision``
        shorthand); ``options``: pre-alignment and self-ensemble (or the ``ensemble``/``prealign``
        shorthand, see ``options_from``). ``tile``: ``"auto"`` tiles only when a frame would exceed
        ``memory_budget`` bytes of activations (default: ``default_memory_budget`` of the device); an
        int forces tiles of that size (rounded down to a multiple of 32); ``None`` or 0 never tiles.
        ``overlap``: of neighbouring tiles in px; ``batch_size``: pairs per model call."""
        self.tile = _check_settings(tile, overlap, batch_size)
        self.runtime = runtime_from(runtime, device, precision)
        self.options = options_from(options, ensemble, prealign)
        self.overlap = int(overlap)
        self.batch_size = int(batch_size)
        self.memory_budget = memory_budget or default_memory_budget(self.device)
        self.channels_last = use_channels_last(self.device, self.precision)
        self.model, self.net = build_inference_stack(
            model, self.runtime, self.options, channels_last=self.channels_last
        )
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.calls = 0

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        model: str | None = None,
        kernel_size: int | None = None,
        dilation: int | None = None,
        *,
        runtime: Runtime | None = None,
        options: InferenceOptions | None = None,
        tile: TileSetting = "auto",
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = 1,
        memory_budget: int | None = None,
        assume_dilation: int | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        ensemble: int | None = None,
        prealign: bool | None = None,
    ) -> Interpolator:
        """Load the checkpoint's variant (detected from the file; ``model``, ``kernel_size`` and
        ``dilation``, where given, must agree) and wrap it. The settings, runtime and options are
        checked before the file is read. ``assume_dilation``: the dilation of a file without metadata
        (an AdaCoF-pytorch ``ckpt.pth``, from its ``config.txt``); other keywords as for ``__init__``."""
        _check_settings(tile, overlap, batch_size)
        runtime = runtime_from(runtime, device, precision)
        options = options_from(options, ensemble, prealign)
        loaded = load_model(path, model, kernel_size, dilation, assume_dilation=assume_dilation)
        return cls(
            loaded,
            runtime,
            options,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            memory_budget=memory_budget,
        )

    @property
    def device(self) -> torch.device:
        """The runtime's device."""
        return self.runtime.device

    @property
    def precision(self) -> str:
        """The runtime's resolved precision (fp32, bf16 or fp16)."""
        return self.runtime.precision

    @property
    def ensemble(self) -> int:
        """Self-ensemble size (1: the plain model)."""
        return self.options.ensemble

    @property
    def prealign(self) -> bool:
        """Whether inputs are pre-aligned."""
        return self.options.prealign

    @property
    def variant(self) -> str:
        """Published-style variant name, e.g. ``cdfi_adacof_F_11_D_2``."""
        m = self.model
        return variant_name(getattr(m, "model_name", type(m).__name__), m.kernel_size, m.dilation)

    def describe(self) -> str:
        """``cpu (fp32, self-ensemble of 2)``: the device, precision and options, for a command's one line."""
        return f"{self.device} ({', '.join([self.precision, *self.options.describe()])})"

    def tile_size(self, height: int, width: int, batch: int = 1) -> int | None:
        """The tile size used for frames of this size, ``None`` when they go through whole."""
        if self.tile is None:
            return None
        if isinstance(self.tile, int):
            return self.tile if max(height, width) > self.tile else None
        per_px = bytes_per_pixel(self.model, self.precision) * batch
        return auto_tile_size(height, width, per_px, self.memory_budget, self.overlap)

    # --- single pairs and batches -------------------------------------------------------------

    def interpolate(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        """The middle frame of one pair (3, H, W) or of a batch (N, 3, H, W); same device as the input,
        float32, clamped to [0, 1]."""
        check_pair(frame0, frame1)
        single = frame0.dim() == 3
        a, b = as_batch(frame0, "frame0"), as_batch(frame1, "frame1")
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
        return run_tiled(self._forward, frame0, frame1, tile, self.overlap)

    def _forward(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        """One call of the inference stack on the device under the runtime's precision."""
        a = to_memory_format(frame0.to(self.device, torch.float32), self.channels_last)
        b = to_memory_format(frame1.to(self.device, torch.float32), self.channels_last)
        try:
            with torch.no_grad(), self.runtime.autocast():
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
    "InferenceOptions",
    "InterpolationError",
    "Interpolator",
    "check_pair",
    "options_from",
    "runtime_from",
    "scene_change",
]
