"""Slow motion: raise a video's frame rate by 2, 4, 8, 16 or 32 with recursive midpoint interpolation.

Examples:
    python interpolate_video.py --input_video clip.mp4 --factor 8 --output_video clip_x8.mp4
    python interpolate_video.py --input_video frames/ --factor 4 --output_video out_frames/ --gif preview.gif

Input: a video file (any format PyAV decodes) or a folder of frames (any names, natural order).
Output: an H.264 video (.mp4/.mkv/.mov/.avi/.m4v) at the input rate times the factor (or ``--fps``),
or a folder of numbered frames; an interrupted folder output resumes when the command is rerun.
Every output location (video, folder, ``--gif``) is checked to be writable before any work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cdfi.inference.cli import add_model_arguments, build_interpolator, checkpoint_path
from cdfi.inference.interpolator import Interpolator, check_pair
from cdfi.io.atomic import OutputWriteError, ensure_writable
from cdfi.io.images import IMAGE_SUFFIXES, read_image
from cdfi.io.video import FolderWriter, FrameSource, GifPreview, VideoError, VideoWriter, open_source, output_kind

FACTORS = (2, 4, 8, 16, 32)
DEFAULT_INPUT_FPS = Fraction(25)


def fps_arg(text: str) -> Fraction:
    """A frame rate such as ``60``, ``59.94`` or ``30000/1001``."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a frame rate like 60, 59.94 or 30000/1001, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"frame rate must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Video interpolation (slow motion) by a factor 2^k.")
    p.add_argument(
        "--input_video",
        "--input",
        dest="input_video",
        required=True,
        help="video file, or a folder of frames (any naming, sorted naturally)",
    )
    p.add_argument(
        "--output_video",
        "--output",
        dest="output_video",
        default=None,
        help="output video (.mp4, .mkv, .mov, .avi, .m4v: H.264) or a folder of frames "
        "(default: <input name>_x<factor>.mp4 in the current folder)",
    )
    p.add_argument("--factor", type=int, choices=FACTORS, default=2, help="frame-rate multiplier (default 2)")
    p.add_argument("--fps", type=fps_arg, default=None, help="output frame rate (default: input rate times --factor)")
    p.add_argument(
        "--input_fps",
        type=fps_arg,
        default=None,
        help=f"frame rate of a frame-folder input (default {DEFAULT_INPUT_FPS})",
    )
    p.add_argument(
        "--scene_threshold",
        type=float,
        default=None,
        help="treat a pair as a scene cut when the mean absolute difference of the two frames "
        "(0-255 scale) exceeds this, and copy frames instead of interpolating (default: off)",
    )
    p.add_argument("--gif", default=None, help="also write a short GIF preview of the output here")
    p.add_argument("--gif_frames", type=int, default=96, help="frames in the GIF preview (default 96)")
    p.add_argument("--img_format", default=".png", help="suffix of output frames in a folder (default .png)")
    p.add_argument("--zpad", type=int, default=5, help="digits of output frame numbers (default 5)")
    p.add_argument("--index_from", type=int, default=0, help="number of the first output frame (default 0)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 (lossless) to 51 (default 18)")
    p.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="pairs per model call (more is faster on GPUs and needs more memory; default 1)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing output video or GIF, or restart a frame folder from scratch",
    )
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_model_arguments(p)
    return p


def _validate(args: argparse.Namespace) -> None:
    if args.scene_threshold is not None and args.scene_threshold < 0:
        raise ValueError(f"--scene_threshold must be >= 0, got {args.scene_threshold}")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.gif_frames < 2:
        raise ValueError(f"--gif_frames must be at least 2, got {args.gif_frames}")
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be between 0 and 51, got {args.crf}")
    if not args.img_format.startswith("."):
        args.img_format = "." + args.img_format
    if args.img_format.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--img_format {args.img_format}: use one of {', '.join(IMAGE_SUFFIXES)}")
    if args.zpad < 1 or args.index_from < 0:
        raise ValueError("--zpad must be >= 1 and --index_from >= 0")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line that tells the user what became of the output."""


def default_output(input_video: str | Path, factor: int) -> Path:
    """``<input name>_x<factor>.mp4`` in the current folder; a file's name keeps every dot but its suffix
    (``my.clip.v2.mp4`` gives ``my.clip.v2_x2.mp4``), a folder's name is kept whole."""
    path = Path(input_video).resolve()
    stem = path.name if path.is_dir() else path.stem
    return Path(f"{stem or 'output'}_x{factor}.mp4")


