"""Triplet builder and Vimeo-layout data set: against the frames the tests generate themselves."""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from video_helpers import write_lossless_video

from datasets.make_triplets import TripletBuildError, build_triplets, main, parse_strides
from datasets.vimeo import TripletListError, VimeoTriplets, synthetic_triplet

W, H = 64, 48


def _frames(count: int, cut_at: int | None = None) -> list[np.ndarray]:
    """A smooth random texture panning 1 px per frame (count <= 40); from ``cut_at`` on, another texture."""
    rng = np.random.default_rng(0)
    textures = []
    for _ in range(2):
        small = rng.integers(0, 256, (H // 8 + 1, (W + 40) // 8 + 1, 3), dtype=np.uint8)
        textures.append(np.asarray(Image.fromarray(small).resize((small.shape[1] * 8, small.shape[0] * 8))))
    return [
        np.ascontiguousarray(textures[int(cut_at is not None and i >= cut_at)][:H, i : i + W]) for i in range(count)
    ]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_video_triplets_hold_the_right_frames_and_disjoint_splits(tmp_path) -> None:
    frames = _frames(30)
    video = write_lossless_video(tmp_path / "clip.mkv", frames)
    report = build_triplets([video], tmp_path / "out", stride=2, val_fraction=0.2, progress=False)
    root = tmp_path / "out"
    train = (root / "tri_trainlist.txt").read_text().split()
    test = (root / "tri_testlist.txt").read_text().split()
    assert (report.train, report.test) == (len(train), len(test)) and train and test
    manifest = json.loads((root / "triplets.json").read_text())["entries"]
    for entry in train + test:
        idx = manifest[entry]["frames"]
        assert idx[1] - idx[0] == idx[2] - idx[1] == 2
        for name, i in zip(("im1.png", "im2.png", "im3.png"), idx, strict=True):
            np.testing.assert_array_equal(_png(root / "sequences" / entry / name), frames[i])
    train_frames = {i for e in train for i in manifest[e]["frames"]}
    test_frames = {i for e in test for i in manifest[e]["frames"]}
    assert not train_frames & test_frames
    assert min(test_frames) > max(train_frames)  # held out at the end of the clip
    assert len(train) == 24 - 4 and len(test) == 6 - 4  # 30 frames, 6 held out, span 4


def test_scene_cut_triplets_are_dropped(tmp_path) -> None:
    frames = _frames(20, cut_at=10)
    video = write_lossless_video(tmp_path / "cut.mkv", frames)
    report = build_triplets([video], tmp_path / "out", val_fraction=0, scene_cut=0.1, progress=False)
    manifest = json.loads((tmp_path / "out" / "triplets.json").read_text())["entries"]
    spans = [v["frames"] for v in manifest.values()]
    assert report.scene_cuts == 2  # (8, 9, 10) and (9, 10, 11)
    assert all(not (f[0] < 10 <= f[2]) for f in spans)
    assert len(spans) == 18 - 2


def test_frame_folder_with_crop_and_resize(tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(12)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    build_triplets([folder], tmp_path / "out", crop=(32, 32), size=(16, 24), val_fraction=0.25, progress=False)
    entry = (tmp_path / "out" / "tri_trainlist.txt").read_text().split()[0]
    got = _png(tmp_path / "out" / "sequences" / entry / "im1.png")
    expected = np.asarray(Image.fromarray(frames[0][8:40, 16:48]).resize((16, 24), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(got, expected)


def test_builder_errors(tmp_path, capsys) -> None:
    with pytest.raises(TripletBuildError, match="no such video"):
        build_triplets([tmp_path / "nope.mp4"], tmp_path / "out", progress=False)
    video = write_lossless_video(tmp_path / "short.mkv", _frames(4))
    with pytest.raises(TripletBuildError, match="too few"):
        build_triplets([video], tmp_path / "out", stride=1, val_fraction=0.5, progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    assert main([str(video), "--out", str(tmp_path / "taken"), "--val_fraction", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err


# ----------------------------------------------------------------------------------------------- data set


def _vimeo(root: Path, count: int = 3, size: tuple[int, int] = (W, H)) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    triplets = []
    for i in range(count):
        folder = root / "sequences" / "00001" / f"{i + 1:04d}"
        folder.mkdir(parents=True)
        trip = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(3)]
        for k, f in enumerate(trip):
            Image.fromarray(f).save(folder / f"im{k + 1}.png")
        triplets.append(trip)
    (root / "tri_trainlist.txt").write_text("".join(f"00001/{i + 1:04d}\n" for i in range(count)))
    return triplets


def _as_uint8(t: torch.Tensor) -> np.ndarray:
    return (t * 255).round().byte().permute(1, 2, 0).numpy()


def test_augmentations_are_flips_and_swaps_of_the_triplet(tmp_path) -> None:
    trip = _vimeo(tmp_path, 1)[0]
    data = VimeoTriplets(tmp_path, seed=5)
    seen = set()
    for epoch in range(40):
        data.set_epoch(epoch)
        got = [_as_uint8(t) for t in data[0]]
        match = None
        for h in (False, True):
            for v in (False, True):
                for swap in (False, True):
                    ref = [f[:, ::-1] if h else f for f in trip]
                    ref = [f[::-1] if v else f for f in ref]
                    ref = ref[::-1] if swap else ref
                    if all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True)):
                        match = (h, v, swap)
        assert match is not None
        seen.add(match)
    assert len(seen) >= 6  # 40 draws of three fair coins cover (nearly) all 8 combinations
    data.set_epoch(3)
    again = VimeoTriplets(tmp_path, seed=5)
    again.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(data[0], again[0], strict=True))


def test_random_crop_is_a_window_of_the_frames(tmp_path) -> None:
    trip = _vimeo(tmp_path, 1)[0]
    data = VimeoTriplets(tmp_path, crop=16, augment=False)
    got = _as_uint8(data[0][1])
    assert got.shape == (16, 16, 3)
    windows = [trip[1][y : y + 16, x : x + 16] for y in range(H - 15) for x in range(W - 15)]
    assert any(np.array_equal(got, w) for w in windows)


def test_motion_crop_prefers_moving_regions(tmp_path) -> None:
    folder = tmp_path / "sequences" / "00001" / "0001"
    folder.mkdir(parents=True)
    still = np.full((H, W, 3), 128, np.uint8)
    moved = still.copy()
    moved[:16, -16:] = 255  # motion only in the top-right 16x16 corner
    for name, f in (("im1.png", still), ("im2.png", still), ("im3.png", moved)):
        Image.fromarray(f).save(folder / name)
    (tmp_path / "tri_trainlist.txt").write_text("00001/0001\n")

    def mean_energy(p: float) -> float:
        data = VimeoTriplets(tmp_path, crop=16, augment=False, motion_crop=p, motion_candidates=32)
        total = 0.0
        for epoch in range(20):
            data.set_epoch(epoch)
            f0, _, f2 = data[0]
            total += float((f0 - f2).abs().mean())
        return total / 20

    assert mean_energy(1.0) > 3 * mean_energy(0.0)


def test_dataset_input_errors(tmp_path) -> None:
    with pytest.raises(TripletListError, match="list file not found"):
        VimeoTriplets(tmp_path)
    (tmp_path / "tri_trainlist.txt").write_text("\n")
    with pytest.raises(TripletListError, match="empty"):
        VimeoTriplets(tmp_path)
    _vimeo(tmp_path / "ok", 2)
    with pytest.raises(TripletListError, match="larger than"):
        VimeoTriplets(tmp_path / "ok", crop=W + 1)
    (tmp_path / "ok" / "sequences" / "00001" / "0002" / "im3.png").unlink()
    with pytest.raises(TripletListError, match="0002.*not found"):
        VimeoTriplets(tmp_path / "ok")
    Image.fromarray(np.zeros((H, W + 2, 3), np.uint8)).save(
        tmp_path / "ok" / "sequences" / "00001" / "0002" / "im3.png"
    )
    with pytest.raises(TripletListError, match="differ in size"):
        VimeoTriplets(tmp_path / "ok")


def test_count_keeps_a_seeded_subset_of_the_list(tmp_path) -> None:
    """``count`` (the published --num_training_samples) keeps that many distinct entries of the list, the
    same for the same seed, in list order; more than the list holds is a one-line error."""
    _vimeo(tmp_path, 6)
    listed = (tmp_path / "tri_trainlist.txt").read_text().split()
    subsets = {seed: VimeoTriplets(tmp_path, count=3, seed=seed).entries for seed in range(6)}
    for entries in subsets.values():
        assert len(set(entries)) == 3 and set(entries) <= set(listed)
        assert entries == [e for e in listed if e in entries]
    assert VimeoTriplets(tmp_path, count=3, seed=2).entries == subsets[2]
    assert len({tuple(e) for e in subsets.values()}) > 1
    assert VimeoTriplets(tmp_path, count=6).entries == listed
    with pytest.raises(TripletListError, match="--num_training_samples must be between 1 and 6"):
        VimeoTriplets(tmp_path, count=7)


def test_synthetic_triplet_middle_frame_is_half_way() -> None:
    """On a linear ramp bilinear resampling is exact, so under pure translation the middle frame is the
    mean of the outer two wherever no sample falls outside the image; rotation and zoom bend the
    trajectories only to second order (angle^2 / 8 of the radius)."""
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    ramp = torch.stack([0.2 + 0.01 * xx, 0.1 + 0.012 * yy, 0.5 + 0.003 * (xx - yy)])
    inner = (slice(None), slice(8, -8), slice(8, -8))
    f0, f1, f2 = synthetic_triplet(ramp, np.random.default_rng(4), max_shift=3.0, max_angle=0, max_zoom=0)
    torch.testing.assert_close(f1[inner], ((f0 + f2) / 2)[inner], atol=2e-6, rtol=0)
    assert float((f0 - f2)[inner].abs().mean()) > 1e-3
    f0, f1, f2 = synthetic_triplet(ramp, np.random.default_rng(4), max_shift=3.0)
    bend = math.radians(2.0) ** 2 / 8 * 40 * 0.012 + 0.03**2 / 8 * 40 * 0.012
    torch.testing.assert_close(f1[inner], ((f0 + f2) / 2)[inner], atol=bend, rtol=0)


def test_several_strides_give_one_set_each_from_disjoint_frames(tmp_path) -> None:
    video = write_lossless_video(tmp_path / "clip.mkv", _frames(30))
    build_triplets([video], tmp_path / "out", stride=[2, 1], val_fraction=0.2, progress=False)
    manifest = json.loads((tmp_path / "out" / "triplets.json").read_text())
    assert manifest["options"]["stride"] == [1, 2]
    gaps: dict[str, set[int]] = {"train": set(), "test": set()}
    frames: dict[str, set[int]] = {"train": set(), "test": set()}
    for entry in manifest["entries"].values():
        a, b, c = entry["frames"]
        assert b - a == c - b
        gaps[entry["split"]].add(b - a)
        frames[entry["split"]].update((a, b, c))
    assert gaps == {"train": {1, 2}, "test": {1, 2}}
    assert not frames["train"] & frames["test"]
    assert max(frames["train"]) < min(frames["test"])


def test_stride_list_parsing_rejects_bad_values() -> None:
    assert parse_strides("1,2,3") == [1, 2, 3]
    for bad in ("0", "1,x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_strides(bad)


def test_opencv_decodes_videos_where_pyav_is_missing(tmp_path, monkeypatch) -> None:
    import builtins

    from datasets.make_triplets import read_frames

    frames = _frames(12)
    video = write_lossless_video(tmp_path / "clip.mkv", frames)
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    decoded = list(read_frames(video, max_frames=10))
    assert len(decoded) == 10
    for got, want in zip(decoded, frames, strict=False):
        np.testing.assert_array_equal(got, want)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(TripletBuildError, match="broken.mp4"):
        list(read_frames(tmp_path / "broken.mp4"))


def test_frames_of_different_sizes_are_refused_naming_the_file(tmp_path, capsys) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = _frames(6)
    for i, f in enumerate(frames):
        Image.fromarray(f if i != 4 else f[:24, :32]).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--val_fraction", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"make_triplets: error: {folder / '004.png'}: frame is 32x24, but 000.png is {W}x{H}; "
        "all frames of a clip must have one size"
    )
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["clip"]  # no work folder left


def test_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, f in enumerate(_frames(4)):
        Image.fromarray(f).save(folder / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 64x48 header now claims too many pixels
    assert main([str(folder), "--out", str(tmp_path / "out"), "--val_fraction", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"make_triplets: error: {folder / '0.png'}: image too large to decode safely")
    assert "\n" not in err


def test_output_folder_honours_the_umask(tmp_path) -> None:
    video = write_lossless_video(tmp_path / "clip.mkv", _frames(8))
    old = os.umask(0o022)
    try:
        build_triplets([video], tmp_path / "out", val_fraction=0, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "tri_trainlist.txt").stat().st_mode) == 0o644
