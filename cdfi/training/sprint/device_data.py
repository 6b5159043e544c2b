"""Training and validation data held on the device: decoded frames as uint8 tensors, crops cut there.

The last GPU fine-tune fed the GPU from CPU data-loader workers (PNG decoding, cropping and flipping
on the host, then a copy per batch). Here every decoded frame of the footage lives in one uint8 tensor
on the GPU (about 4 GB for the 30 clips), and a batch is a few small integer tensors drawn there
(``torch.randint`` on a device generator) plus one gather by advanced indexing: crop offsets,
horizontal and vertical flips and the temporal swap of the two inputs are folded into the gather's
indices, so a batch costs no host work, no copy and no host synchronisation.

Layout: ``FrameBank.pixels`` is (P, 3) uint8, every frame's pixels in row-major order (RGB), frame
``f`` starting at pixel ``start[f]`` with size ``height[f]`` x ``width[f]``; frames of different
clips may differ in size. A training triplet is a row of three global frame indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "CropDraws",
    "DeviceSampler",
    "FrameBank",
    "SamplerError",
    "ValidationSet",
    "psnr_quantized",
    "validation_psnr",
]


class SamplerError(ValueError):
    """Training data that cannot give the requested crops (one-line message)."""


@dataclass
class FrameBank:
    """Every frame of several clips in one (P, 3) uint8 tensor, with each frame's first pixel and size."""

    pixels: torch.Tensor
    start: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor

    @classmethod
    def from_clips(cls, clips: Sequence[np.ndarray], device: torch.device | str = "cpu") -> FrameBank:
        """Copy clips, each an (n, H, W, 3) uint8 array, into one bank on ``device`` (clip by clip, so the
        host never holds a second copy of the whole footage)."""
        starts, heights, widths = [], [], []
        total = 0
        for clip in clips:
            if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
                raise SamplerError(f"a clip must be an (n, H, W, 3) uint8 array, got {clip.dtype} {clip.shape}")
            n, h, w, _ = clip.shape
            starts += [total + i * h * w for i in range(n)]
            heights += [h] * n
            widths += [w] * n
            total += n * h * w
        device = torch.device(device)
        pixels = torch.empty((total, 3), dtype=torch.uint8, device=device)
        at = 0
        for clip in clips:
            flat = torch.from_numpy(np.ascontiguousarray(clip).reshape(-1, 3))
            pixels[at : at + flat.shape[0]].copy_(flat)
            at += flat.shape[0]

        def as_index(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        return cls(pixels, as_index(starts), as_index(heights), as_index(widths))

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @property
    def frames(self) -> int:
        return int(self.start.shape[0])

    @property
    def nbytes(self) -> int:
        return self.pixels.numel()

    def frame(self, index: int) -> torch.Tensor:
        """Frame ``index`` as an (H, W, 3) uint8 view."""
        h, w, s = int(self.height[index]), int(self.width[index]), int(self.start[index])
        return self.pixels[s : s + h * w].view(h, w, 3)


@dataclass
class CropDraws:
    """The random choices behind one batch, all (B,) or (B, K) tensors on the bank's device.

    ``index``: rows of the triplet table; ``cand_top``/``cand_left``: K candidate crop origins per item
    (the first is the plain random crop); ``motion``: whether the item takes the candidate where frames
    0 and 2 differ most; ``top``/``left``: the origin taken; ``hflip``/``vflip``/``swap``: horizontal
    flip, vertical flip, and the two inputs exchanged (time reversed).
    """

    index: torch.Tensor
    cand_top: torch.Tensor
    cand_left: torch.Tensor
    motion: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor
    swap: torch.Tensor


class DeviceSampler:
    """Random training batches cut from a ``FrameBank`` on its device, without host synchronisation.

    Augmentations are the published ones (horizontal flip, vertical flip, temporal swap, each with
    probability 0.5) on random ``crop`` x ``crop`` crops; with probability ``motion_crop`` an item's crop
    is the one, among ``candidates`` random origins, where the two inputs differ most (the small
    recipe's motion-aware crops), measured as the sum of |frame0 - frame2| over every ``energy_stride``-th
    pixel of each candidate (exact integers, so ties break the same way everywhere: first candidate).
    """

    def __init__(
        self,
        bank: FrameBank,
        triplets: torch.Tensor,
        batch: int,
        crop: int,
        *,
        motion_crop: float = 0.5,
        candidates: int = 8,
        energy_stride: int = 4,
        seed: int = 0,
    ) -> None:
        if batch < 1 or crop < 1:
            raise SamplerError(f"batch and crop must be positive, got {batch} and {crop}")
        if not 0.0 <= motion_crop <= 1.0:
            raise SamplerError(f"motion_crop must be in [0, 1], got {motion_crop}")
        if triplets.ndim != 2 or triplets.shape[1] != 3 or triplets.shape[0] == 0:
            raise SamplerError(f"triplets must be a non-empty (N, 3) table, got shape {tuple(triplets.shape)}")
        self.bank = bank
        self.triplets = triplets.to(bank.device, torch.int64)
        small = (bank.height[self.triplets[:, 0]] < crop) | (bank.width[self.triplets[:, 0]] < crop)
        if bool(small.any()):
            raise SamplerError(f"{int(small.sum())} triplets have frames smaller than the {crop}x{crop} crop")
        self.batch = int(batch)
        self.crop = int(crop)
        self.motion_crop = float(motion_crop)
        self.candidates = max(1, int(candidates)) if motion_crop > 0 else 1
        self.energy_stride = max(1, int(energy_stride))
        self.generator = torch.Generator(device=bank.device).manual_seed(seed)
        self._ramp = torch.arange(self.crop, device=bank.device)
        self._grid = torch.arange(0, self.crop, self.energy_stride, device=bank.device)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.bank.device)

    def draw(self) -> CropDraws:
        """Draw one batch's choices on the device."""
        b, k, c, dev = self.batch, self.candidates, self.crop, self.bank.device
        index = torch.randint(self.triplets.shape[0], (b,), generator=self.generator, device=dev)
        first = self.triplets[index, 0]
        room_y = (self.bank.height[first] - c + 1)[:, None]
        room_x = (self.bank.width[first] - c + 1)[:, None]
        raw = torch.randint(2**31 - 1, (2, b, k), generator=self.generator, device=dev)
        cand_top, cand_left = raw[0] % room_y, raw[1] % room_x
        coins = self._rand(4, b)
        motion = coins[0] < self.motion_crop
        if k > 1:
            best = self._energy(self.triplets[index], cand_top, cand_left).argmax(1, keepdim=True)
            top = torch.where(motion, cand_top.gather(1, best)[:, 0], cand_top[:, 0])
            left = torch.where(motion, cand_left.gather(1, best)[:, 0], cand_left[:, 0])
        else:
            top, left = cand_top[:, 0], cand_left[:, 0]
        return CropDraws(index, cand_top, cand_left, motion, top, left, coins[1] < 0.5, coins[2] < 0.5, coins[3] < 0.5)

    def _energy(self, tri: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        """(B, K) sums of |frame0 - frame2| over the subsampled pixels of each candidate crop."""
        rows = top[..., None] + self._grid  # (B, K, G)
        cols = left[..., None] + self._grid
        width = self.bank.width[tri[:, 0]][:, None, None, None]
        offset = rows[..., :, None] * width + cols[..., None, :]  # (B, K, G, G)
        a = self.bank.pixels[self.bank.start[tri[:, 0]][:, None, None, None] + offset].to(torch.int32)
        c = self.bank.pixels[self.bank.start[tri[:, 2]][:, None, None, None] + offset].to(torch.int32)
        return (a - c).abs().sum(dim=(2, 3, 4))

    def cut(self, draws: CropDraws) -> torch.Tensor:
        """The crops of ``draws`` as a (3, B, crop, crop, 3) uint8 tensor: frame0, ground truth, frame2."""
        tri = self.triplets[draws.index]
        tri = torch.where(draws.swap[:, None], tri.flip(1), tri).t().contiguous()  # (3, B)
        ramp, last = self._ramp, self.crop - 1
        rows = draws.top[:, None] + torch.where(draws.vflip[:, None], last - ramp, ramp)  # (B, c)
        cols = draws.left[:, None] + torch.where(draws.hflip[:, None], last - ramp, ramp)
        width = self.bank.width[tri][:, :, None, None]
        pix = self.bank.start[tri][:, :, None, None] + rows[None, :, :, None] * width + cols[None, :, None, :]
        return self.bank.pixels[pix.contiguous()]

    def batch_from(self, draws: CropDraws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame0, frame1, frame2), each (B, 3, crop, crop) float32 in [0, 1], channels_last."""
        frames = self.cut(draws).to(torch.float32).div_(255).permute(0, 1, 4, 2, 3)
        return frames[0], frames[1], frames[2]

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fresh random batch."""
        return self.batch_from(self.draw())


@dataclass
class ValidationSet:
    """Held-out triplets on the device: per clip an (n, H, W, 3) uint8 tensor, and per item
    ``(clip, i, j, k)`` (frame0, ground truth, frame2 within that clip) with its name."""

    clips: list[torch.Tensor]
    items: list[tuple[int, int, int, int]]
    names: list[str]

    @classmethod
    def from_arrays(
        cls,
        clips: Sequence[np.ndarray],
        items: Sequence[tuple[int, int, int, int]],
        names: Sequence[str],
        device: torch.device | str = "cpu",
    ) -> ValidationSet:
        if len(items) != len(names) or not items:
            raise SamplerError("a validation set needs one name per item and at least one item")
        tensors = [torch.from_numpy(np.ascontiguousarray(c)).to(device) for c in clips]
        for clip, i, j, k in items:
            if not 0 <= clip < len(tensors) or max(i, j, k) >= tensors[clip].shape[0] or min(i, j, k) < 0:
                raise SamplerError(f"validation item {(clip, i, j, k)} is outside its clip")
        return cls(tensors, [tuple(t) for t in items], list(names))

    def __len__(self) -> int:
        return len(self.items)


def _as_nchw(frames: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1] (channels_last memory)."""
    return frames.to(torch.float32).div_(255).permute(0, 3, 1, 2)


def psnr_quantized(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-item PSNR (float64, dB) of ``pred`` (B, 3, H, W) in [0, 1] rounded to 8 bits, against ``gt``
    (B, H, W, 3) uint8: the published protocol (PNG round trip, skimage PSNR with data_range 1)."""
    q = pred.detach().float().clamp(0, 1).mul(255).round().double()
    ref = gt.permute(0, 3, 1, 2).double()
    mse = ((q - ref) / 255).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse)


