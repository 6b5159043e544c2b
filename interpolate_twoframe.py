"""Interpolate the frame half-way between two frames (published flags and defaults).

Example: python interpolate_twoframe.py --first_frame a.png --second_frame b.png --output_frame mid.png

With no arguments it interpolates the bundled example pair (examples/0.png, examples/1.png; Big Buck
Bunny, CC-BY 3.0) into output.png; this is what ``make demo`` runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cdfi.inference.cli import add_model_arguments, build_interpolator, checkpoint_path
from cdfi.inference.interpolator import check_pair
from cdfi.io.atomic import ensure_writable
from cdfi.io.images import IMAGE_SUFFIXES, read_image, write_image
from cdfi.io.paths import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Two-frame interpolation: the frame half-way between two frames.")
    p.add_argument("--first_frame", default=str(EXAMPLES / "0.png"), help="first frame (default: examples/0.png)")
    p.add_argument("--second_frame", default=str(EXAMPLES / "1.png"), help="second frame (default: examples/1.png)")
    p.add_argument("--output_frame", default="output.png", help="where to write the middle frame (default: output.png)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output_frame")
    add_model_arguments(p)
    return p


def run(args: argparse.Namespace) -> Path:
    """Check everything cheap first (output and that its folder is writable, inputs, checkpoint), then load
    the model and interpolate; the output is written atomically."""
    out = Path(args.output_frame)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{out}: unsupported image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    ensure_writable(out, args.force)
    frame0, frame1 = read_image(args.first_frame), read_image(args.second_frame)
    try:
        check_pair(frame0, frame1)
    except ValueError as exc:
        raise ValueError(f"{args.first_frame}, {args.second_frame}: {exc}") from None
    interp = build_interpolator(args, checkpoint_path(args))
    start = time.perf_counter()
    middle = interp.interpolate(frame0, frame1)
    seconds = time.perf_counter() - start
    write_image(out, middle, force=args.force)
    h, w = middle.shape[-2:]
    print(f"wrote {out.resolve()} ({w}x{h}, {seconds:.2f} s)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 with a one-line message for bad input, 130 if interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {args.output_frame} was not written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
