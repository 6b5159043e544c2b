"""Video conversion: any output frame rate by bisection of the model's midpoints, the input's audio and
subtitles kept, and the video codecs of ``cdfi.io.video``.

>>> interp = Interpolator.from_checkpoint("checkpoints/cdfi_adacof_ours.pth")
>>> result = convert_video(interp, "clip.mp4", "clip_60.mp4", ConversionOptions(target_fps=Fraction(60)))
>>> print(result.summary())
"""

from cdfi.inference.video.convert import (
    DEFAULT_INPUT_FPS,
    DEFAULT_TOLERANCE,
    Conversion,
    ConversionOptions,
    ConversionProgress,
    ConversionResult,
    convert_video,
    prepare_conversion,
)
from cdfi.inference.video.timing import Node, Placement, Timeline, count_calls, place

__all__ = [
    "DEFAULT_INPUT_FPS",
    "DEFAULT_TOLERANCE",
    "Conversion",
    "ConversionOptions",
    "ConversionProgress",
    "ConversionResult",
    "Node",
    "Placement",
    "Timeline",
    "convert_video",
    "count_calls",
    "place",
    "prepare_conversion",
]