def validation_psnr(model: nn.Module, val: ValidationSet, *, batch: int = 4) -> torch.Tensor:
    """PSNR of every validation item (a float64 tensor on the set's device; no host synchronisation).

    Runs in fp32 with TF32 off on CUDA, so the numbers compare with the CPU evaluation; the model's
    train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    cuda = val.clips[0].is_cuda
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if cuda:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    out: list[torch.Tensor | None] = [None] * len(val.items)
    try:
        by_clip: dict[int, list[int]] = {}
        for n, item in enumerate(val.items):
            by_clip.setdefault(item[0], []).append(n)
        with torch.no_grad(), torch.autocast(val.clips[0].device.type, enabled=False):
            for clip, members in by_clip.items():
                frames = val.clips[clip]
                for at in range(0, len(members), batch):
                    chunk = members[at : at + batch]
                    pick = torch.tensor([val.items[n][1:] for n in chunk], device=frames.device)  # (b, 3)
                    pred = model(_as_nchw(frames[pick[:, 0]]), _as_nchw(frames[pick[:, 2]]))
                    pred = pred["frame1"] if isinstance(pred, dict) else pred
                    for n, value in zip(chunk, psnr_quantized(pred, frames[pick[:, 1]]), strict=True):
                        out[n] = value
    finally:
        if cuda:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        model.train(was_training)
    return torch.stack([v for v in out if v is not None])
