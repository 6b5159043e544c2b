"""Frame sources and sinks for slow-motion video: video files (PyAV), folders of frames, GIF previews.

Sources validate what they can before any work (readable, at least two frames, one size, 8-bit RGB),
so that a bad input fails in one line without leaving output behind. Sinks write atomically: a video
is encoded into a temporary file renamed on success; a frame folder gets one atomic file per frame and
a small manifest that makes an interrupted run resumable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cdfi.io.atomic import OutputWriteError, atomic_path, atomic_write_text, check_writable_location, ensure_writable
from cdfi.io.images import IMAGE_SUFFIXES, read_image, to_uint8, too_large

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".m4v")
"""Output suffixes written as an H.264 video; any other name is a folder of frames, except the ones below."""

UNWRITABLE_VIDEO_SUFFIXES = (
    ".webm", ".ogv", ".ogg", ".flv", ".f4v", ".wmv", ".asf", ".mpg", ".mpeg", ".m2v", ".ts", ".mts",
    ".m2ts", ".vob", ".3gp", ".3g2", ".y4m", ".h264", ".264", ".hevc", ".h265", ".apng", ".mjpeg",
)  # fmt: skip
"""Video containers that cannot hold this tool's H.264 output: refused rather than taken as a folder name."""

FOLDER_LAYOUT_DEFAULTS = {"img_format": ".png", "zpad": 5, "index_from": 0}
"""Frame naming of a folder output, recorded in its manifest; a manifest written before these were
recorded used the defaults."""

MANIFEST = ".cdfi_video.json"
"""File in a frame-folder output that records the settings, so a rerun can resume safely."""


class VideoError(ValueError):
    """An input or output the video tools cannot use; the message names the file and the problem."""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a folder (hidden files skipped), in natural order."""
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


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


@dataclass
class FrameSource:
    """Frames of a video or a folder, read lazily as (3, H, W) float tensors in [0, 1]."""

    path: Path
    width: int
    height: int
    count: int | None
    fps: Fraction | None
    files: list[Path] = field(default_factory=list)

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    def frame(self, index: int) -> torch.Tensor:
        """One frame of a folder source (video sources are read with ``frames``)."""
        return read_image(self.files[index])

    def frames(self) -> Iterator[torch.Tensor]:
        """All frames in order; every frame is checked to have the source's size."""
        if self.is_folder:
            for i in range(len(self.files)):
                yield self.frame(i)
            return
        for i, frame in enumerate(_decode(self.path)):
            if frame.shape[-2:] != (self.height, self.width):
                raise VideoError(
                    f"{self.path}: frame {i} is {frame.shape[-1]}x{frame.shape[-2]}, "
                    f"the first was {self.width}x{self.height}"
                )
            yield frame


def open_source(path: str | Path) -> FrameSource:
    """Open a video file or a folder of frames, validating it before any work is done."""
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
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
        return FrameSource(path, width, height, len(files), None, files)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate
        count = stream.frames or None
    finally:
        container.close()
    first = list(_take(_decode(path), 2))
    if not first:
        raise VideoError(f"{path}: video holds no decodable frames")
    if len(first) < 2:
        raise VideoError(f"{path}: video holds only one frame; interpolation needs at least two")
    height, width = first[0].shape[-2:]
    return FrameSource(path, int(width), int(height), count, Fraction(fps) if fps else None)


def _open_video(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{path}: not a readable video or image folder ({_first_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: holds no video stream")
    return container


def _decode(path: Path) -> Iterator[torch.Tensor]:
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
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


class VideoWriter:
    """H.264 (libx264, yuv420p) video written atomically; odd sizes get their last row/column repeated,
    because yuv420p needs even dimensions."""

    def __init__(self, path: str | Path, fps: Fraction, force: bool = False, crf: int = 18) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.crf = crf
        self.force = force
        self.count = 0
        self._atomic: Any = None
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path, self.force)
        tmp = self._atomic.__enter__()
        try:
            self._container = av.open(str(tmp), mode="w")
        except BaseException as exc:
            # atomic_path removes the temporary file and restates an OSError for self.path
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, frame: torch.Tensor) -> None:
        """Append one (3, H, W) frame in [0, 1]."""
        array = to_uint8(frame)
        h, w = array.shape[:2]
        if h % 2 or w % 2:
            array = np.pad(array, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.width, self._stream.height = array.shape[1], array.shape[0]
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
        video_frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        video_frame.pts = self.count
        video_frame.time_base = 1 / self.fps
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.count += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            try:
                if exc_type is None and self._stream is not None:
                    for packet in self._stream.encode():
                        self._container.mux(packet)
            finally:
                self._container.close()
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

    def _previous(self) -> dict[str, Any] | None:
        """The manifest of an earlier run in this folder (layout defaults filled in), or None if unreadable."""
        try:
            previous = json.loads((self.folder / MANIFEST).read_text())
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
        previous = self._previous()
        if previous is None:
            raise VideoError(f"{manifest}: unreadable manifest (pass --force to start over)")
        current = self.manifest
        keys = list(current) + [k for k in previous if k not in current]
        diff = [k for k in keys if previous.get(k) != current.get(k)]
        if diff:
            k = diff[0]
            raise VideoError(
                f"{self.folder}: holds frames made with {k}={previous.get(k)!r}, now {current.get(k)!r} "
                "(pass --force to start over, or choose another folder)"
            )
        return "resume"

    def start(self, mode: str) -> None:
        """Create the folder (or clear our old frames, in this run's and the previous run's naming, for
        ``"restart"``) and write the manifest."""
        try:
            if mode == "restart":
                previous = self._previous() or {}
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
        with atomic_path(path, force=True) as tmp:
            Image.fromarray(to_uint8(frame)).save(tmp, format=Image.registered_extensions()[self.suffix.lower()])
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
    and video containers that cannot hold H.264 (``UNWRITABLE_VIDEO_SUFFIXES``) are refused."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".gif":
        raise VideoError(f"{path}: write the video as .mp4 (or a folder) and use --gif for a GIF preview")
    if suffix in IMAGE_SUFFIXES:
        raise VideoError(f"{path}: looks like an image; give a folder name or a video file (.mp4)")
    if suffix in UNWRITABLE_VIDEO_SUFFIXES:
        raise VideoError(
            f"{path}: cannot write {suffix} video; use one of {', '.join(VIDEO_SUFFIXES)} "
            "(H.264), or a name without a video suffix for a folder of frames"
        )
    return "folder"


def read_video_info(path: str | Path) -> tuple[int, Fraction, tuple[int, int]]:
    """(frame count, average frame rate, (width, height)) of a video, counted by decoding."""
    count = sum(1 for _ in _decode(Path(path)))
    container = _open_video(Path(path))
    try:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or stream.guessed_rate)
        size = (stream.codec_context.width, stream.codec_context.height)
    finally:
        container.close()
    return count, rate, size


__all__ = [
    "FOLDER_LAYOUT_DEFAULTS",
    "MANIFEST",
    "UNWRITABLE_VIDEO_SUFFIXES",
    "VIDEO_SUFFIXES",
    "FolderWriter",
    "FrameSource",
    "GifPreview",
    "VideoError",
    "VideoWriter",
    "ensure_writable",
    "list_frame_files",
    "natural_key",
    "open_source",
    "output_kind",
    "probe_image",
    "read_video_info",
]
