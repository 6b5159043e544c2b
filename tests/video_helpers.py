"""Test helper: write frames as a lossless video, so decoding gives back exactly the frames written."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


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
