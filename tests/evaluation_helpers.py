"""Test helpers for the evaluation CLIs: small cropped copies of the published test sets, and an image
reader independent of ``cdfi.io.images``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def crop_copy(src: Path, dst: Path, box: tuple[int, int, int, int]) -> None:
    """Write the ``box`` crop of image ``src`` to ``dst`` (same format, by suffix)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        img.crop(box).save(dst)


def small_published_root(
    data_root: Path, root: Path, box: tuple[int, int, int, int], middlebury: Sequence[str], ucf: Sequence[str]
) -> Path:
    """Cropped copies of the named Middlebury sequences and UCF101-DVF items, in the published layout."""
    for seq in middlebury:
        for rel in (f"input/{seq}/frame10.png", f"input/{seq}/frame11.png", f"gt/{seq}/frame10i11.png"):
            crop_copy(data_root / "middlebury_others" / rel, root / "middlebury_others" / rel, box)
    for n in ucf:
        for name in ("frame_00.png", "frame_02.png", "frame_01_gt.png"):
            crop_copy(data_root / "ucf101_interp_ours" / n / name, root / "ucf101_interp_ours" / n / name, box)
    return root


def read_png(path: Path) -> np.ndarray:
    """Independent reader: PIL to float64 RGB in [0, 1]."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