def check_frame_size(source: FrameSource) -> None:
    """Refuse frames too small for the model before loading it; the message names the input."""
    probe = torch.empty(3, source.height, source.width, device="meta")
    try:
        check_pair(probe, probe)
    except ValueError as exc:
        raise VideoError(f"{source.path}: {exc}") from None


class Sink:
    """Where output frame i goes: a video (in order, from scratch) or a folder (any order, resumable)."""

    def __init__(self, video: VideoWriter | None, folder: FolderWriter | None, preview: GifPreview | None) -> None:
        self.video, self.folder, self.preview = video, folder, preview
        self.count = 0

    def done(self, index: int) -> bool:
        return self.folder is not None and self.folder.exists(index)

    def put(self, index: int, frame: torch.Tensor) -> None:
        if self.preview is not None and index < self.preview.max_frames:
            self.preview.add(frame)
        if self.video is not None:
            self.video.write(frame)
        elif not self.done(index):
            self.folder.write(index, frame)  # type: ignore[union-attr]
        self.count += 1

    def skip(self, index: int) -> None:
        """Frame already on disk (resume): only the preview may need it."""
        if self.preview is not None and index < self.preview.max_frames:
            self.preview.add(read_image(self.folder.name(index)))  # type: ignore[union-attr]
        self.count += 1


def _lazy_frames(source: FrameSource) -> Iterator[Callable[[], torch.Tensor]]:
    """Frame loaders: folder frames are read only when called (so resumed segments cost nothing)."""
    if source.is_folder:
        for i in range(len(source.files)):
            yield lambda i=i: source.frame(i)
    else:
        for frame in source.frames():
            yield lambda frame=frame: frame


def interpolate_stream(
    interp: Interpolator, source: FrameSource, sink: Sink, factor: int, scene_threshold: float | None, bar: tqdm
) -> tuple[int, int]:
    """Drive the interpolation segment by segment (input frame i and the new frames after it);
    returns (input frames, scene cuts). Segments already complete on disk are skipped unread."""
    loaders = _lazy_frames(source)
    load_prev = next(loaders)
    prev: torch.Tensor | None = None
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    n_inputs, cuts = 1, 0

    def flush() -> None:
        nonlocal cuts
        if not pending:
            return
        pairs = [(a, b) for _, a, b in pending]
        cuts += sum(interp.is_cut(a, b, scene_threshold) for a, b in pairs)
        if len(pending) == 1:
            mids_list: list[Any] = [interp.iter_intermediates(*pairs[0], factor, scene_threshold)]
        else:
            mids_list = interp.intermediates_batch(pairs, factor, scene_threshold)
        for (seg, a, _), mids in zip(pending, mids_list, strict=True):
            sink.put(seg * factor, a)
            bar.update(1)
            for j, mid in enumerate(mids, start=1):
                sink.put(seg * factor + j, mid)
                bar.update(1)
        pending.clear()

    for seg, load_cur in enumerate(loaders):
        n_inputs += 1
        indices = range(seg * factor, (seg + 1) * factor)
        if all(sink.done(i) for i in indices):
            for i in indices:
                sink.skip(i)
            prev = None
        else:
            a = prev if prev is not None else load_prev()
            b = load_cur()
            if a.shape != b.shape:
                name = source.files[seg + 1] if source.is_folder else f"{source.path} frame {seg + 1}"
                raise VideoError(f"{name}: size {b.shape[-1]}x{b.shape[-2]} differs from {a.shape[-1]}x{a.shape[-2]}")
            pending.append((seg, a, b))
            prev = b
            if len(pending) >= interp.batch_size:
                flush()
        load_prev = load_cur
    flush()
    last = (n_inputs - 1) * factor
    if sink.done(last):
        sink.skip(last)
    else:
        sink.put(last, prev if prev is not None else load_prev())
        bar.update(1)
    return n_inputs, cuts


