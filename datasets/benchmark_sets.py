"""The published evaluation sets as lists of triplets: Middlebury "other", UCF101-DVF, Vimeo-90K test.

One implementation used by ``test.py``, ``test_compressed_adacof.py`` and training's per-epoch
validation. Readers only list paths; images are opened (and bad ones reported) by the evaluation loop.
The published item lists are fixed, so a partial copy of a set shows its missing items instead of
silently evaluating fewer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

from cdfi.io.paths import resolve_data_root

__all__ = [
    "BENCHMARK_SETS",
    "MIDDLEBURY_SEQUENCES",
    "UCF101_FOLDERS",
    "BenchmarkItem",
    "BenchmarkSet",
    "DatasetNotFoundError",
    "load_benchmark_set",
    "middlebury_items",
    "published_vimeo_augment",
    "ucf101_items",
    "vimeo_test_items",
]

MIDDLEBURY_DIR = "middlebury_others"
UCF101_DIR = "ucf101_interp_ours"
MIDDLEBURY_SEQUENCES = (
    "Beanbags",
    "Dimetrodon",
    "DogDance",
    "Grove2",
    "Grove3",
    "Hydrangea",
    "MiniCooper",
    "RubberWhale",
    "Urban2",
    "Urban3",
    "Venus",
    "Walking",
)
UCF101_FOLDERS = tuple(str(n) for n in range(1, 3782, 10))


class DatasetNotFoundError(ValueError):
    """A benchmark set's folder (or list file) is missing; the message says where it was expected."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One test triplet: inputs ``frame0``/``frame2`` and ground truth ``gt`` for the middle frame.

    ``name`` is the item's relative folder inside its set (e.g. ``Beanbags``, ``1``, ``00001/0389``),
    reused as the output folder; ``output_name`` is the file name of the written prediction.
    ``hflip``/``vflip`` mirror all three frames when they are read and ``reversed`` records that
    ``frame0`` and ``frame2`` were exchanged: the published Vimeo-90K reader's augmentation
    (``published_vimeo_augment``); all false for every set as listed.
    """

    name: str
    frame0: Path
    frame2: Path
    gt: Path
    output_name: str
    hflip: bool = False
    vflip: bool = False
    reversed: bool = False

    def views(self) -> list[str]:
        """The augmentations applied to this item, by name (empty for the item as listed)."""
        return [name for name in ("hflip", "vflip", "reversed") if getattr(self, name)]


@dataclass(frozen=True)
class BenchmarkSet:
    """A named list of items; ``folder`` is the set's output folder name."""

    key: str
    folder: str
    items: tuple[BenchmarkItem, ...]


def _require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DatasetNotFoundError(f"{path}: {what} folder not found ({hint})")
    return path


def middlebury_items(data_root: str | Path) -> list[BenchmarkItem]:
    """The 12 Middlebury "other" sequences.

    Layout: ``input/<seq>/frame10.png``, ``input/<seq>/frame11.png``, ``gt/<seq>/frame10i11.png``.
    """
    root = _require_dir(
        Path(data_root) / MIDDLEBURY_DIR, "Middlebury 'other'", "run test_data/download.py or pass --data_root"
    )
    return [
        BenchmarkItem(
            seq,
            root / "input" / seq / "frame10.png",
            root / "input" / seq / "frame11.png",
            root / "gt" / seq / "frame10i11.png",
            "frame10i11.png",
        )
        for seq in MIDDLEBURY_SEQUENCES
    ]


def ucf101_items(data_root: str | Path) -> list[BenchmarkItem]:
    """The 379 UCF101-DVF triplets ``<n>/frame_00.png``, ``frame_02.png``, ``frame_01_gt.png``, n = 1, 11, .., 3781."""
    root = _require_dir(Path(data_root) / UCF101_DIR, "UCF101-DVF", "run test_data/download.py or pass --data_root")
    return [
        BenchmarkItem(
            n, root / n / "frame_00.png", root / n / "frame_02.png", root / n / "frame_01_gt.png", "frame_01.png"
        )
        for n in UCF101_FOLDERS
    ]


def vimeo_test_items(vimeo_dir: str | Path) -> list[BenchmarkItem]:
    """Vimeo-90K triplet test split: ``tri_testlist.txt`` entries, ``sequences/<entry>/im1|im2|im3.png``."""
    root = _require_dir(Path(vimeo_dir), "Vimeo-90K triplet", "--vimeo_dir must hold tri_testlist.txt and sequences/")
    listing = root / "tri_testlist.txt"
    if not listing.is_file():
        raise DatasetNotFoundError(f"{listing}: Vimeo-90K test list not found")
    try:
        entries = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetNotFoundError(f"{listing}: cannot read Vimeo-90K test list ({exc})") from None
    items = []
    for entry in entries:
        folder = root / "sequences" / entry
        items.append(BenchmarkItem(entry, folder / "im1.png", folder / "im3.png", folder / "im2.png", "im2.png"))
    return items


def published_vimeo_augment(bench: BenchmarkSet, seed: int) -> BenchmarkSet:
    """``bench`` as the published Vimeo-90K reader serves it: per item, in list order, three fair coin
    draws from ``random.Random(seed)``: mirror left-right, mirror top-bottom, exchange the two inputs.

    The published evaluation reads the test split through its training reader, whose spatial and
    temporal augmentations are on by default, so its scores include these random views. Its draws come
    from unseeded DataLoader workers (and its list is shuffled first), so the exact views cannot be
    reproduced; the draws here follow the same order per item, seeded to be repeatable.
    """
    rng = random.Random(seed)
    items = []
    for item in bench.items:
        hflip = bool(rng.randint(0, 1))
        vflip = bool(rng.randint(0, 1))
        swap = bool(rng.randint(0, 1))
        frame0, frame2 = (item.frame2, item.frame0) if swap else (item.frame0, item.frame2)
        items.append(replace(item, frame0=frame0, frame2=frame2, hflip=hflip, vflip=vflip, reversed=swap))
    return replace(bench, items=tuple(items))


BENCHMARK_SETS = {"middlebury": MIDDLEBURY_DIR, "ucf101": UCF101_DIR, "vimeo90k": "vimeo90k_test"}


def load_benchmark_set(
    key: str, data_root: str | Path | None = None, vimeo_dir: str | Path | None = None
) -> BenchmarkSet:
    """The set called ``key`` (``middlebury``, ``ucf101``, ``vimeo90k``).

    Middlebury and UCF101 live under ``data_root`` (default: ``resolve_data_root``); Vimeo-90K needs
    ``vimeo_dir``.
    """
    if key == "middlebury":
        items = middlebury_items(resolve_data_root(data_root))
    elif key == "ucf101":
        items = ucf101_items(resolve_data_root(data_root))
    elif key == "vimeo90k":
        if vimeo_dir is None:
            raise DatasetNotFoundError("Vimeo-90K test split: no folder given (pass --vimeo_dir)")
        items = vimeo_test_items(vimeo_dir)
    else:
        raise DatasetNotFoundError(f"unknown benchmark set {key!r}; choose from {', '.join(BENCHMARK_SETS)}")
    return BenchmarkSet(key, BENCHMARK_SETS[key], tuple(items))
