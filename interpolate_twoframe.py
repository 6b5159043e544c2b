"""Interpolate the frame half-way between two frames (every flag of the published script, same meaning).

Example (the published README's command; on a machine without CUDA it says so in one line and runs on
the CPU): python interpolate_twoframe.py --gpu_id 0 --first_frame imgs/0.png --second_frame imgs/1.png
--output_frame ./output.png

With no arguments it interpolates the bundled example pair (examples/0.png, examples/1.png; Big Buck
Bunny, CC-BY 3.0) into output.png; this is what ``make demo`` runs. AdaCoF-pytorch checkpoints load with
``--config path/to/config.txt`` (its ``ckpt.pth`` beside it, or ``--checkpoint``).

Exit status: 0 done, 2 bad arguments or input (nothing written), 1 a failure while working (e.g. the
output cannot be written), 130 interrupted (the output is not written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

try:  # Ctrl-C while PyTorch loads (a second or two): one line, not a traceback
    from cdfi.cli import run_cli
    from cdfi.inference.cli import add_model_arguments, interpolate_two_frames
    from cdfi.io.paths import REPO_ROOT
except KeyboardInterrupt:
    print("interrupted; nothing was written", file=sys.stderr)
    sys.exit(130)

EXAMPLES = REPO_ROOT / "examples"


def build_parser() -> argparse.ArgumentParser:
    """The published flags (``--first_frame``, ``--second_frame``, ``--output_frame``, ``--gpu_id``,
    ``--checkpoint``, ``--kernel_size``, ``--dilation``), AdaCoF-pytorch's ``--model``/``--config``, and ours."""
    p = argparse.ArgumentParser(description="Two-frame interpolation: the frame half-way between two frames.")
    p.add_argument("--first_frame", default=str(EXAMPLES / "0.png"), help="first frame (default: examples/0.png)")
    p.add_argument("--second_frame", default=str(EXAMPLES / "1.png"), help="second frame (default: examples/1.png)")
    p.add_argument("--output_frame", default="output.png", help="where to write the middle frame (default: output.png)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output_frame")
    add_model_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    return run_cli(interpolate_two_frames, args, on_interrupt=f"interrupted; {args.output_frame} was not written")


if __name__ == "__main__":
    sys.exit(main())
