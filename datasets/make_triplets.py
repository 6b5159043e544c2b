"""Build a Vimeo-90K-layout triplet folder from videos (PyAV, or OpenCV where PyAV is missing) or frame folders.

    python datasets/make_triplets.py clip.mp4 frames_dir/ --out db/my_triplets --max_size 640x360

Output::

    <out>/sequences/00001/0001/im1.png im2.png im3.png    # clip 1, triplet 1
    <out>/tri_trainlist.txt  <out>/tri_testlist.txt        # entries 00001/0001 ...
    <out>/triplets.json                                     # sources, options, frame indices per entry

A triplet is frames (i, i + stride, i + 2*stride) of one clip; consecutive triplets start ``every``
frames apart. Several strides (``--stride 1,2``) give one triplet set per stride from the same frames:
a larger stride means larger motion, which is how short clips cover the motion range of the benchmarks.
Frames are optionally centre-cropped (``crop``, in source pixels), then resized (``size`` exactly, or
``max_size`` to fit inside keeping the aspect ratio, never enlarging). A triplet
whose consecutive frames differ by more than ``scene_cut`` (mean absolute difference in [0, 1]) spans
a scene cut and is dropped; one whose inputs differ by less than ``min_motion`` is dropped as static.

Validation split: the last ``val_fraction`` of each clip's frames are held out; test triplets use only
those frames and training triplets only the others, so no frame is shared (``triplets.json`` records
the frame indices). Each frame is encoded once and hard-linked into every triplet that uses it. The
folder is built beside ``out`` and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image
from tqdm import tqdm

from cdfi.cli import run_cli
from cdfi.io.atomic import OutputExistsError, publish_directory, staging_directory
from cdfi.io.images import IMAGE_SUFFIXES

__all__ = ["BuildReport", "TripletBuildError", "build_triplets", "main", "parse_size", "read_frames"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".y4m", ".gif")


class TripletBuildError(ValueError):
    """A source or option that cannot produce a triplet folder."""


@dataclass
class BuildReport:
    """What ``build_triplets`` wrote: counts per split and per-reason drops."""

    out_dir: Path
    train: int = 0
    test: int = 0
    scene_cuts: int = 0
    static: int = 0
    clips: list[dict] = field(default_factory=list)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"448x256"`` -> (448, 256) as (width, height); None stays None."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TripletBuildError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 448x256") from None
    if w < 1 or h < 1:
        raise TripletBuildError(f"size {text!r} must be positive")
    return w, h


def parse_strides(text: str) -> list[int]:
    """``"2"`` or ``"1,2,3"`` -> a list of positive frame gaps (argparse type)."""
    try:
        strides = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a comma list of integers, got {text!r}") from None
    if not strides or min(strides) < 1:
        raise argparse.ArgumentTypeError(f"strides must be at least 1, got {text!r}")
    return strides


def _source_kind(path: Path) -> str:
    if path.is_dir():
        return "frames"
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise TripletBuildError(f"{path}: a single image; pass the folder that holds the frames")
        return "video"
    raise TripletBuildError(f"{path}: no such video file or frame folder")


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TripletBuildError(f"{folder}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _size_text(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames of a video (PyAV, else OpenCV) or of a folder of images (sorted by name) as H x W x 3 uint8 arrays.

    Every frame of one source must have the first frame's size; a frame of another size raises
    TripletBuildError naming it and both sizes.
    """
    path = Path(path)
    if _source_kind(path) == "frames":
        first: tuple[Path, np.ndarray] | None = None
        for i, f in enumerate(_frame_files(path)):
            if max_frames is not None and i >= max_frames:
                return
            try:
                with Image.open(f) as img:
                    frame = np.asarray(img.convert("RGB"))
            except Image.DecompressionBombError as exc:
                reason = str(exc).split(",")[0]
                raise TripletBuildError(f"{f}: image too large to decode safely ({reason})") from None
            except (OSError, ValueError) as exc:
                raise TripletBuildError(f"{f}: not a readable image ({exc})") from None
            if first is None:
                first = (f, frame)
            elif frame.shape != first[1].shape:
                raise TripletBuildError(
                    f"{f}: frame is {_size_text(frame)}, but {first[0].name} is {_size_text(first[1])}; "
                    "all frames of a clip must have one size"
                )
            yield frame
        return
    yield from _same_size(path, _decode_video(path, max_frames))


