"""Reading and writing frames as float tensors in [0, 1], with clear errors for unusable files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cdfi.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageError(ValueError):
    """An image that cannot be used as a frame; the message names the file and the problem."""


def read_image(path: str | Path) -> torch.Tensor:
    """Read an 8-bit RGB image as a float tensor (3, H, W) in [0, 1].

    Grayscale, alpha, palette-less 16-bit and other modes are refused rather than silently
    converted, because an interpolated frame of a different colour model would mislead.
    """
    path = Path(path)
    check_image_file(path)
    try:
        with Image.open(path) as img:
            mode = img.mode
            if img.format == "PNG" and _png_bit_depth(path) == 16:
                raise ImageError(f"{path}: 16-bit PNG; frames must be 8-bit RGB")
            if mode == "P":
                img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
                mode = img.mode
            if mode != "RGB":
                raise ImageError(f"{path}: image mode {_describe(mode)}; frames must be 8-bit RGB")
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large(path, exc) from None
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot be decoded ({exc})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def check_image_file(path: Path) -> None:
    """Raise ``ImageError`` unless ``path`` is an existing file (a folder or a missing path is named as such)."""
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise ImageError(f"{path}: no such file")


def too_large(path: Path, exc: Exception) -> ImageError:
    """The error for an image PIL refuses to open as a possible decompression bomb (its limit is kept)."""
    numbers = [int(n) for n in re.findall(r"(\d+) pixels", str(exc))]
    if len(numbers) == 2:
        detail = f"{numbers[0]:,} pixels, over the safety limit of {numbers[1]:,}"
    else:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ImageError(f"{path}: image too large to read safely ({detail})")


def _png_bit_depth(path: Path) -> int:
    """Bit depth from the PNG header (PIL silently reduces 16-bit colour PNGs to 8 bits)."""
    with open(path, "rb") as fh:
        header = fh.read(25)
    return header[24] if len(header) == 25 and header[12:16] == b"IHDR" else 8


def _describe(mode: str) -> str:
    names = {
        "L": "grayscale (L)",
        "LA": "grayscale with alpha (LA)",
        "RGBA": "RGB with alpha (RGBA)",
        "I;16": "16-bit grayscale (I;16)",
        "I;16B": "16-bit grayscale (I;16B)",
        "I": "32-bit integer (I)",
        "F": "32-bit float (F)",
        "CMYK": "CMYK",
        "1": "1-bit",
    }
    return names.get(mode, repr(mode))


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float in [0, 1] to an H x W x 3 uint8 array (round to nearest)."""
    if frame.dim() == 4:
        if frame.shape[0] != 1:
            raise ValueError(f"expected one frame, got a batch of {frame.shape[0]}")
        frame = frame[0]
    if frame.dim() != 3 or frame.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) frame, got shape {tuple(frame.shape)}")
    array = frame.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def write_image(path: str | Path, frame: torch.Tensor, force: bool = True) -> Path:
    """Write a frame as an 8-bit image atomically; the format follows the suffix."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unsupported image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    with atomic_path(path, force) as tmp:
        Image.fromarray(to_uint8(frame)).save(tmp)
    return path


def quantize(frame: torch.Tensor) -> torch.Tensor:
    """Round a frame to the 8-bit grid, as writing and re-reading a PNG would."""
    return frame.clamp(0, 1).mul(255).round().div(255)
