"""Video files and frame folders with PyAV: probing, decoding, encoding, frame folders, GIF previews.

Sources (``open_source``) validate what they can before any work: readable, at least two frames of one
size, 8-bit RGB images in a folder; for a video file they also read the frame timing (regular, variable
or missing timestamps), the pixel format and colour metadata, and the other tracks (audio, subtitles,
data), so that a bad input fails in one line without leaving output behind.

Sinks write atomically. ``VideoWriter`` encodes into a temporary file renamed on success, with any of
``CODECS`` (H.264, H.265, VP9, AV1, FFV1, ProRes), keeping the source's pixel format family (chroma
subsampling and bit depth) and colour metadata where the codec can. ``FolderWriter`` writes one atomic
file per frame and a manifest that makes an interrupted run resumable.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cdfi.io.atomic import OutputWriteError, atomic_path, atomic_write_text, check_writable_location, ensure_writable
from cdfi.io.images import IMAGE_SUFFIXES, read_image, to_uint8, too_large

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".webm")
"""Output suffixes written as a video; any other name is a folder of frames, except the ones below."""

CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
"""FFmpeg muxer of each video suffix."""

UNWRITABLE_VIDEO_SUFFIXES = (
    ".ogv", ".ogg", ".flv", ".f4v", ".wmv", ".asf", ".mpg", ".mpeg", ".m2v", ".ts", ".mts",
    ".m2ts", ".vob", ".3gp", ".3g2", ".y4m", ".h264", ".264", ".hevc", ".h265", ".apng", ".mjpeg",
)  # fmt: skip
"""Video containers this tool does not write: refused rather than taken as a folder name."""

FOLDER_LAYOUT_DEFAULTS = {"img_format": ".png", "zpad": 5, "index_from": 0}
"""Frame naming of a folder output, recorded in its manifest; a manifest written before these were
recorded used these values."""

MANIFEST = ".cdfi_video.json"
"""File in a frame-folder output that records the settings, so a rerun can resume safely."""

JPEG_QUALITY = 95
"""Quality of ``.jpg``/``.webp`` output frames (PIL's default of 75 shows blocking on interpolated detail)."""


class VideoError(ValueError):
    """An input or output the video tools cannot use; the message names the file and the problem."""


# --- frame folders ------------------------------------------------------------------------------


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a folder (hidden files skipped), in natural order."""
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class FrameNaming:
    """Frame names ``<index_from + i, zero-padded to zpad digits><suffix>``: the published
    ``--index_from``, ``--zpad`` and ``--img_format``. ``None`` marks a value that was not given."""

    suffix: str | None = None
    zpad: int | None = None
    index_from: int | None = None

    def __post_init__(self) -> None:
        if self.suffix is not None:
            suffix = self.suffix if self.suffix.startswith(".") else "." + self.suffix
            if suffix.lower() not in IMAGE_SUFFIXES:
                raise VideoError(f"--img_format {self.suffix}: use one of {', '.join(IMAGE_SUFFIXES)}")
            object.__setattr__(self, "suffix", suffix)
        if self.zpad is not None and not 1 <= self.zpad <= 12:
            raise VideoError(f"--zpad {self.zpad}: must be between 1 and 12")
        if self.index_from is not None and self.index_from < 0:
            raise VideoError(f"--index_from {self.index_from}: must be 0 or more")

    @property
    def given(self) -> dict[str, Any]:
        """The values that were given, under their manifest keys."""
        values = {"img_format": self.suffix, "zpad": self.zpad, "index_from": self.index_from}
        return {k: v for k, v in values.items() if v is not None}

    def name(self, number: int, suffix: str) -> str:
        return f"{number:0{self.zpad or FOLDER_LAYOUT_DEFAULTS['zpad']}d}{suffix}"


def select_frame_files(folder: Path, naming: FrameNaming | None = None) -> tuple[list[Path], str | None]:
    """The frames of a folder and a note (or ``None``).

    A folder in the published layout, holding ``<index_from>`` zero-padded to ``zpad`` digits with the
    ``--img_format`` suffix (any image suffix when not given; defaults 0 and 5, so ``00000.jpg``), is
    read as the published script reads it: the consecutive numbers from there. Any other folder gives
    all its images in natural order."""
    naming = naming or FrameNaming()
    files = list_frame_files(folder)
    start = naming.index_from if naming.index_from is not None else FOLDER_LAYOUT_DEFAULTS["index_from"]
    by_name = {p.name: p for p in files}
    suffixes = (naming.suffix,) if naming.suffix else tuple(dict.fromkeys(p.suffix for p in files))
    suffix = next((s for s in suffixes if naming.name(start, s) in by_name), None)
    if suffix is None:
        return files, None
    run = []
    while naming.name(start + len(run), suffix) in by_name:
        run.append(by_name[naming.name(start + len(run), suffix)])
    others = len(files) - len(run)
    note = None
    if others:
        note = (
            f"note: {folder}: reading the {len(run)} frames {run[0].name} to {run[-1].name} "
            f"(--index_from, --zpad, --img_format); {others} other image(s) there are not used"
        )
    return run, note


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header; one-line ``VideoError`` unless it is 8-bit RGB."""
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            transparent = "transparency" in img.info
    except UnidentifiedImageError:
        raise VideoError(f"{path}: not a readable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise VideoError(str(too_large(path, exc))) from None
    except OSError as exc:
        raise VideoError(f"{path}: cannot be read ({exc})") from None
    if mode == "RGB" or (mode == "P" and not transparent):
        return size
    read_image(path)  # raises ImageError describing the mode
    raise VideoError(f"{path}: image mode {mode}; frames must be 8-bit RGB")


# --- codecs -------------------------------------------------------------------------------------

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PRORES_PROFILES = ("proxy", "lt", "standard", "hq", "4444", "4444xq")


@dataclass(frozen=True)
class CodecSpec:
    """One ``--codec``: its FFmpeg encoder, the name containers know it by (``family``), its quality
    scale (``crf``: lowest, highest, default; ``None`` when it has none), its ``presets`` (speed for
    x264/x265, ``cpu-used`` for VP9, SVT-AV1's preset number, the ProRes profile) and how it is
    made lossless (``lossless_options``; ``None``: it has no lossless mode; ``always_lossless``)."""

    name: str
    encoder: str
    family: str
    title: str
    suffix: str
    crf: tuple[int, int, int] | None = None
    presets: tuple[str, ...] = ()
    preset: str | None = None
    lossless_options: tuple[tuple[str, str], ...] | None = None
    always_lossless: bool = False
    folder: bool = False


CODECS = {
    "h264": CodecSpec(
        "h264", "libx264", "h264", "H.264 (libx264)", ".mp4", (0, 51, 18), X264_PRESETS, "medium", (("qp", "0"),)
    ),
    "h265": CodecSpec(
        "h265", "libx265", "hevc", "H.265/HEVC (libx265)", ".mp4", (0, 51, 20), X264_PRESETS, "medium",
        (("x265-params", "lossless=1:log-level=error"),),
    ),
    "vp9": CodecSpec(
        "vp9", "libvpx-vp9", "vp9", "VP9 (libvpx)", ".webm", (0, 63, 31), tuple(map(str, range(9))), "4",
        (("lossless", "1"),),
    ),
    "av1": CodecSpec(
        "av1", "libsvtav1", "av1", "AV1 (SVT-AV1)", ".mp4", (1, 63, 30), tuple(map(str, range(14))), "8",
        (("svtav1-params", "lossless=1"),),
    ),
    "ffv1": CodecSpec("ffv1", "ffv1", "ffv1", "FFV1 (lossless)", ".mkv", always_lossless=True),
    "prores": CodecSpec(
        "prores", "prores_ks", "prores", "Apple ProRes (prores_ks)", ".mov", None, PRORES_PROFILES, "hq"
    ),
    "png": CodecSpec("png", "png", "png", "PNG frames (a folder)", "", always_lossless=True, folder=True),
}  # fmt: skip
"""Every ``--codec``; ``check_encoder`` says whether this PyAV build can encode it."""


def codec_spec(name: str) -> CodecSpec:
    """The ``CodecSpec`` of ``--codec name``; ``VideoError`` for an unknown name."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise VideoError(f"--codec {name}: unknown codec; use one of {', '.join(CODECS)}") from None


def encoder_available(spec: CodecSpec) -> bool:
    """Whether this PyAV build can encode ``spec`` (PNG frames are written with PIL: always)."""
    if spec.folder:
        return True
    try:
        av.codec.Codec(spec.encoder, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def check_encoder(spec: CodecSpec) -> None:
    """Raise ``VideoError`` (one line) unless this PyAV build can encode ``spec``."""
    if not encoder_available(spec):
        here = ", ".join(n for n, s in CODECS.items() if encoder_available(s))
        raise VideoError(
            f"--codec {spec.name}: this PyAV {av.__version__} (FFmpeg {_ffmpeg_version()}) has no {spec.encoder} "
            f"encoder; codecs available here: {here}"
        )


def _ffmpeg_version() -> str:
    info = getattr(av, "ffmpeg_version_info", None)
    return str(info) if info else "unknown"


def _scratch_container(fmt: str) -> Any:
    """An in-memory output container of muxer ``fmt``: to ask what it can hold without creating files."""
    return av.open(io.BytesIO(), mode="w", format=fmt)


def container_holds(suffix: str, family: str) -> bool:
    """Whether a ``suffix`` file can hold a stream of codec ``family`` (``h264``, ``aac``, ...)."""
    container = _scratch_container(CONTAINER_FORMATS[suffix.lower()])
    try:
        return family in container.supported_codecs
    finally:
        container.close()


def check_container(path: Path, spec: CodecSpec) -> None:
    """Raise ``VideoError`` unless the suffix of ``path`` names a container that can hold ``spec``."""
    suffix = path.suffix.lower()
    if not container_holds(suffix, spec.family):
        fits = [s for s in VIDEO_SUFFIXES if container_holds(s, spec.family)]
        others = [n for n, s in CODECS.items() if not s.folder and container_holds(suffix, s.family)]
        raise VideoError(
            f"{path}: a {suffix} file cannot hold {spec.name} video; use {', '.join(fits)} for {spec.name}"
            + (f", or --codec {'/'.join(others)} for {suffix}" if others else "")
        )


# --- pixel formats and colour ---------------------------------------------------------------------


@dataclass(frozen=True)
class ColourTags:
    """FFmpeg's colour metadata of a stream: matrix (``space``), ``range`` (1 limited, 2 full),
    ``primaries`` and transfer (``trc``); 2 (0 for the range) means unspecified."""

    space: int = 2
    range: int = 0
    primaries: int = 2
    trc: int = 2

    @classmethod
    def of(cls, obj: Any) -> ColourTags:
        """The tags of a codec context or a frame."""
        return cls(int(obj.colorspace), int(obj.color_range), int(obj.color_primaries), int(obj.color_trc))


RGB_COLOUR = ColourTags(space=1, range=1, primaries=1, trc=1)
"""What an RGB source (a frame folder) becomes in YUV: BT.709, limited range."""


@dataclass(frozen=True)
class PixelFamily:
    """A pixel format reduced to what output keeps of it: RGB or YUV, chroma subsampling (log2 steps
    across and down: 1, 1 is 4:2:0) and bits per component."""

    rgb: bool
    chroma: tuple[int, int]
    depth: int

    @classmethod
    def of(cls, pix_fmt: str) -> PixelFamily:
        fmt = av.video.format.VideoFormat(pix_fmt)
        depth = max(c.bits for c in fmt.components)
        if fmt.is_rgb or fmt.has_palette:
            return cls(True, (0, 0), max(depth, 8))
        if pix_fmt.startswith(("gray", "ya")):  # no chroma to keep: the usual 4:2:0
            return cls(False, (1, 1), depth)
        sx = round(math.log2(64 / fmt.chroma_width(64)))
        sy = round(math.log2(64 / fmt.chroma_height(64)))
        return cls(False, (sx, sy), depth)

    def describe(self) -> str:
        kind = "RGB" if self.rgb else {(1, 1): "4:2:0", (1, 0): "4:2:2", (0, 0): "4:4:4"}.get(self.chroma, "YUV")
        return f"{kind} {self.depth}-bit"


_YUV_NAMES = {(1, 1): "yuv420p", (1, 0): "yuv422p", (0, 0): "yuv444p", (0, 1): "yuv440p"}


def _yuv(chroma: tuple[int, int], depth: int) -> str:
    base = _YUV_NAMES.get(chroma, "yuv420p")
    return base if depth <= 8 else f"{base}{depth}le"


def _rgb(depth: int) -> list[str]:
    return ["bgr0", "gbrp", "rgb24"] if depth <= 8 else [f"gbrp{depth}le", "gbrp16le", "rgb48le"]


def pixel_format_for(spec: CodecSpec, source_pix_fmt: str, lossless: bool, preset: str | None = None) -> str:
    """The pixel format ``spec`` writes for a source in ``source_pix_fmt``: the same family where the
    codec has it (10-bit in, 10-bit out; 4:2:2 stays 4:2:2), else the nearest it has. RGB sources go to
    4:2:0 for the delivery codecs (to RGB, or 4:4:4, with ``lossless``), RGB for FFV1; ProRes is 4:2:2
    10-bit, 4:4:4 for the 4444 profiles."""
    fam = PixelFamily.of(source_pix_fmt)
    supported = [f.name for f in av.codec.Codec(spec.encoder, "w").video_formats or []]
    depths = sorted({8, 10, 12, 16, fam.depth}, key=lambda d: (d < fam.depth, abs(d - fam.depth)))
    if spec.name == "prores":
        return "yuv444p10le" if preset in ("4444", "4444xq") else "yuv422p10le"
    candidates: list[str] = []
    if fam.rgb:
        if lossless or spec.always_lossless:
            for d in depths:
                candidates += _rgb(d)
            candidates += [_yuv((0, 0), d) for d in depths]
        candidates += [_yuv((1, 1), d) for d in depths]
    else:
        candidates += [_yuv(fam.chroma, d) for d in depths]
        candidates += [_yuv((1, 1), d) for d in depths]
    candidates.append("yuv420p")
    for name in candidates:
        if name in supported:
            return name
    return supported[0] if supported else "yuv420p"


def _chroma_steps(pix_fmt: str) -> tuple[int, int]:
    fam = PixelFamily.of(pix_fmt)
    return (1, 1) if fam.rgb else (2 ** fam.chroma[0], 2 ** fam.chroma[1])


@dataclass(frozen=True)
class EncoderPlan:
    """How a video is encoded: codec, pixel format, encoder options, colour tags, the encoded size (frames
    are padded by repeating the last row/column when the chroma subsampling needs even sizes) and
    whether frames travel as 16-bit RGB (sources or outputs above 8 bits)."""

    spec: CodecSpec
    pix_fmt: str
    options: dict[str, str]
    colour: ColourTags
    frame_size: tuple[int, int]
    coded_size: tuple[int, int]
    wide: bool
    crf: int | None
    preset: str | None
    lossless: bool

    @property
    def padded(self) -> bool:
        return self.coded_size != self.frame_size

    def describe(self) -> str:
        """``h264 yuv420p crf 18 medium``: for the summary line."""
        parts = [self.spec.name, self.pix_fmt]
        if self.lossless or self.spec.always_lossless:
            parts.append("lossless")
        elif self.crf is not None:
            parts.append(f"crf {self.crf}")
        if self.preset is not None:
            parts.append(f"{'profile' if self.spec.name == 'prores' else 'preset'} {self.preset}")
        return " ".join(parts)


def plan_encoder(
    codec: str,
    width: int,
    height: int,
    source_pix_fmt: str = "rgb24",
    colour: ColourTags | None = None,
    crf: int | None = None,
    preset: str | None = None,
    lossless: bool = False,
) -> EncoderPlan:
    """Check ``--crf``, ``--preset`` and ``--lossless`` against ``codec`` and choose its pixel format and
    options for a ``width`` x ``height`` source in ``source_pix_fmt`` (``VideoError`` for a combination
    the codec does not have)."""
    spec = codec_spec(codec)
    check_encoder(spec)
    if crf is not None:
        if spec.crf is None:
            raise VideoError(f"--crf: {spec.name} has no quality scale (it is {_nature(spec)})")
        if lossless:
            raise VideoError("--crf and --lossless: give one")
        if not spec.crf[0] <= crf <= spec.crf[1]:
            raise VideoError(f"--crf {crf}: {spec.name} takes {spec.crf[0]} (best) to {spec.crf[1]}")
    if preset is not None and preset not in spec.presets:
        if not spec.presets:
            raise VideoError(f"--preset: {spec.name} has no presets")
        raise VideoError(f"--preset {preset}: {spec.name} takes {', '.join(spec.presets)}")
    if lossless and spec.lossless_options is None and not spec.always_lossless:
        raise VideoError(f"--lossless: {spec.name} has no lossless mode; use --codec ffv1 (or png frames)")
    source = PixelFamily.of(source_pix_fmt)
    if spec.name == "prores" and preset is None:
        preset = "4444" if source.rgb or source.chroma == (0, 0) else spec.preset
    preset = preset if preset is not None else spec.preset
    if spec.crf is not None and not lossless:
        crf = spec.crf[2] if crf is None else crf
    pix_fmt = pixel_format_for(spec, source_pix_fmt, lossless, preset)
    out = PixelFamily.of(pix_fmt)
    if out.rgb:
        tags = ColourTags(space=0, range=2, primaries=(colour or RGB_COLOUR).primaries, trc=(colour or RGB_COLOUR).trc)
    elif colour is None or source.rgb:
        tags = RGB_COLOUR
    else:
        tags = colour
    sx, sy = _chroma_steps(pix_fmt)
    coded = (math.ceil(width / sx) * sx, math.ceil(height / sy) * sy)
    return EncoderPlan(
        spec, pix_fmt, _encoder_options(spec, crf, preset, lossless), tags, (width, height), coded,
        wide=max(source.depth, out.depth) > 8, crf=crf, preset=preset if spec.presets else None, lossless=lossless,
    )  # fmt: skip


def _nature(spec: CodecSpec) -> str:
    return "lossless" if spec.always_lossless else "set by --preset (its profile)"


def _encoder_options(spec: CodecSpec, crf: int | None, preset: str | None, lossless: bool) -> dict[str, str]:
    opts: dict[str, str] = {}
    if spec.name in ("h264", "h265"):
        opts["preset"] = preset or "medium"
        if spec.name == "h265":
            opts["x265-params"] = "log-level=error"
    elif spec.name == "vp9":
        opts.update({"cpu-used": preset or "4", "row-mt": "1", "b": "0"})
    elif spec.name == "av1":
        opts["preset"] = preset or "8"
    elif spec.name == "ffv1":
        opts.update({"level": "3", "slicecrc": "1"})
    elif spec.name == "prores":
        opts["profile"] = str(PRORES_PROFILES.index(preset or "hq"))
    if lossless and spec.lossless_options is not None:
        opts.update(dict(spec.lossless_options))
    elif crf is not None:
        opts["crf"] = str(crf)
    return opts


# --- sources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    """A non-video stream of the input: ``kind`` is ``audio``, ``subtitle``, ``data`` or ``attachment``."""

    index: int
    kind: str
    codec: str
    language: str | None = None

    def describe(self) -> str:
        return f"{self.kind} track {self.index} ({self.codec}{', ' + self.language if self.language else ''})"


@dataclass
class FrameSource:
    """Frames of a video or a folder, read lazily as (3, H, W) float tensors in [0, 1].

    ``fps`` is the rate frames are placed at (``None`` for a folder: the caller's ``--input_fps``);
    ``timing_note`` says when a video's timestamps were missing or variable and its average rate is
    used instead; ``start`` is the first frame's time in seconds (audio is placed relative to it)."""

    path: Path
    width: int
    height: int
    count: int | None
    fps: Fraction | None
    files: list[Path] = field(default_factory=list)
    pix_fmt: str = "rgb24"
    colour: ColourTags | None = None
    start: Fraction = Fraction(0)
    timing_note: str | None = None
    tracks: list[Track] = field(default_factory=list)
    folder_note: str | None = None

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    @property
    def frame_suffix(self) -> str | None:
        """The one image suffix of a folder's frames (``None`` for a video or mixed suffixes)."""
        suffixes = {p.suffix for p in self.files}
        return suffixes.pop() if len(suffixes) == 1 else None

    @property
    def wide(self) -> bool:
        """Whether frames carry more than 8 bits (decoded as 16-bit RGB)."""
        return PixelFamily.of(self.pix_fmt).depth > 8

    def frame(self, index: int) -> torch.Tensor:
        """One frame of a folder source (video sources are read with ``frames``)."""
        return read_image(self.files[index])

    def frame_name(self, index: int) -> str:
        """How messages name frame ``index``."""
        return str(self.files[index]) if self.is_folder else f"{self.path} frame {index}"

    def frames(self) -> Iterator[torch.Tensor]:
        """All frames in order; every frame is checked to have the source's size."""
        if self.is_folder:
            for i in range(len(self.files)):
                yield self.frame(i)
            return
        for i, frame in enumerate(_decode(self.path, self.wide)):
            if frame.shape[-2:] != (self.height, self.width):
                raise VideoError(
                    f"{self.path}: frame {i} is {frame.shape[-1]}x{frame.shape[-2]}, "
                    f"the first was {self.width}x{self.height}"
                )
            yield frame


def open_source(path: str | Path, naming: FrameNaming | None = None) -> FrameSource:
    """Open a video file or a folder of frames (see ``select_frame_files``), validating it before any
    work is done."""
    path = Path(path)
    if path.is_dir():
        files, note = select_frame_files(path, naming)
        if not files:
            raise VideoError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if len(files) < 2:
            raise VideoError(f"{path}: holds only one frame ({files[0].name}); interpolation needs at least two")
        width, height = probe_image(files[0])
        for f in files[1:]:
            size = probe_image(f)
            if size != (width, height):
                raise VideoError(
                    f"{f}: frame is {size[0]}x{size[1]}, but {files[0].name} is {width}x{height}; "
                    "all frames must have one size"
                )
        return FrameSource(path, width, height, len(files), None, files, folder_note=note)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        pix_fmt = stream.codec_context.pix_fmt or "yuv420p"
        colour = ColourTags.of(stream.codec_context)
        count, fps, start, note = _scan_timing(path, container, stream)
        tracks = [
            Track(s.index, s.type, _codec_name(s), s.language)
            for s in container.streams
            if s.index != stream.index and s.type in ("audio", "subtitle", "data", "attachment")
        ]
    finally:
        container.close()
    first = list(_take(_decode(path, False), 2))
    if not first:
        raise VideoError(f"{path}: video holds no decodable frames")
    if len(first) < 2:
        raise VideoError(f"{path}: video holds only one frame; interpolation needs at least two")
    height, width = first[0].shape[-2:]
    if pix_fmt.startswith("yuvj"):
        pix_fmt, colour = "yuv" + pix_fmt[4:], replace(colour, range=2)
    try:
        PixelFamily.of(pix_fmt)
    except (ValueError, av.FFmpegError):
        pix_fmt = "yuv420p"
    return FrameSource(
        path, int(width), int(height), count, fps, pix_fmt=pix_fmt, colour=colour, start=start,
        timing_note=note, tracks=tracks,
    )  # fmt: skip


def _codec_name(stream: Any) -> str:
    try:
        return str(stream.codec_context.name)
    except (AttributeError, av.FFmpegError):
        return "unknown"


def _scan_timing(path: Path, container: Any, stream: Any) -> tuple[int | None, Fraction | None, Fraction, str | None]:
    """(frame count, rate, first frame time, note) from the video packets' timestamps (read without
    decoding). Regular timestamps keep the stream's own rate; variable or missing ones are replaced by
    the average rate, and the note says so."""
    declared = stream.average_rate or stream.guessed_rate
    declared = Fraction(declared) if declared else None
    tb = stream.time_base
    times: list[int] = []
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            count += 1
            if packet.pts is not None:
                times.append(packet.pts)
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: reading failed ({_first_line(exc)})") from None
    if count == 0:
        return None, declared, Fraction(0), None
    times.sort()
    if tb is None or len(times) < count:
        what = "has no timestamps" if not times else "lacks some timestamps"
        return count, declared, Fraction(0), _timing_note(path, what, declared)
    seconds = [Fraction(t) * tb for t in times]
    start = seconds[0]
    if len(seconds) < 2:
        return count, declared, start, None
    measured = (len(seconds) - 1) / (seconds[-1] - seconds[0]) if seconds[-1] > seconds[0] else None
    rate = declared or measured
    if rate is None:
        return count, None, start, None
    slack = max(Fraction(tb), 1 / (4 * rate))
    if all(abs(s - start - i / rate) <= slack for i, s in enumerate(seconds)):
        return count, rate, start, None
    average = Fraction(measured).limit_denominator(1_000_000) if measured else rate
    gaps = [b - a for a, b in itertools.pairwise(seconds)]
    what = f"has variable frame timing (intervals {float(min(gaps)) * 1e3:.1f} to {float(max(gaps)) * 1e3:.1f} ms)"
    return count, average, start, _timing_note(path, what, average)


def _timing_note(path: Path, what: str, rate: Fraction | None) -> str:
    placed = f"its average rate of {float(rate):g} fps" if rate else "--input_fps"
    return f"note: {path} {what}; frames are placed at {placed}"


def _open_video(path: Path) -> Any:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{path}: not a readable video or image folder ({_first_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: holds no video stream")
    return container


def _decode(path: Path, wide: bool) -> Iterator[torch.Tensor]:
    """Frames as float RGB, through 16-bit RGB when ``wide`` (sources above 8 bits)."""
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if wide:
                rgb = frame.to_ndarray(format="rgb48le").astype(np.float32)
                yield torch.from_numpy(rgb).permute(2, 0, 1).div_(65535.0)
            else:
                rgb = frame.to_ndarray(format="rgb24")
                yield torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: decoding failed ({_first_line(exc)})") from None
    finally:
        container.close()


def _take(it: Iterator[torch.Tensor], n: int) -> Iterator[torch.Tensor]:
    for i, x in enumerate(it):
        if i >= n:
            break
        yield x


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


# --- sinks -------------------------------------------------------------------------------------


def to_uint16(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] to an H x W x 3 uint16 array (round to nearest)."""
    array = frame.detach().float().clamp(0, 1).mul(65535).round().to(torch.int32)
    return array.permute(1, 2, 0).cpu().numpy().astype(np.uint16)


class VideoWriter:
    """A video written atomically with ``plan`` (see ``plan_encoder``; default: H.264 for the first
    frame's size). ``container`` is open between ``__enter__`` and ``__exit__``, so that other tracks
    (audio, subtitles) can be added before the first frame is written."""

    def __init__(
        self,
        path: str | Path,
        fps: Fraction,
        force: bool = False,
        crf: int | None = None,
        plan: EncoderPlan | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.crf = crf
        self.force = force
        self.plan = plan
        self.count = 0
        self._atomic: Any = None
        self.container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path, self.force)
        tmp = self._atomic.__enter__()
        try:
            self.container = av.open(str(tmp), mode="w", format=CONTAINER_FORMATS.get(self.path.suffix.lower()))
            if self.plan is not None:
                self._add_stream(self.plan)
        except BaseException as exc:
            # atomic_path removes the temporary file and restates an OSError for self.path
            if self.container is not None:
                self.container.close()
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _add_stream(self, plan: EncoderPlan) -> None:
        if plan.spec.name == "av1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration unless told otherwise
        stream = self.container.add_stream(plan.spec.encoder, rate=self.fps, options=dict(plan.options))
        stream.width, stream.height = plan.coded_size
        stream.pix_fmt = plan.pix_fmt
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_range = plan.colour.space, plan.colour.range
        ctx.color_primaries, ctx.color_trc = plan.colour.primaries, plan.colour.trc
        if plan.spec.name == "h265" and self.path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            stream.codec_tag = "hvc1"  # the tag Apple players need for HEVC
        self._stream = stream

    def write(self, frame: torch.Tensor) -> None:
        """Append one (3, H, W) frame in [0, 1]."""
        if self._stream is None:
            size = (frame.shape[-1], frame.shape[-2])
            self.plan = plan_encoder("h264", *size, crf=self.crf)
            self._add_stream(self.plan)
        plan = self.plan
        assert plan is not None
        array = to_uint16(frame) if plan.wide else to_uint8(frame)
        h, w = array.shape[:2]
        pad_w, pad_h = plan.coded_size[0] - w, plan.coded_size[1] - h
        if pad_w or pad_h:
            array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb48le" if plan.wide else "rgb24")
        if PixelFamily.of(plan.pix_fmt).rgb:
            out = rgb.reformat(format=plan.pix_fmt)
        else:
            out = rgb.reformat(
                format=plan.pix_fmt,
                dst_colorspace=plan.colour.space if plan.colour.space != 2 else None,
                dst_color_range=plan.colour.range or None,
            )
        out.color_primaries, out.color_trc = plan.colour.primaries, plan.colour.trc
        out.pts = self.count
        out.time_base = 1 / self.fps
        for packet in self._stream.encode(out):
            self.container.mux(packet)
        self.count += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            try:
                if exc_type is None and self._stream is not None:
                    for packet in self._stream.encode():
                        self.container.mux(packet)
            finally:
                self.container.close()
        except BaseException as failure:
            if exc_type is None:  # flushing failed (a full disk, say): let atomic_path clean up and restate it
                self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


@dataclass
class FolderWriter:
    """Numbered frames in a folder (``{index_from + i:0{zpad}d}{suffix}``), one atomic file each,
    with a manifest of the settings and of this naming so that a rerun resumes instead of starting over
    (and a rerun that would name or place frames differently is refused)."""

    folder: Path
    settings: dict[str, Any]
    suffix: str = ".png"
    zpad: int = 5
    index_from: int = 0
    created: bool = False
    written: list[Path] = field(default_factory=list)

    def name(self, index: int) -> Path:
        return self.folder / f"{self.index_from + index:0{self.zpad}d}{self.suffix}"

    def exists(self, index: int) -> bool:
        return self.name(index).is_file()

    @property
    def manifest(self) -> dict[str, Any]:
        """What the manifest records: the settings plus the frame naming (``--img_format``, ``--zpad``,
        ``--index_from``)."""
        return {**self.settings, "img_format": self.suffix, "zpad": self.zpad, "index_from": self.index_from}

    def ours(self, suffixes: tuple[str, ...] = ()) -> list[Path]:
        """Files in the folder that follow this writer's naming, or numbered files with one of ``suffixes``
        (a previous run's naming): what ``--force`` replaces."""
        alternatives = "|".join(re.escape(s) for s in (self.suffix, *suffixes))
        pattern = re.compile(rf"^\d+(?:{alternatives})$")
        return [p for p in self.folder.iterdir() if p.is_file() and pattern.match(p.name)]

    @staticmethod
    def recorded(folder: Path) -> dict[str, Any] | None:
        """The manifest of an earlier run in ``folder`` (layout defaults filled in), or None if absent or
        unreadable."""
        try:
            previous = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(previous, dict):
            return None
        return {**FOLDER_LAYOUT_DEFAULTS, **previous}

    def check(self, force: bool) -> str:
        """Decide, before any work, how to treat an existing folder: ``"new"``, ``"resume"`` or
        ``"restart"`` (``force``). Raises ``VideoError`` for a folder that is not ours to continue, and
        ``OutputWriteError`` for a folder that cannot be written."""
        if self.folder.exists() and not self.folder.is_dir():
            raise VideoError(f"{self.folder}: exists and is not a folder (pass a new name, or a video suffix)")
        check_writable_location(self.folder, folder=True)
        if not self.folder.exists() or not any(self.folder.iterdir()):
            return "new"
        if force:
            return "restart"
        manifest = self.folder / MANIFEST
        if not manifest.is_file():
            raise VideoError(f"{self.folder}: folder exists and is not empty (pass --force to write into it)")
        previous = self.recorded(self.folder)
        if previous is None:
            raise VideoError(f"{manifest}: unreadable manifest (pass --force to start over)")
        self.compare(previous)
        return "resume"

    def compare(self, previous: dict[str, Any]) -> None:
        """Raise ``VideoError`` naming the first setting in which ``previous`` (a manifest) differs."""
        current = self.manifest
        if previous.get("prealign") and "prealign_levels" not in previous and current.get("prealign"):
            raise VideoError(
                f"{self.folder}: holds frames made with --prealign before its depth was recorded "
                "(pass --force to start over, or choose another folder)"
            )
        keys = list(current) + [k for k in previous if k not in current]
        diff = [k for k in keys if previous.get(k) != current.get(k)]
        if diff:
            k = diff[0]
            raise VideoError(
                f"{self.folder}: holds frames made with {k}={previous.get(k)!r}, now {current.get(k)!r} "
                "(pass --force to start over, or choose another folder)"
            )

    def start(self, mode: str) -> None:
        """Create the folder (or clear our old frames, in this run's and the previous run's naming, for
        ``"restart"``) and write the manifest."""
        try:
            if mode == "restart":
                previous = self.recorded(self.folder) or {}
                old_suffix = previous.get("img_format")
                for p in self.ours((old_suffix,) if isinstance(old_suffix, str) and old_suffix else ()):
                    p.unlink()
                (self.folder / MANIFEST).unlink(missing_ok=True)
            if not self.folder.exists():
                self.folder.mkdir(parents=True)
                self.created = True
        except OSError as exc:
            raise OutputWriteError(f"{self.folder}: cannot write ({exc.strerror or exc})") from exc
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")

    def write(self, index: int, frame: torch.Tensor) -> None:
        path = self.name(index)
        fmt = Image.registered_extensions()[self.suffix.lower()]
        options = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
        with atomic_path(path, force=True) as tmp:
            Image.fromarray(to_uint8(frame)).save(tmp, format=fmt, **options)
        self.written.append(path)

    def discard(self) -> None:
        """Remove what this run wrote (after a bad-input error in a fresh run)."""
        for p in self.written:
            p.unlink(missing_ok=True)
        if self.created:
            (self.folder / MANIFEST).unlink(missing_ok=True)
            if not any(self.folder.iterdir()):
                self.folder.rmdir()


class GifPreview:
    """Collects the first frames of the output, downscaled, and writes them as a looping GIF."""

    def __init__(self, path: str | Path, fps: Fraction, max_frames: int = 96, max_width: int = 480) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".gif":
            raise VideoError(f"{self.path}: the preview must end in .gif")
        self.fps = fps
        self.max_frames = max_frames
        self.max_width = max_width
        self.images: list[Image.Image] = []

    def add(self, frame: torch.Tensor) -> None:
        if len(self.images) >= self.max_frames:
            return
        img = Image.fromarray(to_uint8(frame))
        if img.width > self.max_width:
            img = img.resize((self.max_width, round(img.height * self.max_width / img.width)), Image.LANCZOS)
        self.images.append(img)

    @property
    def frame_ms(self) -> int:
        """Frame duration; GIF counts in 10 ms steps and viewers slow down anything under 20 ms."""
        return max(20, round(1000 / float(self.fps) / 10) * 10)

    def save(self, force: bool) -> None:
        """Write the GIF atomically (an error names ``self.path``, never the temporary file)."""
        with atomic_path(self.path, force) as tmp:
            first, *rest = self.images
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=self.frame_ms, loop=0)


def output_kind(path: Path) -> str:
    """``"video"`` for a video suffix, ``"folder"`` otherwise; ``.gif`` (see ``--gif``), image suffixes
    and video containers this tool does not write (``UNWRITABLE_VIDEO_SUFFIXES``) are refused."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".gif":
        raise VideoError(f"{path}: write the video as .mp4 (or a folder) and use --gif for a GIF preview")
    if suffix in IMAGE_SUFFIXES:
        raise VideoError(f"{path}: looks like an image; give a folder name or a video file (.mp4)")
    if suffix in UNWRITABLE_VIDEO_SUFFIXES:
        raise VideoError(
            f"{path}: cannot write {suffix} video; use one of {', '.join(VIDEO_SUFFIXES)}, "
            "or a name without a video suffix for a folder of frames"
        )
    return "folder"


def read_video_info(path: str | Path) -> tuple[int, Fraction, tuple[int, int]]:
    """(frame count, average frame rate, (width, height)) of a video, counted by decoding."""
    count = sum(1 for _ in _decode(Path(path), False))
    container = _open_video(Path(path))
    try:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or stream.guessed_rate)
        size = (stream.codec_context.width, stream.codec_context.height)
    finally:
        container.close()
    return count, rate, size


def describe_rate(rate: Fraction) -> str:
    """``60``, ``59.94`` or ``23.976``: a frame rate as people write it."""
    value = float(rate)
    return f"{value:g}" if rate.denominator == 1 else f"{value:.3f}".rstrip("0").rstrip(".")


def parse_rate(text: str, flag: str) -> Fraction:
    """A frame rate such as ``60``, ``59.94`` or ``60000/1001``; decimals that round the NTSC rates
    (23.976, 29.97, 59.94, ...) mean them exactly (N x 1000/1001). ``VideoError`` unless positive."""
    raw = str(text).strip()
    try:
        value = Fraction(raw)
    except (ValueError, ZeroDivisionError):
        raise VideoError(f"{flag} {text}: expected a frame rate like 60, 59.94 or 60000/1001") from None
    if value <= 0:
        raise VideoError(f"{flag} {text}: a frame rate must be positive")
    if "." in raw and "/" not in raw:
        base = round(value * Fraction(1001, 1000))
        ntsc = Fraction(base * 1000, 1001)
        if base > 0 and value.denominator > 1 and abs(value - ntsc) < Fraction(1, 200):
            return ntsc
    return value


__all__ = [
    "CODECS",
    "CONTAINER_FORMATS",
    "FOLDER_LAYOUT_DEFAULTS",
    "MANIFEST",
    "UNWRITABLE_VIDEO_SUFFIXES",
    "VIDEO_SUFFIXES",
    "CodecSpec",
    "ColourTags",
    "EncoderPlan",
    "FolderWriter",
    "FrameNaming",
    "FrameSource",
    "GifPreview",
    "PixelFamily",
    "Track",
    "VideoError",
    "VideoWriter",
    "check_container",
    "check_encoder",
    "codec_spec",
    "container_holds",
    "describe_rate",
    "encoder_available",
    "ensure_writable",
    "list_frame_files",
    "natural_key",
    "open_source",
    "output_kind",
    "parse_rate",
    "pixel_format_for",
    "plan_encoder",
    "probe_image",
    "read_video_info",
    "select_frame_files",
    "to_uint16",
]
