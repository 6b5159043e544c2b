"""Test helpers for the training tests: tiny Vimeo-layout sets of a moving texture and the train.py
flags every test run shares."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 48, 32
LOSS = "1*Charb+0.01*g_Spatial+0.005*g_Occlusion"


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((small.shape[1] * 4, small.shape[0] * 4), Image.BICUBIC))


def make_set(root: Path, count: int = 4, w: int = W, h: int = H, shift: int = 1, test: int = 0) -> Path:
    """``count`` training (+ ``test`` test) triplets of textures moving ``shift`` px left per frame."""
    rng = np.random.default_rng(7)
    entries = []
    for i in range(count + test):
        tex = _texture(rng, w + 4 * shift + 4, h + 4)
        entry = f"00001/{i + 1:04d}"
        folder = root / "sequences" / entry
        folder.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.ascontiguousarray(tex[2 : 2 + h, k * shift : k * shift + w])).save(
                folder / f"im{k + 1}.png"
            )
        entries.append(entry)
    (root / "tri_trainlist.txt").write_text("".join(f"{e}\n" for e in entries[:count]))
    (root / "tri_testlist.txt").write_text("".join(f"{e}\n" for e in entries[count:]))
    return root


def make_middlebury(root: Path, count: int = 2) -> tuple[Path, Path]:
    """A Middlebury-layout input and ground-truth folder of ``count`` moving-texture sequences."""
    mb = make_set(root / "triplets", count=0, test=count)
    inp, gt = root / "input", root / "gt"
    for i in range(count):
        src = mb / "sequences" / f"00001/{i + 1:04d}"
        (inp / f"seq{i}").mkdir(parents=True)
        (gt / f"seq{i}").mkdir(parents=True)
        (src / "im1.png").rename(inp / f"seq{i}" / "frame10.png")
        (src / "im3.png").rename(inp / f"seq{i}" / "frame11.png")
        (src / "im2.png").rename(gt / f"seq{i}" / "frame10i11.png")
    return inp, gt


def cli_args(tmp_path: Path, data: Path | None = None, uid: str = "run") -> list[str]:
    """The train.py flags every test run shares: a tiny compressed AdaCoF, no Middlebury, no progress bars."""
    return [
        "--data_dir",
        str(data or tmp_path / "data"),
        "--out_root",
        str(tmp_path / "mw"),
        "--uid",
        uid,
        "--workers",
        "0",
        "--quiet",
        "--test_every",
        "0",
        "--loss",
        LOSS,
        "--model",
        "compressed_adacof",
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
