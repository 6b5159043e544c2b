"""Test helpers for videos, made and read with PyAV directly (independent of ``cdfi.io.video``): lossless
clips, clips with a sine AAC track, subtitles, irregular timestamps or audio that cannot be decoded, a
stand-in model whose midpoint is the mean of its inputs, and readers for frames and audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn

SINE_HZ = 440.0
SAMPLE_RATE = 48000


def write_lossless_video(path: Path, frames: list[np.ndarray], rate: int = 25) -> Path:
    """FFV1 video of ``frames`` (H, W, 3 uint8, all one size) at ``path``; returns ``path``."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


class MeanModel(nn.Module):
    """Midpoint = mean of the two frames, so recursive bisection gives the linear blend at each node's
    time; counts the frames it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        self.calls += frame0.shape[0]
        return (frame0 + frame1) / 2


def flat_frames(values: list[float], height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Frames of one grey level each (0-255), H x W x 3 uint8."""
    return [np.full((height, width, 3), round(v), dtype=np.uint8) for v in values]


def sine(samples: int, start: int = 0) -> np.ndarray:
    """A 0.3-amplitude 440 Hz sine from sample ``start``, float32."""
    t = np.arange(start, start + samples) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * SINE_HZ * t)).astype(np.float32)


def _mux_audio(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    total, pos = round(seconds * SAMPLE_RATE), 0
    planar = stream.format.is_planar
    while pos < total:
        n = min(1024, total - pos)
        x = sine(n, pos)
        data = np.stack([x, x]) if planar else np.stack([x, x], -1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=stream.format.name, layout="stereo")
        frame.sample_rate, frame.pts = SAMPLE_RATE, pos
        container.mux(stream.encode(frame))
        pos += n
    container.mux(stream.encode(None))


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    rate: int | Fraction = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    subtitles: list[tuple[int, int, str]] | None = None,
    colour: tuple[int, int, int, int] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """A clip of ``frames`` (uint8 RGB or uint16 RGB for pix_fmts above 8 bits) at ``rate``, with a stereo
    440 Hz ``audio`` track as long as the video and ``subtitles`` (start ms, duration ms, text; SubRip,
    for .mkv); ``colour`` = (colorspace, range, primaries, trc) tags and conversion."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=rate, options=options or {})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if colour is not None:
            ctx = video.codec_context
            ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = colour
        sound = None
        if audio is not None:
            sound = container.add_stream(audio, rate=SAMPLE_RATE)
            sound.layout = "stereo"
            if audio == "libopus":
                sound.format = "flt"
        subs = container.add_mux_stream("subrip") if subtitles else None
        for i, array in enumerate(frames):
            fmt = "rgb48le" if array.dtype == np.uint16 else "rgb24"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=fmt)
            if colour is not None:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=colour[0], dst_color_range=colour[1])
            frame.pts = i
            frame.time_base = 1 / Fraction(rate)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _mux_audio(container, sound, len(frames) / float(rate))
        for start, duration, text in subtitles or []:
            packet = av.Packet(text.encode())
            packet.stream = subs
            packet.pts = packet.dts = start
            packet.duration = duration
            packet.time_base = Fraction(1, 1000)
            container.mux(packet)
    return path


def write_irregular_clip(path: Path, frames: list[np.ndarray], times_ms: list[int]) -> Path:
    """An FFV1 .mkv whose frame ``i`` is stamped at ``times_ms[i]`` (variable frame timing)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t, array in zip(times_ms, frames, strict=True):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_garbage_audio_clip(path: Path, frames: list[np.ndarray], rate: int = 25) -> Path:
    """An .mkv with an FFV1 video and an AAC track whose packets are random bytes (cannot be decoded)."""
    height, width = frames[0].shape[:2]
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "bgr0"
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "stereo"
        container.start_encoding()
        for array in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(video.encode(None))
        for i in range(round(len(frames) / rate * SAMPLE_RATE / 1024)):
            packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            packet.stream = sound
            packet.pts = packet.dts = i * 1024
            packet.duration = 1024
            packet.time_base = Fraction(1, SAMPLE_RATE)
            container.mux(packet)
    return path


def read_frames(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    """Every decoded video frame as an H x W x 3 array."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format=fmt) for f in container.decode(video=0)]


def read_audio(path: Path) -> tuple[np.ndarray, float, str] | None:
    """(channels x samples float32, first frame time, codec) of the first audio track, or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        data = np.concatenate([f.to_ndarray().reshape(f.layout.nb_channels, -1) for f in frames], axis=1)
        return data.astype(np.float32), float(frames[0].time), stream.codec_context.name


def peak_hz(signal: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Frequency of the strongest spectral peak of a mono signal."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * rate / len(signal))


def stream_info(path: Path) -> dict[str, object]:
    """Codec, pixel format, rate and colour tags of the first video stream, and the other streams' kinds."""
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        ctx = v.codec_context
        return {
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "rate": v.average_rate,
            "colour": (int(ctx.colorspace), int(ctx.color_range), int(ctx.color_primaries), int(ctx.color_trc)),
            "streams": [s.type for s in container.streams],
        }
