"""Frame reading refuses what it cannot use, with the file named; writing is exact and atomic."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdfi.io.atomic import atomic_path
from cdfi.io.images import ImageError, read_image, write_image


def test_round_trip_is_exact_on_8bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    frame = read_image(tmp_path / "a.png")
    assert frame.shape == (3, 9, 13) and frame.dtype == torch.float32
    np.testing.assert_array_equal(np.round(frame.permute(1, 2, 0).numpy() * 255).astype(np.uint8), array)
    write_image(tmp_path / "b.png", frame)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), array)


@pytest.mark.parametrize(
    ("mode", "dtype", "channels", "needle"),
    [("L", np.uint8, None, "grayscale"), ("RGBA", np.uint8, 4, "alpha"), ("I;16", np.uint16, None, "16-bit")],
)
def test_non_rgb_images_are_refused(tmp_path: Path, mode: str, dtype: type, channels: int | None, needle: str) -> None:
    shape = (8, 8) if channels is None else (8, 8, channels)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.fromarray(np.zeros(shape, dtype=dtype)).save(path)
    with pytest.raises(ImageError, match=needle) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_16bit_colour_png_is_refused(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 40000, dtype=np.uint16))
    with pytest.raises(ImageError, match="16-bit PNG"):
        read_image(path)


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated.png"):
        read_image(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"hello")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(garbage)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_write_refuses_overwrite_without_force(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", torch.zeros(3, 4, 4))
    with pytest.raises(FileExistsError, match="--force"):
        write_image(path, torch.ones(3, 4, 4), force=False)
    assert np.asarray(Image.open(path)).max() == 0


def test_atomic_path_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_the_usual_file_mode(tmp_path: Path) -> None:
    """Outputs are readable as if written by open(), not private like the temporary file they start as."""
    import os

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert (tmp_path / "out.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def test_decompression_bomb_is_an_image_error(tmp_path: Path) -> None:
    """PIL's safety limit stays; hitting it is a one-line ImageError naming the file, not a traceback."""
    from inference_helpers import png_bomb

    path = png_bomb(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageError, match=r"huge\.png: image too large to read safely \(400,000,000 pixels"):
        read_image(path)


def test_decompression_bomb_warning_as_error(tmp_path: Path) -> None:
    """Under ``-W error`` PIL's bomb *warning* is raised: it gets the same message."""
    import warnings

    from inference_helpers import png_bomb

    path = png_bomb(tmp_path / "big.png", 10000, 10000)  # over MAX_IMAGE_PIXELS, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match=r"big\.png: image too large"):
            read_image(path)


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a folder, not an image file"):
        read_image(tmp_path)


def test_ensure_writable_checks_the_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_helpers import deny_writes

    from cdfi.io.atomic import OutputWriteError, ensure_writable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputWriteError, match=re.escape(f"{blocker / 'a' / 'b.png'}: cannot be created, ")):
        ensure_writable(blocker / "a" / "b.png", force=True)
    with pytest.raises(OutputWriteError, match="is a folder"):
        ensure_writable(tmp_path, force=True)
    assert ensure_writable(tmp_path / "new" / "deeper" / "x.png", force=False) == tmp_path / "new" / "deeper" / "x.png"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_writes(monkeypatch, ro)
    with pytest.raises(OutputWriteError, match=re.escape(f"{ro / 'x.png'}: cannot write in {ro} (Permission denied)")):
        ensure_writable(ro / "x.png", force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"]


def test_atomic_write_errors_name_the_target(tmp_path: Path) -> None:
    """An OSError about the temporary file is restated for the final path (and the temp file removed)."""
    from cdfi.io.atomic import OutputWriteError

    target = tmp_path / "out.png"
    with pytest.raises(OutputWriteError) as info, atomic_path(target) as tmp:
        raise PermissionError(13, "Permission denied", str(tmp))
    assert str(info.value) == f"{target}: cannot write (Permission denied)" and info.value.errno == 13
    with pytest.raises(FileNotFoundError, match="elsewhere"), atomic_path(target):
        raise FileNotFoundError(2, "No such file", str(tmp_path / "elsewhere"))  # not about the output: unchanged
    assert list(tmp_path.iterdir()) == []
