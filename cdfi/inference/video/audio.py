"""The input's other tracks in a converted video: audio copied, re-encoded or stretched; subtitles and
data copied where the output container allows.

``plan_tracks`` decides, before any work, what becomes of each track and says so in one line for every
track that is left out. ``TrackMuxer`` then feeds the kept tracks into the open output container in
step with the video, so the file stays interleaved:

* ``copy``: packets remuxed unchanged (shifted so that the first video frame is time 0);
* ``encode``: decoded and re-encoded where the container cannot hold the input's codec (AAC in
  MP4/MOV, FLAC in MKV, Opus in WebM, MP3 in AVI);
* ``stretch``: decoded, slowed down (or sped up) through FFmpeg's ``atempo`` filter, which keeps the
  pitch, and re-encoded, for output that lasts longer (or shorter) than its input.

Subtitle times are scaled with the video, so they stay in sync in slow motion too.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from cdfi.io.video import CONTAINER_FORMATS, FrameSource, Track, VideoError

AUDIO_MODES = ("auto", "stretch", "none")
"""``--audio``: ``auto`` keeps audio when the duration is kept and leaves it out (one line) otherwise;
``stretch`` also keeps it when the duration changes, at the same pitch; ``none`` leaves it out."""

PREFERRED_ENCODERS = {
    "mp4": ("aac",),
    "mov": ("aac",),
    "matroska": ("flac",),
    "webm": ("libopus", "opus"),
    "avi": ("libmp3lame", "pcm_s16le"),
}
"""Audio encoders tried, in order, when a track must be re-encoded for a container (MKV tries the
input's own codec first)."""

BITRATE_PER_CHANNEL = {"aac": 96_000, "libopus": 64_000, "opus": 64_000, "libmp3lame": 96_000}

PROBE_PACKETS = 48
"""Audio packets decoded up front to tell a track that cannot be decoded (about a second)."""

LEAD_SECONDS = 0.5
"""How far the other tracks run ahead of the video in the output file."""

Note = Callable[[str], None]


@dataclass(frozen=True)
class TrackPlan:
    """What becomes of one input ``track``: ``copy``, ``encode`` or ``stretch`` (with ``encoder``)."""

    track: Track
    action: str
    encoder: str | None = None

    def describe(self) -> str:
        verb = {"copy": "copied", "encode": f"re-encoded ({self.encoder})", "stretch": f"stretched ({self.encoder})"}
        return f"{self.track.kind} track {self.track.index} {verb[self.action]}"


def check_audio_mode(mode: str) -> None:
    """``VideoError`` for an unknown ``--audio`` or ``stretch`` without FFmpeg's ``atempo`` filter."""
    if mode not in AUDIO_MODES:
        raise VideoError(f"--audio {mode}: use one of {', '.join(AUDIO_MODES)}")
    if mode == "stretch" and "atempo" not in av.filter.filters_available:
        raise VideoError("--audio stretch: this PyAV's FFmpeg has no atempo filter; use --audio auto or none")


def _template_fits(fmt: str, stream: Any) -> bool:
    """Whether muxer ``fmt`` can take a copy of ``stream`` (asked of an in-memory container)."""
    scratch = av.open(io.BytesIO(), mode="w", format=fmt)
    try:
        scratch.add_stream_from_template(stream)
    except (ValueError, av.FFmpegError, TypeError):
        return False
    finally:
        scratch.close()
    return True


def _encoder_for(fmt: str, codec: str) -> str | None:
    """The first audio encoder this build has that muxer ``fmt`` can hold (see ``PREFERRED_ENCODERS``)."""
    names = ((codec,) if fmt == "matroska" else ()) + PREFERRED_ENCODERS.get(fmt, ("aac",))
    scratch = av.open(io.BytesIO(), mode="w", format=fmt)
    try:
        supported = scratch.supported_codecs
        for name in names:
            try:
                enc = av.codec.Codec(name, "w")
            except (av.FFmpegError, ValueError):
                continue
            if enc.type == "audio" and _descriptor(name) in supported:
                return name
    finally:
        scratch.close()
    return None


def _descriptor(encoder: str) -> str:
    return {"libopus": "opus", "libmp3lame": "mp3", "libvorbis": "vorbis"}.get(encoder, encoder)


def probe_decode(path: Path, index: int, packets: int = PROBE_PACKETS) -> str | None:
    """``None`` when the first ``packets`` packets of stream ``index`` decode to audio, else why not."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        return _first_line(exc)
    try:
        stream = container.streams[index]
        try:
            av.codec.Codec(stream.codec_context.name, "r")
        except (av.FFmpegError, ValueError):
            return f"no {stream.codec_context.name} decoder"
        frames = seen = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            seen += 1
            frames += len(packet.decode())
            if seen >= packets:
                break
        if seen and not frames:
            return "no audio decoded from its first packets"
    except av.FFmpegError as exc:
        return _first_line(exc)
    finally:
        container.close()
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def plan_tracks(source: FrameSource, output: Path, stretch: Fraction, mode: str, note: Note) -> list[TrackPlan]:
    """Decide for each non-video track of ``source`` what goes into ``output`` (a video file), where the
    output lasts ``stretch`` times as long as the input; every track left out gets one line."""
    if not source.tracks:
        return []
    fmt = CONTAINER_FORMATS[output.suffix.lower()]
    suffix = output.suffix.lower()
    plans: list[TrackPlan] = []
    audio = [t for t in source.tracks if t.kind == "audio"]
    if audio and mode == "none":
        note(f"note: {len(audio)} audio track(s) of {source.path} left out (--audio none)")
    elif audio and stretch != 1 and mode == "auto":
        note(
            f"note: the output lasts {float(stretch):.4g}x as long as {source.path} (slow motion, --fps or "
            f"--input_fps), so its {len(audio)} audio track(s) are left out (--audio stretch keeps them, at the "
            "same pitch)"
        )
    container = av.open(str(source.path))
    try:
        for track in source.tracks:
            stream = container.streams[track.index]
            if track.kind == "audio":
                if mode == "none" or (stretch != 1 and mode == "auto"):
                    continue
                plan = _plan_audio(track, stream, fmt, suffix, stretch)
                if isinstance(plan, str):
                    note(f"note: {track.describe()} of {source.path} left out: {plan}")
                    continue
                reason = probe_decode(source.path, track.index)
                if reason is not None and not (plan.action == "copy" and reason.startswith("no ")):
                    note(f"note: {track.describe()} of {source.path} cannot be decoded ({reason}); it is left out")
                    continue
                plans.append(plan)
            elif track.kind == "subtitle":
                if _template_fits(fmt, stream):
                    plans.append(TrackPlan(track, "copy"))
                else:
                    note(f"note: {track.describe()} not copied: a {suffix} file cannot hold {track.codec} subtitles")
            elif track.kind == "data":
                if stretch == 1 and _template_fits(fmt, stream):
                    plans.append(TrackPlan(track, "copy"))
                else:
                    why = f"a {suffix} file cannot hold it" if stretch == 1 else "its timing would not follow"
                    note(f"note: {track.describe()} not copied: {why}")
            else:
                note(f"note: {track.describe()} not copied (attachments are not carried over)")
    finally:
        container.close()
    return plans


def _plan_audio(track: Track, stream: Any, fmt: str, suffix: str, stretch: Fraction) -> TrackPlan | str:
    """The plan of one audio track, or why it cannot be kept."""
    if stretch == 1 and _template_fits(fmt, stream):
        return TrackPlan(track, "copy")
    encoder = _encoder_for(fmt, track.codec)
    if encoder is None:
        return f"no audio encoder here writes what a {suffix} file holds"
    return TrackPlan(track, "encode" if stretch == 1 else "stretch", encoder)


def tempo_chain(tempo: float) -> list[float]:
    """``atempo`` factors whose product is ``tempo``, each within the filter's 0.5 to 2 (the range in
    which it keeps the most quality)."""
    factors = []
    while tempo < 0.5:
        factors.append(0.5)
        tempo /= 0.5
    while tempo > 2.0:
        factors.append(2.0)
        tempo /= 2.0
    factors.append(tempo)
    return factors


class _AudioTrack:
    """Decoding, optional tempo change, and encoding of one kept audio track."""

    def __init__(self, plan: TrackPlan, stream: Any, out: Any, start: Fraction, stretch: Fraction) -> None:
        self.plan, self.stream, self.out = plan, stream, out
        self.start, self.stretch = start, stretch
        self.graph: Any = None
        self.offset: int | None = None
        self.produced = 0
        self.failed = False

    def frames(self, packet: Any) -> Iterator[Any]:
        """Encoder-ready frames from one input packet (``None``: flush)."""
        decoded = packet.decode() if packet is not None else self._flush_decoder()
        for frame in decoded:
            if frame.pts is None or frame.time is None:
                continue
            t = (Fraction(frame.pts) * frame.time_base - self.start) * self.stretch
            rate = frame.sample_rate
            if self.offset is None:
                self.offset = round(t * rate)
            if self.plan.action == "stretch":
                yield from self._through_tempo(frame)
            else:
                frame.pts = round(t * rate)
                frame.time_base = Fraction(1, rate)
                yield frame
        if packet is None and self.plan.action == "stretch" and self.graph is not None:
            self.graph.push(None)
            yield from self._drain()

    def _flush_decoder(self) -> list[Any]:
        try:
            return self.stream.codec_context.decode(None)
        except av.FFmpegError:
            return []

    def _through_tempo(self, frame: Any) -> Iterator[Any]:
        if self.graph is None:
            graph = av.filter.Graph()
            nodes = [
                graph.add_abuffer(
                    sample_rate=frame.sample_rate,
                    format=frame.format.name,
                    layout=frame.layout.name,
                    time_base=Fraction(1, frame.sample_rate),
                )
            ]
            for factor in tempo_chain(float(1 / self.stretch)):
                nodes.append(graph.add("atempo", f"{factor:.9f}"))
            nodes.append(graph.add("abuffersink"))
            for a, b in itertools.pairwise(nodes):
                a.link_to(b)
            graph.configure()
            self.graph = graph
        frame.pts = None
        self.graph.push(frame)
        yield from self._drain()

    def _drain(self) -> Iterator[Any]:
        while True:
            try:
                out = self.graph.pull()
            except (av.BlockingIOError, EOFError):
                return
            out.pts = (self.offset or 0) + self.produced
            out.time_base = Fraction(1, out.sample_rate)
            self.produced += out.samples
            yield out


class TrackMuxer:
    """Feeds the planned tracks of ``source_path`` into ``container`` (an open output container, before its
    first packet), in step with the video: call ``advance(t)`` once the video reaches output time ``t``
    (seconds) and ``finish()`` at the end. ``start`` is the input time of the first video frame,
    ``stretch`` how many times longer the output lasts."""

    def __init__(
        self,
        source_path: Path,
        plans: list[TrackPlan],
        container: Any,
        start: Fraction,
        stretch: Fraction,
        note: Note,
    ) -> None:
        self.container, self.start, self.stretch, self.note = container, start, stretch, note
        self.input = av.open(str(source_path))
        self.outputs: dict[int, Any] = {}
        self.audio: dict[int, _AudioTrack] = {}
        self.plans = {p.track.index: p for p in plans}
        for plan in plans:
            stream = self.input.streams[plan.track.index]
            if plan.action == "copy":
                out = container.add_stream_from_template(stream)
            else:
                ctx = stream.codec_context
                rate = ctx.sample_rate if plan.encoder not in ("libopus", "opus") else 48000
                out = container.add_stream(plan.encoder, rate=rate)
                out.layout = ctx.layout.name if ctx.layout else "stereo"
                channels = ctx.channels or 2
                if plan.encoder in BITRATE_PER_CHANNEL:
                    out.bit_rate = BITRATE_PER_CHANNEL[plan.encoder] * min(channels, 8)
                self.audio[plan.track.index] = _AudioTrack(plan, stream, out, start, stretch)
            self.outputs[plan.track.index] = out
        streams = [self.input.streams[i] for i in self.plans]
        self._packets = self.input.demux(*streams) if streams else iter(())
        self._pending: Any = None
        self._done = not streams

    def _time(self, packet: Any) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return float((Fraction(ts) * packet.time_base - self.start) * self.stretch)

    def advance(self, until: float) -> None:
        """Mux every packet due before ``until + LEAD_SECONDS`` of output time."""
        while not self._done:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    self._done = True
                    break
            t = self._time(self._pending)
            if t is not None and t > until + LEAD_SECONDS:
                break
            packet, self._pending = self._pending, None
            self._handle(packet)

    def _handle(self, packet: Any) -> None:
        index = packet.stream.index
        if index in self.audio:
            track = self.audio[index]
            if track.failed or packet.size == 0:
                return
            try:
                for frame in track.frames(packet):
                    self.container.mux(track.out.encode(frame))
            except av.FFmpegError as exc:
                track.failed = True
                when = self._time(packet)
                self.note(
                    f"note: {track.plan.track.describe()}: decoding failed at {when or 0:.1f} s "
                    f"({_first_line(exc)}); the rest of it is left out"
                )
            return
        if packet.size == 0 or (packet.pts is None and packet.dts is None):
            return
        offset = round(self.start / packet.time_base)
        if self.stretch == 1:
            if packet.pts is not None:
                packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
        else:
            ts = packet.pts if packet.pts is not None else packet.dts
            packet.pts = packet.dts = round((ts - offset) * self.stretch)
            if packet.duration:
                packet.duration = round(packet.duration * self.stretch)
        packet.stream = self.outputs[index]
        self.container.mux(packet)

    def finish(self) -> None:
        """Mux what is left of every track and flush the encoders."""
        self.advance(float("inf"))
        for track in self.audio.values():
            if track.failed:
                continue
            try:
                for frame in track.frames(None):
                    self.container.mux(track.out.encode(frame))
            except av.FFmpegError:
                pass
            self.container.mux(track.out.encode(None))
        self.close()

    def close(self) -> None:
        self.input.close()


__all__ = ["AUDIO_MODES", "TrackMuxer", "TrackPlan", "check_audio_mode", "plan_tracks", "probe_decode", "tempo_chain"]
