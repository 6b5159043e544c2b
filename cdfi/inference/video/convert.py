"""Video conversion: any output frame rate, the other tracks kept, any of the video codecs.

``prepare_conversion`` checks everything that needs no model (input, rates, codec, container, output
location, a frame folder's resume state, the other tracks) and prints the notes; ``Conversion.run``
then streams the input through an ``Interpolator``. ``convert_video`` is both in one call.

The streaming loop takes input pairs in order. Each pair's output frames come from ``Timeline`` (see
``timing.py``); the nodes they need are computed level by level, batched across up to ``batch_size``
pairs, and shared by every output frame of the pair. Scene cuts copy the nearer input, frames already
on disk (resume) are skipped without reading their inputs, and a video is encoded in a background
thread while the model works.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from cdfi.inference.frames import check_pair
from cdfi.inference.interpolator import Interpolator
from cdfi.inference.prealign import auto_levels
from cdfi.inference.tiling import plan_tiles
from cdfi.inference.video.audio import TrackMuxer, TrackPlan, check_audio_mode, plan_tracks
from cdfi.inference.video.sinks import FolderSink, FrameSink, Prefetch, VideoSink
from cdfi.inference.video.timing import Node, Placement, Timeline, node_levels
from cdfi.io.atomic import OutputWriteError, ensure_writable
from cdfi.io.video import (
    EncoderPlan,
    FolderWriter,
    FrameNaming,
    FrameSource,
    GifPreview,
    VideoError,
    VideoWriter,
    check_container,
    codec_spec,
    describe_rate,
    open_source,
    output_kind,
    plan_encoder,
)

DEFAULT_TOLERANCE = Fraction(1, 16)
"""Default ``--time_tolerance`` for ``--target_fps``: 1/16 of an input frame interval (three bisection
levels at most)."""

DEFAULT_INPUT_FPS = Fraction(25)
"""Rate of a frame folder when ``--input_fps`` is not given."""

FACTORS = (1, 2, 4, 8, 16, 32, 64)

Note = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class ConversionOptions:
    """Everything about a conversion but the model.

    Rate: ``factor`` (2^k, exact midpoints) or ``target_fps`` (any rate; frames placed within
    ``time_tolerance`` input frame intervals, default 1/16); ``fps`` plays the frames back at another
    rate (slow motion); ``input_fps`` is a frame folder's rate (default 25). Output: ``codec`` (``None``:
    H.264 for a video name, frames for a folder), ``crf``, ``preset``, ``lossless``; ``naming`` the
    frame names of a folder (and of a folder input in the published layout). ``audio``: ``auto``,
    ``stretch`` or ``none`` (see ``audio.AUDIO_MODES``). ``checkpoint`` is recorded in a folder's
    manifest, so that a resume with another model is refused."""

    factor: int | None = None
    target_fps: Fraction | None = None
    time_tolerance: Fraction | None = None
    fps: Fraction | None = None
    input_fps: Fraction | None = None
    scene_threshold: float | None = None
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    lossless: bool = False
    audio: str = "auto"
    naming: FrameNaming = field(default_factory=FrameNaming)
    gif: str | Path | None = None
    gif_frames: int = 96
    force: bool = False
    checkpoint: str | None = None


@dataclass
class ConversionProgress:
    """Passed to the progress callback after every output frame."""

    frames: int
    total: int | None
    model_calls: int


@dataclass
class ConversionResult:
    """What a conversion did; ``summary()`` is the one line the command prints."""

    output: Path
    frames: int
    inputs: int
    size: tuple[int, int]
    fps: Fraction
    rate: Fraction
    in_rate: Fraction
    encoding: str
    cuts: int
    model_calls: int
    naive_calls: int
    max_error: Fraction
    tracks: list[TrackPlan]
    seconds: float
    exact: bool

    def summary(self) -> str:
        w, h = self.size
        what = f"{self.frames} frames" + (f", {self.cuts} scene cut(s) copied" if self.cuts else "")
        rate = f"{describe_rate(self.fps)} fps" + (
            f" (made at {describe_rate(self.rate)} fps)" if self.rate != self.fps else ""
        )
        if self.exact:
            timing = "exact midpoints"
        elif self.max_error == 0:
            timing = "every frame at its exact time"
        else:
            ms = float(self.max_error / self.in_rate) * 1e3
            timing = f"timing error at most {self.max_error} of an input frame interval ({ms:.1f} ms)"
        calls = f"{self.model_calls} model calls (each output frame bisected on its own: {self.naive_calls})"
        tracks = "; " + ", ".join(p.describe() for p in self.tracks) if self.tracks else ""
        return (
            f"wrote {self.output.resolve()} ({what} from {self.inputs} inputs, {w}x{h}, {rate}, {self.encoding}; "
            f"{timing}, {calls}{tracks}; {self.seconds:.1f} s)"
        )


def default_output(input_video: str | Path, label: str, suffix: str) -> Path:
    """``<input name>_<label><suffix>`` in the current folder; a file's name keeps every dot but its suffix
    (``my.clip.v2.mp4`` gives ``my.clip.v2_x2.mp4``), a folder's name is kept whole."""
    path = Path(input_video).resolve()
    stem = path.name if path.is_dir() else path.stem
    return Path(f"{stem or 'output'}_{label}{suffix}")


