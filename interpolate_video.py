"""Video interpolation: any output frame rate, slow motion by 2^k, the sound kept, lossless and pro codecs.

Examples:
    python interpolate_video.py --input clip.mp4 --target_fps 60 --output clip_60.mp4
    python interpolate_video.py --input clip.mp4 --factor 8 --output clip_x8.mp4 --gif preview.gif
    python interpolate_video.py --input clip.mov --factor 2 --codec prores --output clip_x2.mov
    python interpolate_video.py --input clip.mp4 --factor 4 --fps 25 --audio stretch --output slow.mp4
    python interpolate_video.py --gpu_id 0 --input_video imgs/img_seq/ --output_video ./interpolated_video

The last is the published command: a frame folder doubled into a folder, frames named as the published
script names them. The work is ``cdfi.inference.video`` (see docs/inference.md); this file only parses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

try:  # Ctrl-C while PyTorch loads (a second or two): one line, not a traceback
    from cdfi.cli import run_cli
    from cdfi.inference.cli import add_model_arguments
    from cdfi.inference.video.audio import AUDIO_MODES
    from cdfi.inference.video.cli import convert_from_args
    from cdfi.io.video import CODECS
except KeyboardInterrupt:
    print("interrupted; nothing was written", file=sys.stderr)
    sys.exit(130)

FACTORS = (2, 4, 8, 16, 32)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Video interpolation: any frame rate (--target_fps) or slow motion by 2^k (--factor)."
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input_video",
        "--input",
        dest="input_video",
        required=True,
        help="a video file, or a folder of frames (the published layout <index_from>, <index_from + 1>, ... "
        "when it holds one, else all its images in natural order)",
    )
    io.add_argument(
        "--output_video",
        "--output",
        dest="output_video",
        default=None,
        help="a video file (.mp4, .mkv, .mov, .avi, .m4v, .webm) or a folder of frames; default "
        "<input name>_x<factor> or _<rate>fps in the current folder, with the codec's suffix",
    )
    io.add_argument(
        "--input_fps",
        default=None,
        help="frame rate of the input: a frame folder's (default 25); for a video, replaces its own",
    )
    io.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing output video or GIF, or restart a frame folder from scratch",
    )
    io.add_argument("--no_progress", action="store_true", help="no progress bar")

    names = p.add_argument_group(
        "frame names (published flags)",
        "An output folder's frames are named <index_from + i>, zero-padded to --zpad digits, with the "
        "--img_format suffix. A folder input holding <index_from> in that naming is read as the published "
        "script reads it: the consecutive numbers from there.",
    )
    names.add_argument(
        "--img_format",
        default=None,
        help="suffix of the frames (default: the input frames' own, .png for a video input)",
    )
    names.add_argument("--zpad", type=int, default=None, help="digits of frame numbers (default 5)")
    names.add_argument("--index_from", type=int, default=None, help="number of the first frame (default 0)")

    rate = p.add_argument_group("frame rate")
    rate.add_argument(
        "--factor",
        type=int,
        choices=FACTORS,
        default=None,
        help="multiply the frame rate by 2, 4, ... 32 with exact midpoints (default 2 unless --target_fps)",
    )
    rate.add_argument(
        "--target_fps",
        default=None,
        help="any output rate: 60, 50, 25, 60000/1001 or 59.94 (29.97, 59.94, 23.976 mean the NTSC rates "
        "N x 1000/1001); each output frame is placed between its two inputs by bisection",
    )
    rate.add_argument(
        "--time_tolerance",
        default=None,
        help="largest timing error of a --target_fps frame, as a fraction of the input frame interval "
        "(default 1/16; smaller costs more model calls)",
    )
    rate.add_argument(
        "--fps",
        default=None,
        help="play the frames back at this rate (default: the rate they are made at); lower gives slow motion",
    )
    rate.add_argument(
        "--scene_threshold",
        type=float,
        default=None,
        help="treat a pair as a scene cut when the mean absolute difference of the two frames (0-255 scale) "
        "exceeds this, and copy the nearer frame instead of interpolating (default: off)",
    )

    enc = p.add_argument_group("encoding")
    enc.add_argument(
        "--codec",
        choices=list(CODECS),
        default=None,
        help="h264 (default for video names), h265, vp9, av1 (SVT-AV1), ffv1 (lossless), prores "
        "(prores_ks, 4:2:2 10-bit), png (a folder of frames); each is checked against this PyAV first",
    )
    enc.add_argument(
        "--crf", type=int, default=None, help="quality where the codec has it, lower is better (h264 default 18)"
    )
    enc.add_argument(
        "--preset",
        default=None,
        help="speed preset (h264/h265: ultrafast ... veryslow, default medium; vp9 cpu-used 0-8, default 4; "
        "av1 0-13, default 8) or the ProRes profile (proxy, lt, standard, hq, 4444, 4444xq)",
    )
    enc.add_argument(
        "--lossless", action="store_true", help="the codec's lossless mode (h264, h265, vp9, av1; ffv1/png always)"
    )
    enc.add_argument(
        "--audio",
        choices=AUDIO_MODES,
        default="auto",
        help="auto: keep the sound when the duration is kept, else leave it out (one line); stretch: also keep "
        "it in slow motion, slowed at the same pitch; none: leave it out",
    )
    enc.add_argument("--gif", default=None, help="also write a short GIF preview of the output here")
    enc.add_argument("--gif_frames", type=int, default=96, help="frames in the GIF preview (default 96)")
    enc.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="pairs per model call (more is faster on GPUs and needs more memory; default 1)",
    )
    add_model_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 bad input, 1 failure while working, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    return run_cli(convert_from_args, args, status=lambda rc: rc)


if __name__ == "__main__":
    sys.exit(main())