def run(args: argparse.Namespace) -> int:
    """Validate everything cheap (inputs, outputs, checkpoint, device), then interpolate."""
    _validate(args)
    source = open_source(args.input_video)
    check_frame_size(source)
    out = Path(args.output_video) if args.output_video else default_output(args.input_video, args.factor)
    kind = output_kind(out)
    checkpoint = checkpoint_path(args)
    in_fps = source.fps or args.input_fps or DEFAULT_INPUT_FPS
    if source.fps is None and args.input_fps is None:
        print(f"note: {source.path} has no frame rate; assuming {in_fps} fps (see --input_fps)", file=sys.stderr)
    out_fps = args.fps or in_fps * args.factor
    video = folder = None
    mode = "new"
    if kind == "video":
        ensure_writable(out, args.force)
        video = VideoWriter(out, out_fps, force=args.force, crf=args.crf)
    else:
        settings = {
            "input": str(Path(args.input_video).resolve()),
            "factor": args.factor,
            "checkpoint": str(checkpoint.resolve()),
            "scene_threshold": args.scene_threshold,
            "fps": str(out_fps),
        }
        # recorded only when used, so that folders written before these flags still resume
        if args.ensemble > 1:
            settings["ensemble"] = args.ensemble
        if args.prealign:
            settings["prealign"] = True
        folder = FolderWriter(out, settings, args.img_format, args.zpad, args.index_from)
        mode = folder.check(args.force)
    preview = None
    if args.gif:
        ensure_writable(args.gif, args.force)
        preview = GifPreview(args.gif, out_fps, max_frames=args.gif_frames)
    if (source.width % 2 or source.height % 2) and kind == "video":
        print(
            f"note: {source.width}x{source.height} is odd; H.264 needs even sizes, so the last row/column is repeated",
            file=sys.stderr,
        )
    interp = build_interpolator(args, checkpoint, args.batch_size)
    total = (source.count - 1) * args.factor + 1 if source.count else None
    sink = Sink(video, folder, preview)
    if folder is not None:
        folder.start(mode)
        if mode == "resume":
            print(f"resuming {out}: frames already written are skipped", file=sys.stderr)
    start = time.perf_counter()
    bar = tqdm(total=total, unit="frame", disable=args.no_progress, dynamic_ncols=True, file=sys.stderr)
    try:
        if video is not None:
            with video:
                n_inputs, cuts = interpolate_stream(interp, source, sink, args.factor, args.scene_threshold, bar)
        else:
            n_inputs, cuts = interpolate_stream(interp, source, sink, args.factor, args.scene_threshold, bar)
    except (ValueError, OSError):
        if folder is not None and mode != "resume":
            folder.discard()
        raise
    except KeyboardInterrupt:
        if folder is not None:
            raise Interrupted(f"interrupted; rerun the same command to resume {out}") from None
        raise Interrupted(f"interrupted; {out} was not written") from None
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if preview is not None:
        try:
            preview.save(args.force)
        except OSError as exc:
            raise OutputWriteError(f"{exc}; the output {out} was written") from exc
    what = f"{sink.count} frames" + (f", {cuts} scene cut(s) copied" if cuts else "")
    print(
        f"wrote {out.resolve()} ({what} from {n_inputs} inputs, {source.width}x{source.height}, "
        f"{float(out_fps):g} fps, {seconds:.1f} s)" + (f"; preview {Path(args.gif).resolve()}" if preview else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 with a one-line message for bad input, 130 if interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(str(exc) if isinstance(exc, Interrupted) else "interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