def _check_options(o: ConversionOptions) -> None:
    if o.factor is not None and o.target_fps is not None:
        raise VideoError("--factor and --target_fps: give one (--target_fps R covers --factor 2^k)")
    if o.factor is not None and o.factor not in FACTORS:
        raise VideoError(f"--factor {o.factor}: use one of {', '.join(map(str, FACTORS[1:-1]))}")
    for flag, rate in (("--target_fps", o.target_fps), ("--fps", o.fps), ("--input_fps", o.input_fps)):
        if rate is not None and rate <= 0:
            raise VideoError(f"{flag} {rate}: a frame rate must be positive")
    if o.time_tolerance is not None and not 0 < o.time_tolerance < Fraction(1, 2):
        raise VideoError(
            f"--time_tolerance {o.time_tolerance}: give a fraction of the input frame interval above 0 and below 1/2"
        )
    if o.scene_threshold is not None and o.scene_threshold < 0:
        raise VideoError(f"--scene_threshold must be >= 0, got {o.scene_threshold}")
    if o.gif_frames < 2:
        raise VideoError(f"--gif_frames must be at least 2, got {o.gif_frames}")
    check_audio_mode(o.audio)


def check_frame_size(source: FrameSource) -> None:
    """Refuse frames too small for the model before loading it; the message names the input."""
    probe = torch.empty(3, source.height, source.width, device="meta")
    try:
        check_pair(probe, probe)
    except ValueError as exc:
        raise VideoError(f"{source.path}: {exc}") from None


def prealign_depths(interp: Interpolator, height: int, width: int) -> list[int]:
    """The pre-alignment depths the interpolator uses on frames of this size (one per tile shape)."""
    if not interp.prealign:
        return []
    shapes = set()
    for batch in {1, interp.batch_size}:
        tile = interp.tile_size(height, width, batch)
        if tile is None:
            shapes.add((height, width))
        else:
            shapes.update(t.shape for t in plan_tiles(height, width, tile, interp.overlap))
    return sorted({auto_levels(s) for s in shapes})


@dataclass
class _PairWork:
    pair: int
    a: torch.Tensor
    b: torch.Tensor
    placements: list[Placement]
    cut: bool


