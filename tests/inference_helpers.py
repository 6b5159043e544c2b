"""Test helpers for inference (the probe model and example frames live in ``cdfi.probe``).

PyTorch's default initialisation gives near-zero offsets and near-uniform kernels, so any two ways of
running such a model agree trivially. Kaiming-normal weights with zero biases keep the signal alive
through the U-Net: offsets of a few pixels, varied kernels and occlusion maps, and a wide effective
receptive field, which is what a tiling test needs to be able to fail.
"""

from __future__ import annotations

import copy
import errno
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cdfi.io.checkpoint import save_checkpoint
from cdfi.probe import example_frames, lively_model, psnr  # noqa: F401 (re-exported for the tests)

REPO = Path(__file__).resolve().parent.parent


def save_lively(path: Path, seed: int = 0) -> Path:
    """Save ``lively_model`` as a checkpoint (published format plus metadata)."""
    save_checkpoint(path, lively_model(seed), epoch=0)
    return path


def reference_middle(model: nn.Module, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
    """The model called directly (a private fp32 copy, contiguous memory), clamped to [0, 1]."""
    ref = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        return ref(frame0[None].float(), frame1[None].float())[0].clamp(0, 1)


def save_rgb(path: Path, frame: torch.Tensor) -> Path:
    """Write a (3, H, W) tensor as an 8-bit RGB image with PIL (independent of cdfi.io.images)."""
    array = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


def load_rgb(path: Path) -> torch.Tensor:
    """Read an image as (3, H, W) float in [0, 1] with PIL."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A PNG header claiming ``width`` x ``height`` (no pixel data): PIL refuses to open it as a possible
    decompression bomb when the size exceeds twice ``Image.MAX_IMAGE_PIXELS``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path, probe_too: bool = True) -> None:
    """Make creating files in ``folder`` fail with EACCES, as a read-only folder does for a normal user
    (the tests may run as root, for whom chmod does not deny anything). Files are created with
    ``tempfile.mkstemp``: the probe of ``ensure_writable`` and every atomic write. With ``probe_too``
    false the probe still succeeds, to model a write that fails only after the early check (a full disk)."""
    real = tempfile.mkstemp

    def mkstemp(suffix: str | None = None, prefix: str | None = None, dir: str | None = None, text: bool = False):
        probe = (prefix or "").startswith(".cdfi_probe.")
        if dir is not None and Path(dir).resolve() == folder.resolve() and (probe_too or not probe):
            name = os.path.join(dir, f"{prefix or 'tmp'}XXXXXXXX{suffix or ''}")
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        return real(suffix, prefix, dir, text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
