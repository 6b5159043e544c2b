"""The work of ``interpolate_video.py``: its parsed flags to ``ConversionOptions``, the checks that need no
model, the model, a progress bar, and the one summary line."""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from cdfi.cli import EXIT_INTERRUPTED, EXIT_OK, UsageError
from cdfi.inference.cli import build_interpolator, checkpoint_path, model_request
from cdfi.inference.video.convert import ConversionOptions, ConversionProgress, prepare_conversion
from cdfi.io.video import FrameNaming, parse_rate


def parse_tolerance(text: str | None) -> Fraction | None:
    """``--time_tolerance``: a fraction of the input frame interval such as ``1/16`` or ``0.05``."""
    if text is None:
        return None
    try:
        return Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise UsageError(
            f"--time_tolerance {text}: expected a fraction of an input frame interval, like 1/16"
        ) from None


def options_from_args(args: argparse.Namespace) -> ConversionOptions:
    """The conversion ``interpolate_video.py``'s flags ask for (rates and tolerances parsed here, so that a
    bad value is one line)."""
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be at least 1, got {args.batch_size}")
    return ConversionOptions(
        factor=args.factor,
        target_fps=parse_rate(args.target_fps, "--target_fps") if args.target_fps is not None else None,
        time_tolerance=parse_tolerance(args.time_tolerance),
        fps=parse_rate(args.fps, "--fps") if args.fps is not None else None,
        input_fps=parse_rate(args.input_fps, "--input_fps") if args.input_fps is not None else None,
        scene_threshold=args.scene_threshold,
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        lossless=args.lossless,
        audio=args.audio,
        naming=FrameNaming(args.img_format, args.zpad, args.index_from),
        gif=args.gif,
        gif_frames=args.gif_frames,
        force=args.force,
    )


def convert_from_args(args: argparse.Namespace) -> int:
    """Check everything cheap (flags, input, output, codec, resume state, model flags, checkpoint), load the
    model, convert with a progress bar and print the summary; returns the exit status (130 after Ctrl-C,
    with one line saying what became of the output)."""
    options = options_from_args(args)
    model_request(args)
    checkpoint = checkpoint_path(args)
    options.checkpoint = str(checkpoint.resolve())
    conversion = prepare_conversion(
        args.input_video, args.output_video, options, ensemble=args.ensemble, prealign=args.prealign
    )
    interp = build_interpolator(args, checkpoint, args.batch_size)
    bar = tqdm(total=conversion.total, unit="frame", disable=args.no_progress, dynamic_ncols=True, file=sys.stderr)

    def progress(p: ConversionProgress) -> None:
        bar.update(p.frames - bar.n)

    try:
        result = conversion.run(interp, progress)
    except KeyboardInterrupt:
        bar.close()
        print(conversion.interrupted_message, file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    gif = conversion.options.gif
    preview = f"; preview {Path(gif).resolve()}" if gif else ""
    print(result.summary() + preview)
    return EXIT_OK


__all__ = ["convert_from_args", "options_from_args", "parse_tolerance"]
