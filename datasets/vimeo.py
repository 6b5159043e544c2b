"""Vimeo-90K-layout triplet data set for training, with the published augmentations.

Layout: ``<root>/tri_trainlist.txt`` (or ``tri_testlist.txt``) lists entries ``xxxxx/xxxx``, each a
folder ``<root>/sequences/xxxxx/xxxx/`` holding ``im1.png im2.png im3.png``. Items are
``(frame0, frame1, frame2)`` float tensors (3, H, W) in [0, 1], ``frame1`` being the ground truth.

Augmentations (published recipe): horizontal flip, vertical flip and temporal swap of the two inputs,
each with probability 0.5; optionally a random crop (``crop``; AdaCoF-pytorch's ``--patch_size``).
``count`` keeps a seeded random subset of the list (the published ``--num_training_samples``).
Options for small budgets (issue 11): ``motion_crop`` (probability of choosing, among
``motion_candidates`` random crop positions, the one where the two inputs differ most; part of
``--recipe small``) and ``synthetic`` (probability of replacing an item by a synthetic triplet made from
its middle frame with a known sub-pixel translation, rotation and zoom; experimental).

Unlike the published reader, every non-blank line of the list is an entry (the published one drops the
last line of the file whatever it holds) and the order is not shuffled here (the sampler does that).

Randomness is drawn from a generator seeded by ``(seed, epoch, index)``, so an item is the same
whatever the worker or process that loads it; this makes ``--resume`` and DDP runs reproducible.
Call ``set_epoch`` at the start of every epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from cdfi.io.images import ImageError, read_image

__all__ = [
    "LIST_FILES",
    "TripletListError",
    "VimeoTriplets",
    "read_triplet_list",
    "synthetic_triplet",
]

LIST_FILES = {"train": "tri_trainlist.txt", "test": "tri_testlist.txt"}
FRAME_NAMES = ("im1.png", "im2.png", "im3.png")


class TripletListError(ValueError):
    """A missing or malformed list file, an entry without its images, or unusable frame sizes."""


def read_triplet_list(root: str | Path, split: str = "train") -> list[str]:
    """Entries of ``tri_<split>list.txt`` (blank lines skipped), or a one-line error."""
    if split not in LIST_FILES:
        raise TripletListError(f"unknown split {split!r}; expected one of {', '.join(LIST_FILES)}")
    root = Path(root)
    if not root.is_dir():
        raise TripletListError(f"{root}: triplet folder not found")
    path = root / LIST_FILES[split]
    if not path.is_file():
        raise TripletListError(f"{path}: list file not found (expected a Vimeo-90K triplet folder)")
    entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not entries:
        raise TripletListError(f"{path}: list file is empty")
    return entries


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except OSError as exc:
        raise TripletListError(f"{path}: not a readable image ({exc})") from None


def synthetic_triplet(
    image: torch.Tensor,
    rng: np.random.Generator,
    max_shift: float = 4.0,
    max_angle: float = 2.0,
    max_zoom: float = 0.03,
) -> tuple[torch.Tensor, ...]:
    """Three frames of ``image`` (3, H, W) under linear motion with known parameters.

    The motion from frame0 to frame2 is a translation of up to ``max_shift`` px per axis, a rotation of
    up to ``max_angle`` degrees and a zoom of up to ``max_zoom``; frame1 sits exactly half-way in time
    (half the translation, half the angle, the geometric mean of the zoom). All three frames are
    resampled (bilinearly, border padding) around a common random sub-pixel base position, so the
    ground truth is not sharper than the inputs.
    """
    _, h, w = image.shape
    shift = rng.uniform(-max_shift, max_shift, size=2)
    angle = math.radians(rng.uniform(-max_angle, max_angle))
    log_zoom = math.log(1.0 + rng.uniform(-max_zoom, max_zoom))
    base = rng.uniform(-0.5, 0.5, size=2)
    thetas = []
    for t in (-0.5, 0.0, 0.5):
        a, z = angle * t, math.exp(log_zoom * t)
        # Output pixel p samples the image at R(a) p / z + base + t * shift (in pixel units, centred).
        cos, sin = math.cos(a) / z, math.sin(a) / z
        tx, ty = base[0] + t * shift[0], base[1] + t * shift[1]
        thetas.append([[cos, -sin * h / w, 2 * tx / w], [sin * w / h, cos, 2 * ty / h]])
    theta = torch.tensor(thetas, dtype=torch.float32)
    grid = F.affine_grid(theta, [3, 3, h, w], align_corners=False)
    frames = F.grid_sample(
        image.expand(3, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return frames[0], frames[1], frames[2]


class VimeoTriplets(Dataset):
    """Vimeo-90K-layout triplets with the published augmentations (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        crop: int | tuple[int, int] | None = None,
        augment: bool = True,
        seed: int = 0,
        motion_crop: float = 0.0,
        motion_candidates: int = 8,
        synthetic: float = 0.0,
        synthetic_shift: float = 4.0,
        check_sizes: bool = True,
        count: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.entries = read_triplet_list(self.root, split)
        if count is not None:
            if not 1 <= count <= len(self.entries):
                raise TripletListError(
                    f"--num_training_samples must be between 1 and {len(self.entries)} (the entries of "
                    f"{LIST_FILES[split]}), got {count}"
                )
            keep = np.random.default_rng(seed).choice(len(self.entries), size=count, replace=False)
            self.entries = [self.entries[i] for i in sorted(int(i) for i in keep)]
        self.crop = (crop, crop) if isinstance(crop, int) else (tuple(crop) if crop is not None else None)
        if self.crop is not None and min(self.crop) < 1:
            raise TripletListError(f"crop must be positive, got {crop}")
        for name, p in (("motion_crop", motion_crop), ("synthetic", synthetic)):
            if not 0.0 <= p <= 1.0:
                raise TripletListError(f"{name} is a probability in [0, 1], got {p}")
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.motion_crop = float(motion_crop)
        self.motion_candidates = max(1, int(motion_candidates))
        self.synthetic = float(synthetic)
        self.synthetic_shift = float(synthetic_shift)
        self.frame_size = self._check(check_sizes)

    def _paths(self, entry: str) -> list[Path]:
        folder = self.root / "sequences" / entry
        return [folder / name for name in FRAME_NAMES]

    def _check(self, check_sizes: bool) -> tuple[int, int]:
        """Every entry has its three images; with ``check_sizes`` all three share one size that fits
        the crop. Returns the (width, height) of the first triplet."""
        first: tuple[int, int] | None = None
        for entry in self.entries:
            paths = self._paths(entry)
            for p in paths:
                if not p.is_file():
                    raise TripletListError(f"{LIST_FILES[self.split]} entry {entry!r}: {p} not found")
            if check_sizes or first is None:
                sizes = [_size(p) for p in paths]
                if len(set(sizes)) != 1:
                    shown = ", ".join(f"{w}x{h}" for w, h in sizes)
                    raise TripletListError(f"entry {entry!r}: frames differ in size ({shown})")
                w, h = sizes[0]
                if self.crop is not None and (self.crop[0] > h or self.crop[1] > w):
                    raise TripletListError(
                        f"crop {self.crop[1]}x{self.crop[0]} is larger than the {w}x{h} frames of entry {entry!r}"
                    )
                first = first or (w, h)
        assert first is not None
        return first

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (as ``DistributedSampler.set_epoch`` does for order)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _crop_origin(
        self, frames: list[torch.Tensor], rng: np.random.Generator, size: tuple[int, int]
    ) -> tuple[int, int]:
        ch, cw = size
        _, h, w = frames[0].shape
        count = self.motion_candidates if rng.random() < self.motion_crop else 1
        ys = rng.integers(0, h - ch + 1, size=count)
        xs = rng.integers(0, w - cw + 1, size=count)
        if count == 1:
            return int(ys[0]), int(xs[0])
        # Motion energy of each candidate: mean |frame0 - frame2| inside it, from an integral image.
        diff = (frames[0] - frames[2]).abs().mean(0).double()
        integral = F.pad(diff.cumsum(0).cumsum(1), (1, 0, 1, 0))
        energy = integral[ys + ch, xs + cw] - integral[ys, xs + cw] - integral[ys + ch, xs] + integral[ys, xs]
        best = int(torch.argmax(torch.as_tensor(energy)))
        return int(ys[best]), int(xs[best])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = self._rng(index)
        paths = self._paths(self.entries[index])
        try:
            frames = [read_image(p) for p in paths]
        except ImageError as exc:
            raise TripletListError(str(exc)) from None
        if len({tuple(f.shape) for f in frames}) != 1:
            raise TripletListError(f"entry {self.entries[index]!r}: frames differ in size")
        if self.synthetic > 0 and rng.random() < self.synthetic:
            frames = list(synthetic_triplet(frames[1], rng, self.synthetic_shift))
        if self.crop is not None:
            y, x = self._crop_origin(frames, rng, self.crop)
            frames = [f[:, y : y + self.crop[0], x : x + self.crop[1]] for f in frames]
        if self.augment:
            if rng.random() < 0.5:
                frames = [f.flip(-1) for f in frames]
            if rng.random() < 0.5:
                frames = [f.flip(-2) for f in frames]
            if rng.random() < 0.5:
                frames = frames[::-1]
        return tuple(f.contiguous() for f in frames)