class Conversion:
    """A checked conversion, ready to ``run`` with a model (see ``prepare_conversion``)."""

    def __init__(
        self,
        source: FrameSource,
        output: Path,
        options: ConversionOptions,
        timeline: Timeline,
        fps: Fraction,
        encoder: EncoderPlan | None,
        folder: FolderWriter | None,
        mode: str,
        tracks: list[TrackPlan],
        stretch: Fraction,
        model: dict[str, Any],
        note: Note,
    ) -> None:
        self.source, self.output, self.options, self.timeline = source, output, options, timeline
        self.fps, self.encoder, self.folder, self.mode = fps, encoder, folder, mode
        self.tracks, self.stretch, self.model, self.note = tracks, stretch, model, note

    @property
    def total(self) -> int | None:
        """Output frames, when the input's frame count is known."""
        return self.timeline.count(self.source.count) if self.source.count else None

    @property
    def interrupted_message(self) -> str:
        """The line that says what Ctrl-C left behind."""
        if self.folder is not None:
            return f"interrupted; rerun the same command to resume {self.output}"
        return f"interrupted; {self.output} was not written"

    def _check_model(self, interp: Interpolator) -> None:
        got = {"ensemble": interp.ensemble, "prealign": interp.prealign}
        want = {"ensemble": self.model.get("ensemble", 1), "prealign": bool(self.model.get("prealign", False))}
        if got != want:
            raise VideoError(f"the interpolator runs with {got}, but the conversion was prepared for {want}")
        if self.folder is None or not got["prealign"]:
            return
        self.folder.settings["prealign_levels"] = prealign_depths(interp, self.source.height, self.source.width)
        if self.mode == "resume":
            previous = FolderWriter.recorded(self.folder.folder)
            if previous is not None:
                self.folder.compare(previous)

    def run(
        self, interp: Interpolator, progress: Callable[[ConversionProgress], None] | None = None
    ) -> ConversionResult:
        """Interpolate, write and return what was done. Ctrl-C leaves no video file behind (a frame folder
        resumes on the next run); a bad-input error in a fresh folder removes what it wrote."""
        self._check_model(interp)
        preview = GifPreview(self.options.gif, self.fps, self.options.gif_frames) if self.options.gif else None
        start = time.perf_counter()
        if self.folder is not None:
            self.folder.start(self.mode)
            if self.mode == "resume":
                self.note(f"resuming {self.output}: frames already written are skipped (--force starts over)")
            sink: Any = FolderSink(self.folder, preview)
            try:
                stats = self._stream(interp, sink, progress)
            except (ValueError, OSError):
                if self.mode != "resume":
                    self.folder.discard()
                raise
        else:
            assert self.encoder is not None
            writer = VideoWriter(self.output, self.fps, force=self.options.force, plan=self.encoder)
            with writer:
                muxer = None
                if self.tracks:
                    muxer = TrackMuxer(
                        self.source.path, self.tracks, writer.container, self.source.start, self.stretch, self.note
                    )
                sink = VideoSink(writer, float(self.fps), preview, muxer)
                try:
                    stats = self._stream(interp, sink, progress)
                    sink.close()
                except BaseException:
                    sink.abort()
                    raise
        seconds = time.perf_counter() - start
        if preview is not None:
            try:
                preview.save(self.options.force)
            except OSError as exc:
                raise OutputWriteError(f"{exc}; the output {self.output} was written") from exc
        return ConversionResult(
            output=self.output,
            frames=sink.count,
            inputs=stats["inputs"],
            size=(self.source.width, self.source.height),
            fps=self.fps,
            rate=self.timeline.out_rate,
            in_rate=self.timeline.in_rate,
            encoding=self.encoder.describe() if self.encoder is not None else f"{self.folder.suffix} frames",  # type: ignore[union-attr]
            cuts=stats["cuts"],
            model_calls=stats["calls"],
            naive_calls=stats["naive"],
            max_error=stats["error"],
            tracks=self.tracks,
            seconds=seconds,
            exact=self.timeline.tolerance == 0 and stats["error"] == 0,
        )

    # --- the streaming loop --------------------------------------------------------------------

    def _loaders(self) -> Iterator[Callable[[], torch.Tensor]]:
        """Frame loaders: folder frames are read only when called (so resumed pairs cost nothing); video
        frames are decoded ahead in a thread."""
        source = self.source
        if source.is_folder:
            for i in range(len(source.files)):
                yield lambda i=i: source.frame(i)
            return
        frames = Prefetch(source.frames())
        try:
            for frame in frames:
                yield lambda frame=frame: frame
        finally:
            frames.close()

    def _stream(
        self, interp: Interpolator, sink: FrameSink, progress: Callable[[ConversionProgress], None] | None
    ) -> dict[str, Any]:
        stats: dict[str, Any] = {"inputs": 1, "cuts": 0, "calls": 0, "naive": 0, "error": Fraction(0)}
        total = self.total
        threshold = self.options.scene_threshold

        def report() -> None:
            if progress is not None:
                progress(ConversionProgress(sink.count, total, stats["calls"]))

        chunk: list[_PairWork] = []

        def flush() -> None:
            if chunk:
                self._compute(interp, chunk, sink, stats, report)
                chunk.clear()

        loaders = self._loaders()
        try:
            load_prev = next(loaders)
            prev: torch.Tensor | None = None
            for i, load_cur in enumerate(loaders):
                stats["inputs"] += 1
                placements = self.timeline.pair(i)
                if all(sink.done(p.frame) for p in placements):
                    flush()
                    for p in placements:
                        sink.skip(p.frame)
                        report()
                    prev = None
                    load_prev = load_cur
                    continue
                a = prev if prev is not None else load_prev()
                b = load_cur()
                if a.shape != b.shape:
                    raise VideoError(
                        f"{self.source.frame_name(i + 1)}: size {b.shape[-1]}x{b.shape[-2]} differs from "
                        f"{a.shape[-1]}x{a.shape[-2]}"
                    )
                chunk.append(_PairWork(i, a, b, placements, interp.is_cut(a, b, threshold)))
                prev = b
                load_prev = load_cur
                if len(chunk) >= interp.batch_size:
                    flush()
            flush()
            final = self.timeline.final(stats["inputs"])
            if final is not None:
                if sink.done(final.frame):
                    sink.skip(final.frame)
                else:
                    sink.put(final.frame, prev if prev is not None else load_prev())
                report()
        finally:
            close = getattr(loaders, "close", None)
            if close is not None:
                close()
        return stats

    def _compute(
        self,
        interp: Interpolator,
        chunk: list[_PairWork],
        sink: FrameSink,
        stats: dict[str, Any],
        report: Callable[[], None],
    ) -> None:
        """The nodes of every pair in ``chunk``, level by level (each level one batched call across the
        pairs), then the pairs' output frames in order."""
        values: list[dict[Node, torch.Tensor]] = []
        levels: list[list[list[Node]]] = []
        for work in chunk:
            values.append({Node(0, 0): work.a, Node(0, 1): work.b})
            if work.cut:
                stats["cuts"] += 1
                levels.append([])
                continue
            levels.append(node_levels(p.node for p in work.placements))
            for p in work.placements:
                stats["naive"] += p.node.depth
                stats["error"] = max(stats["error"], p.error)
        deepest = max((len(lv) for lv in levels), default=0)
        for depth in range(deepest):
            jobs = [(w, node) for w, lv in enumerate(levels) if depth < len(lv) for node in lv[depth]]
            pairs = [(values[w][node.parents()[0]], values[w][node.parents()[1]]) for w, node in jobs]
            for (w, node), frame in zip(jobs, interp.interpolate_batch(pairs), strict=True):
                values[w][node] = frame
            stats["calls"] += len(jobs)
        for work, known in zip(chunk, values, strict=True):
            for p in work.placements:
                frame = (work.a if p.t < Fraction(1, 2) else work.b) if work.cut else known[p.node]
                sink.put(p.frame, frame)
                report()