def _same_size(path: Path, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Pass ``frames`` through, refusing a frame whose size differs from the first one's."""
    first = None
    for i, frame in enumerate(frames):
        if first is None:
            first = frame
        elif frame.shape != first.shape:
            raise TripletBuildError(
                f"{path}: frame {i} is {_size_text(frame)}, but frame 0 is {_size_text(first)}; "
                "all frames of a clip must have one size"
            )
        yield frame


def _decode_video(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """Frames of a video file: PyAV, else OpenCV."""
    try:
        import av
    except ImportError:
        yield from _read_frames_opencv(path, max_frames)
        return

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise TripletBuildError(f"{path}: not a readable video ({exc})") from None
    with container:
        if not container.streams.video:
            raise TripletBuildError(f"{path}: has no video stream")
        for i, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")


def _read_frames_opencv(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """Decode a video with OpenCV: the fallback where PyAV is not installed (e.g. a bare GPU image)."""
    try:
        import cv2
    except ImportError:
        raise TripletBuildError(f"{path}: decoding videos needs PyAV or OpenCV (pip install av)") from None
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise TripletBuildError(f"{path}: not a readable video (OpenCV could not open it)")
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield np.ascontiguousarray(frame[..., ::-1])
        if count == 0:
            raise TripletBuildError(f"{path}: has no decodable video frames")
    finally:
        capture.release()


def _transform(
    frame: np.ndarray, crop: tuple[int, int] | None, size: tuple[int, int] | None, max_size: tuple[int, int] | None
) -> np.ndarray:
    h, w = frame.shape[:2]
    if crop is not None:
        cw, ch = crop
        if cw > w or ch > h:
            raise TripletBuildError(f"crop {cw}x{ch} is larger than the {w}x{h} frames")
        y, x = (h - ch) // 2, (w - cw) // 2
        frame, (h, w) = frame[y : y + ch, x : x + cw], (ch, cw)
    target = size
    if target is None and max_size is not None:
        scale = min(max_size[0] / w, max_size[1] / h, 1.0)
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if target is not None and target != (w, h):
        frame = np.asarray(Image.fromarray(frame).resize(target, Image.Resampling.BICUBIC))
    return np.ascontiguousarray(frame)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in [0, 1] on a 4x-subsampled copy (enough to see a cut)."""
    return float(np.abs(a[::4, ::4].astype(np.int16) - b[::4, ::4].astype(np.int16)).mean() / 255.0)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _splits(n: int, span: int, val_fraction: float) -> tuple[range, range]:
    """Frame ranges of the training and held-out parts of an ``n``-frame clip."""
    if val_fraction <= 0:
        return range(0, n), range(n, n)
    held = max(span + 1, round(n * val_fraction))
    if n - held < span + 1:
        return range(0, n), range(n, n)
    return range(0, n - held), range(n - held, n)


def build_triplets(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    *,
    stride: int | Sequence[int] = 1,
    every: int = 1,
    size: tuple[int, int] | None = None,
    max_size: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    scene_cut: float = 0.15,
    min_motion: float = 0.0,
    val_fraction: float = 0.1,
    max_frames: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Write a Vimeo-layout triplet folder from ``sources`` (see the module docstring)."""
    out_dir = Path(out_dir)
    if not sources:
        raise TripletBuildError("no sources given")
    strides = sorted({stride} if isinstance(stride, int) else set(stride))
    if not strides or strides[0] < 1 or every < 1:
        raise TripletBuildError(f"strides and every must be at least 1, got {stride} and {every}")
    if not 0.0 <= val_fraction < 1.0:
        raise TripletBuildError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if size is not None and max_size is not None:
        raise TripletBuildError("give either size or max_size, not both")
    kinds = [_source_kind(Path(s)) for s in sources]
    if out_dir.exists():
        if not force:
            raise OutputExistsError(f"{out_dir}: already exists (pass --force to overwrite)")
        if out_dir.is_file() or (any(out_dir.iterdir()) and not (out_dir / "tri_trainlist.txt").is_file()):
            raise TripletBuildError(f"{out_dir}: exists and is not a triplet folder; refusing to replace it")
    try:
        work = staging_directory(out_dir)
    except OSError as exc:
        raise TripletBuildError(f"{out_dir}: cannot create it ({exc.strerror or exc})") from None
    report = BuildReport(out_dir)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    entries: dict[str, dict] = {}
    span = 2 * strides[-1]
    try:
        for clip_no, (source, kind) in enumerate(zip(sources, kinds, strict=True), start=1):
            clip = f"{clip_no:05d}"
            frames = [
                _transform(f, crop, size, max_size)
                for f in tqdm(
                    read_frames(source, max_frames),
                    desc=f"decode {Path(source).name}",
                    unit="frame",
                    disable=not progress,
                    leave=False,
                )
            ]
            if len(frames) < span + 1:
                raise TripletBuildError(
                    f"{source}: {len(frames)} frames, too few for one triplet with stride {strides[-1]}"
                )
            train_frames, test_frames = _splits(len(frames), span, val_fraction)
            if val_fraction > 0 and not test_frames:
                raise TripletBuildError(
                    f"{source}: {len(frames)} frames are too few to hold out a validation part; "
                    "lower --val_fraction or --stride, or pass --val_fraction 0"
                )
            stage = work / ".frames" / clip
            stage.mkdir(parents=True)
            written: dict[int, Path] = {}
            count = 0
            starts = []
            for step in strides:
                for part, split in ((train_frames, "train"), (test_frames, "test")):
                    starts += [(s, step, split) for s in range(part.start, part.stop - 2 * step, every)]
            for start, step, split in tqdm(
                starts, desc=f"write {Path(source).name}", unit="triplet", disable=not progress
            ):
                idx = (start, start + step, start + 2 * step)
                trip = [frames[i] for i in idx]
                if max(_difference(trip[0], trip[1]), _difference(trip[1], trip[2])) > scene_cut:
                    report.scene_cuts += 1
                    continue
                if min_motion > 0 and _difference(trip[0], trip[2]) < min_motion:
                    report.static += 1
                    continue
                count += 1
                entry = f"{clip}/{count:04d}"
                folder = work / "sequences" / clip / f"{count:04d}"
                folder.mkdir(parents=True)
                for name, i in zip(("im1.png", "im2.png", "im3.png"), idx, strict=True):
                    if i not in written:
                        written[i] = stage / f"{i:06d}.png"
                        Image.fromarray(frames[i]).save(written[i], compress_level=1)
                    _link(written[i], folder / name)
                lists[split].append(entry)
                entries[entry] = {"split": split, "frames": list(idx)}
            h, w = frames[0].shape[:2]
            report.clips.append(
                {
                    "clip": clip,
                    "source": str(source),
                    "kind": kind,
                    "frames": len(frames),
                    "size": [w, h],
                    "train_frames": [train_frames.start, train_frames.stop],
                    "test_frames": [test_frames.start, test_frames.stop],
                }
            )
        if not lists["train"]:
            raise TripletBuildError("no training triplets were produced (check --scene_cut / --min_motion)")
        if val_fraction > 0 and not lists["test"]:
            raise TripletBuildError("the validation split is empty (check --scene_cut / --min_motion)")
        shutil.rmtree(work / ".frames")
        for split, name in (("train", "tri_trainlist.txt"), ("test", "tri_testlist.txt")):
            (work / name).write_text("".join(f"{e}\n" for e in lists[split]))
        options = {
            "stride": strides[0] if len(strides) == 1 else strides,
            "every": every,
            "size": size,
            "max_size": max_size,
            "crop": crop,
            "scene_cut": scene_cut,
            "min_motion": min_motion,
            "val_fraction": val_fraction,
            "max_frames": max_frames,
        }
        manifest = {"options": options, "clips": report.clips, "entries": entries}
        (work / "triplets.json").write_text(json.dumps(manifest, indent=1))
        publish_directory(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report.train, report.test = len(lists["train"]), len(lists["test"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sources", nargs="+", help="video files (any format PyAV reads) or folders of frames")
    p.add_argument("--out", required=True, help="triplet folder to create")
    p.add_argument(
        "--stride",
        type=parse_strides,
        default=[1],
        help="frame gap inside a triplet, or a comma list of gaps for one set per gap (default 1)",
    )
    p.add_argument("--every", type=int, default=1, help="frames between consecutive triplet starts (default 1)")
    p.add_argument("--size", help="resize every frame to exactly WIDTHxHEIGHT")
    p.add_argument("--max_size", help="shrink frames to fit inside WIDTHxHEIGHT, keeping the aspect ratio")
    p.add_argument("--crop", help="centre-crop WIDTHxHEIGHT source pixels before resizing")
    p.add_argument(
        "--scene_cut",
        type=float,
        default=0.15,
        help="drop triplets whose consecutive frames differ by "
        "more than this mean absolute difference in [0, 1] (default 0.15)",
    )
    p.add_argument(
        "--min_motion", type=float, default=0.0, help="drop triplets whose inputs differ by less (default 0)"
    )
    p.add_argument(
        "--val_fraction",
        type=float,
        default=0.1,
        help="held-out fraction at the end of each clip for tri_testlist.txt (default 0.1)",
    )
    p.add_argument("--max_frames", type=int, help="use at most this many frames of each source")
    p.add_argument("--force", action="store_true", help="replace an existing triplet folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    return run_cli(_run, args, prog="make_triplets")


def _run(args: argparse.Namespace) -> None:
    """Build the triplet folder from parsed arguments and print its summary line."""
    try:
        report = build_triplets(
            args.sources,
            args.out,
            stride=args.stride,
            every=args.every,
            size=parse_size(args.size),
            max_size=parse_size(args.max_size),
            crop=parse_size(args.crop),
            scene_cut=args.scene_cut,
            min_motion=args.min_motion,
            val_fraction=args.val_fraction,
            max_frames=args.max_frames,
            force=args.force,
            progress=not args.quiet,
        )
    except ImportError as exc:
        raise TripletBuildError(f"missing package: {exc}") from None
    print(
        f"{report.out_dir}: {report.train} training and {report.test} test triplets from {len(report.clips)} "
        f"source(s); dropped {report.scene_cuts} across scene cuts, {report.static} static"
    )


if __name__ == "__main__":
    sys.exit(main())