def prepare_conversion(
    input_video: str | Path,
    output: str | Path | None,
    options: ConversionOptions | None = None,
    *,
    ensemble: int = 1,
    prealign: bool = False,
    note: Note | None = None,
) -> Conversion:
    """Check a conversion before any model is loaded or anything is written; every problem is one line
    (``VideoError``, ``FileExistsError`` or ``OutputWriteError``), every note goes to ``note`` (stderr).
    ``ensemble`` and ``prealign`` are the settings of the model it will run with (for a folder's
    resume check)."""
    o = options or ConversionOptions()
    note = note or _stderr
    _check_options(o)
    source = open_source(input_video, o.naming)
    if output is not None and _same_path(Path(output), Path(source.path)):
        raise VideoError(f"{output}: is the input itself; give the output another name")
    for line in (source.folder_note, source.timing_note):
        if line:
            note(line)
    check_frame_size(source)
    in_rate = source.fps
    if o.input_fps is not None:
        if source.fps is not None and o.input_fps != source.fps:
            was = describe_rate(source.fps)
            note(f"note: --input_fps {describe_rate(o.input_fps)} replaces the {was} fps of {source.path}")
        in_rate = o.input_fps
    elif in_rate is None:
        in_rate = DEFAULT_INPUT_FPS
        note(f"note: {source.path} has no frame rate; assuming {in_rate} fps (see --input_fps)")
    if o.target_fps is not None:
        rate, tolerance = o.target_fps, o.time_tolerance if o.time_tolerance is not None else DEFAULT_TOLERANCE
        label = f"{describe_rate(rate)}fps"
    else:
        factor = o.factor or 2
        rate, tolerance, label = in_rate * factor, o.time_tolerance or Fraction(0), f"x{factor}"
    timeline = Timeline(in_rate, rate, tolerance)
    fps = o.fps or rate
    stretch = rate / fps
    if source.fps is not None and in_rate != source.fps:  # --input_fps retimes the video; the sound must follow
        stretch *= source.fps / in_rate

    kind_codec = codec_spec(o.codec) if o.codec else None
    if output is None:
        spec = kind_codec or codec_spec("h264")
        out = default_output(input_video, label, spec.suffix)
    else:
        out = Path(output)
    kind = output_kind(out)
    if kind_codec is not None and kind_codec.folder and kind == "video":
        raise VideoError(f"{out}: --codec png writes a folder of frames; give a folder name")
    if kind_codec is not None and not kind_codec.folder and kind == "folder":
        raise VideoError(
            f"{out}: --codec {kind_codec.name} writes a video file; give a name ending in {kind_codec.suffix} "
            "(or --codec png for a folder of frames)"
        )
    if o.target_fps is not None and tolerance >= timeline.step / 2:
        _note_repeats(timeline, source, note)

    encoder = folder = None
    mode = "new"
    tracks: list[TrackPlan] = []
    model = {"ensemble": ensemble, "prealign": prealign}
    if kind == "video":
        spec = kind_codec or codec_spec("h264")
        check_container(out, spec)
        encoder = plan_encoder(
            spec.name, source.width, source.height, source.pix_fmt, source.colour, o.crf, o.preset, o.lossless
        )
        ensure_writable(out, o.force)
        if encoder.padded:
            note(
                f"note: {source.width}x{source.height} is odd; {encoder.pix_fmt} needs even sizes, so the last "
                "row/column is repeated"
            )
        tracks = plan_tracks(source, out, stretch, o.audio, note)
    else:
        if o.crf is not None or o.preset is not None or o.lossless:
            raise VideoError(f"{out}: --crf, --preset and --lossless are for video files; frames are written as images")
        folder, mode = _prepare_folder(out, source, o, rate, fps, tolerance, model)
        audio = [t for t in source.tracks if t.kind == "audio"]
        if audio:
            note(f"note: a frame folder holds no sound; {len(audio)} audio track(s) of {source.path} not written")
    if o.gif:
        ensure_writable(o.gif, o.force)
        GifPreview(o.gif, fps, o.gif_frames)
    return Conversion(source, out, o, timeline, fps, encoder, folder, mode, tracks, stretch, model, note)


def _same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file or folder (through links too)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _note_repeats(timeline: Timeline, source: FrameSource, note: Note) -> None:
    """One line when the tolerance is so coarse that neighbouring output frames show the same node."""
    pairs = min((source.count or 2) - 1, 4096)
    repeats = 0
    last = None
    for i in range(pairs):
        for p in timeline.pair(i):
            key = (p.pair, p.node) if p.node.depth else (p.pair + p.node.index, Node(0, 0))
            repeats += key == last
            last = key
    if repeats:
        note(
            f"note: --time_tolerance {timeline.tolerance} is coarse for {describe_rate(timeline.out_rate)} fps: "
            f"{repeats} output frame(s){' in the first 4096 pairs' if pairs == 4096 else ''} repeat the one "
            "before; a lower tolerance (e.g. 1/64) makes each frame new"
        )


def _prepare_folder(
    out: Path,
    source: FrameSource,
    o: ConversionOptions,
    rate: Fraction,
    fps: Fraction,
    tolerance: Fraction,
    model: dict[str, Any],
) -> tuple[FolderWriter, str]:
    """The folder writer and its mode (new, resume, restart), with the frame naming: given values, else
    what the folder was written with (resume), else the input frames' suffix and the published zpad 5
    and index_from 0."""
    given = o.naming.given
    if o.codec == "png" and given.get("img_format", ".png").lower() != ".png":
        raise VideoError(f"--codec png and --img_format {given['img_format']}: give one")
    recorded = FolderWriter.recorded(out) if out.is_dir() and not o.force else None
    naming = {
        "img_format": ".png" if o.codec == "png" else source.frame_suffix or ".png",
        "zpad": 5,
        "index_from": 0,
    }
    if recorded is not None:
        naming.update({k: recorded[k] for k in naming if k in recorded})
    naming.update(given)
    settings: dict[str, Any] = {"input": str(Path(source.path).resolve())}
    if o.target_fps is not None:
        settings.update({"target_fps": str(rate), "time_tolerance": str(tolerance)})
    else:
        settings["factor"] = o.factor or 2
        if tolerance:
            settings["time_tolerance"] = str(tolerance)
    settings.update({"checkpoint": o.checkpoint, "scene_threshold": o.scene_threshold, "fps": str(fps)})
    # recorded only when used, so that folders written before these options still resume
    if model["ensemble"] > 1:
        settings["ensemble"] = model["ensemble"]
    if model["prealign"]:
        settings["prealign"] = True
        if recorded is not None and "prealign_levels" in recorded:
            settings["prealign_levels"] = recorded["prealign_levels"]  # checked again once the model is known
    folder = FolderWriter(out, settings, naming["img_format"], naming["zpad"], naming["index_from"])
    return folder, folder.check(o.force)


def convert_video(
    interp: Interpolator,
    input_video: str | Path,
    output: str | Path | None,
    options: ConversionOptions | None = None,
    *,
    progress: Callable[[ConversionProgress], None] | None = None,
    note: Note | None = None,
) -> ConversionResult:
    """Convert ``input_video`` (a video file or a frame folder) to ``output`` with ``interp``:
    ``prepare_conversion`` then ``Conversion.run``."""
    conversion = prepare_conversion(
        input_video,
        output,
        options,
        ensemble=interp.ensemble,
        prealign=interp.prealign,
        note=note,
    )
    return conversion.run(interp, progress)


__all__ = [
    "DEFAULT_INPUT_FPS",
    "DEFAULT_TOLERANCE",
    "Conversion",
    "ConversionOptions",
    "ConversionProgress",
    "ConversionResult",
    "check_frame_size",
    "convert_video",
    "default_output",
    "prealign_depths",
    "prepare_conversion",
]
