"""test.py / test_compressed_adacof.py end to end on cropped Middlebury and UCF101 items with seeded
random-weight checkpoints: rows, results.json, PNG layout, and scores recomputed independently
(skimage and the ``lpips`` package) on the written PNGs."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_helpers import crop_copy, read_png, small_published_root
from inference_helpers import lively_model, save_lively
from lpips_helpers import reference_lpips, save_backbone_as_torchvision
from PIL import Image, ImageOps
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import mytest
import test as test_cdfi
import test_compressed_adacof
from cdfi.evaluation.protocol import evaluate_items, read_item
from cdfi.io.checkpoint import save_checkpoint
from datasets.benchmark_sets import load_benchmark_set, middlebury_items, published_vimeo_augment
from models import make_model

MIDDLEBURY = ("Beanbags", "Dimetrodon", "DogDance")
UCF = ("1", "11")
REPO = Path(__file__).resolve().parent.parent
MIDDLEBURY_INPUTS = ("frame10.png", "frame11.png")


@pytest.fixture()
def small_root(data_root: Path, tmp_path: Path) -> Path:
    return small_published_root(data_root, tmp_path / "data", (160, 120, 256, 184), MIDDLEBURY, UCF)


@pytest.fixture()
def compressed_ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(11)
    return save_checkpoint(tmp_path / "compressed.pth", make_model("compressed_adacof", 5, 1), epoch=0)


def test_compressed_adacof_run(
    small_root: Path, compressed_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = reference_lpips("squeeze")
    backbone = save_backbone_as_torchvision(reference, tmp_path / "squeeze.pth")
    out = tmp_path / "out"
    rc = test_compressed_adacof.main(
        [
            "--checkpoint",
            str(compressed_ckpt),
            "--data_root",
            str(small_root),
            "--out_dir",
            str(out),
            "--kernel_size",
            "5",
            "--dilation",
            "1",
            "--limit",
            "2",
            "--save_grid",
            "--lpips_backbone",
            str(backbone),
            "--no_progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = [line for line in captured.out.splitlines() if "PSNR" in line and "mean over" not in line]
    assert [r.split(":")[0] for r in rows] == ["middlebury/Beanbags", "middlebury/Dimetrodon", "ucf101/1", "ucf101/11"]
    assert sum("mean over 2 of 2 items" in line for line in captured.out.splitlines()) == 2

    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["model"] == "compressed_adacof"
    assert results["meta"]["lpips"] == {"net": "squeeze", "convention": "published"}
    layout = {
        "middlebury": ("middlebury_others", "frame10i11.png", MIDDLEBURY[:2], "gt/{}/frame10i11.png"),
        "ucf101": ("ucf101_interp_ours", "frame_01.png", UCF, "{}/frame_01_gt.png"),
    }
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the device the CLI picks
    model = make_model("compressed_adacof", 5, 1)
    model.load_state_dict(torch.load(compressed_ckpt, weights_only=True)["state_dict"])
    model.eval().to(device)
    reference.to(device)
    for key, (folder, filename, names, gt_pattern) in layout.items():
        entry = results["sets"][key]
        assert [item["name"] for item in entry["items"]] == list(names)
        assert entry["skipped"] == []
        for item in entry["items"]:
            png = out / folder / item["name"] / filename
            assert Path(item["output"]) == png
            pred = read_png(png)
            gt = read_png(small_root / folder / gt_pattern.format(item["name"]))
            assert item["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-6)
            assert item["ssim"] == pytest.approx(
                structural_similarity(gt, pred, data_range=1, channel_axis=-1), abs=1e-6
            )
            to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float().to(device)  # noqa: E731
            with torch.no_grad():
                expected_lpips = reference(to_t(pred), to_t(gt)).item()
            assert item["lpips"] == pytest.approx(expected_lpips, rel=1e-4, abs=1e-6)
            grid = Image.open(png.parent / "grid.png")
            assert grid.size == (5 * pred.shape[1], pred.shape[0])
        first = entry["items"][0]
        frames = [
            read_png(small_root / folder / p)
            for p in (
                ("input/Beanbags/frame10.png", "input/Beanbags/frame11.png")
                if key == "middlebury"
                else ("1/frame_00.png", "1/frame_02.png")
            )
        ]
        with torch.no_grad():
            direct = model(*(torch.from_numpy(f).permute(2, 0, 1)[None].float().to(device) for f in frames))[0]
        written = torch.from_numpy(read_png(Path(first["output"]))).permute(2, 0, 1).float()
        # the PNG is this output rounded to 8 bits (one level of slack for rounding-boundary float noise)
        assert (direct.cpu().clamp(0, 1) - written).abs().max() <= 1 / 255 + 1e-4
        mean = entry["mean"]
        assert mean["items"] == 2 and mean["of"] == 2
        assert mean["psnr"] == pytest.approx(np.mean([i["psnr"] for i in entry["items"]]))
        assert mean["lpips"] == pytest.approx(np.mean([i["lpips"] for i in entry["items"]]))

    rc = test_compressed_adacof.main(
        [
            "--checkpoint",
            str(compressed_ckpt),
            "--data_root",
            str(small_root),
            "--out_dir",
            str(out),
            "--limit",
            "1",
            "--no_progress",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error:") and "--force" in err[-1]


def test_ensemble_writes_the_mean_of_both_orders(small_root: Path, tmp_path: Path) -> None:
    ckpt = save_lively(tmp_path / "lively.pth")  # far from time-symmetric, unlike a default-initialised model
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--data_root", str(small_root), "--out_dir", str(out)]
    argv += ["--kernel_size", "5", "--dilation", "1", "--limit", "1", "--datasets", "middlebury"]
    assert test_compressed_adacof.main([*argv, "--ensemble", "2", "--no_progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["ensemble"] == 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = lively_model().to(device)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float().to(device)  # noqa: E731
    a, b = (to_t(read_png(small_root / "middlebury_others" / f"input/Beanbags/{f}")) for f in MIDDLEBURY_INPUTS)
    with torch.no_grad():
        want = ((model(a, b) + model(b, a)) / 2)[0].cpu().clamp(0, 1)
        plain = model(a, b)[0].cpu().clamp(0, 1)
    written = torch.from_numpy(read_png(Path(results["sets"]["middlebury"]["items"][0]["output"]))).permute(2, 0, 1)
    assert (want - written.float()).abs().max() <= 1 / 255 + 1e-4
    assert (plain - written.float()).abs().max() > 2 / 255  # and differs from the plain model


def test_ensemble_benchmark_agrees_with_test_py(
    small_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("ensemble_bench", REPO / "benchmarks" / "ensemble.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ckpt = save_lively(tmp_path / "lively.pth")
    argv = ["--checkpoint", str(ckpt), "--data_root", str(small_root), "--limit", str(len(MIDDLEBURY))]
    assert bench.main([*argv, "--datasets", "middlebury", "--device", "cpu"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| middlebury"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{len(MIDDLEBURY)} of 12"
    for size, cell in zip((1, 2, 4, 8), cells[2:6], strict=True):
        out = tmp_path / f"out{size}"
        argv_t = [*argv, "--out_dir", str(out), "--kernel_size", "5", "--dilation", "1", "--datasets", "middlebury"]
        assert test_compressed_adacof.main([*argv_t, "--ensemble", str(size), "--no_progress"]) == 0
        mean = json.loads((out / "results.json").read_text())["sets"]["middlebury"]["mean"]["psnr"]
        assert float(cell) == pytest.approx(mean, abs=0.006)  # the table rounds to 0.01 dB
    capsys.readouterr()
    assert bench.main([*argv, "--every", "0"]) == 2
    assert "--every must be at least 1" in capsys.readouterr().err


def test_cdfi_test_py_on_tiny_crops(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = small_published_root(data_root, tmp_path / "data", (200, 150, 232, 182), MIDDLEBURY, UCF)
    torch.manual_seed(5)
    ckpt = save_checkpoint(tmp_path / "cdfi.pth", make_model("cdfi_adacof", 11, 2), epoch=3)
    out = tmp_path / "out"
    rc = test_cdfi.main(
        [
            "--gpu_id",
            "0",
            "--checkpoint",
            str(ckpt),
            "--data_root",
            str(root),
            "--out_dir",
            str(out),
            "--datasets",
            "middlebury",
            "--limit",
            "1",
            "--no_progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["model"] == "cdfi_adacof" and list(results["sets"]) == ["middlebury"]
    (item,) = results["sets"]["middlebury"]["items"]
    pred = read_png(out / "middlebury_others" / "Beanbags" / "frame10i11.png")
    gt = read_png(root / "middlebury_others" / "gt" / "Beanbags" / "frame10i11.png")
    assert item["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-6)


def test_bad_items_are_reported_and_skipped(
    small_root: Path, compressed_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = small_root / "middlebury_others" / "gt" / "Beanbags" / "frame10i11.png"
    broken.write_bytes(b"not a png")
    resized = small_root / "middlebury_others" / "gt" / "Dimetrodon" / "frame10i11.png"
    Image.open(resized).crop((0, 0, 40, 30)).save(resized)
    out = tmp_path / "out"
    rc = test_compressed_adacof.main(
        [
            "--checkpoint",
            str(compressed_ckpt),
            "--data_root",
            str(small_root),
            "--out_dir",
            str(out),
            "--datasets",
            "middlebury,ucf101",
            "--limit",
            "3",
            "--no_progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    skip_lines = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skip_lines) == 2 + 1  # two broken Middlebury items, UCF folder 21 absent from the copy
    assert str(broken) in skip_lines[0] and "size mismatch" in skip_lines[1] and "40x30" in skip_lines[1]
    assert "ucf101/21" in skip_lines[2] and "no such file" in skip_lines[2]
    results = json.loads((out / "results.json").read_text())
    midd = results["sets"]["middlebury"]
    assert [s["name"] for s in midd["skipped"]] == ["Beanbags", "Dimetrodon"]
    assert [i["name"] for i in midd["items"]] == ["DogDance"]
    assert midd["mean"]["items"] == 1 and midd["mean"]["of"] == 3
    assert midd["mean"]["psnr"] == pytest.approx(midd["items"][0]["psnr"])
    assert "mean over 1 of 3 items" in captured.out


def test_missing_inputs_give_one_error_line(
    small_root: Path,
    compressed_ckpt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = test_compressed_adacof.main(
        [
            "--checkpoint",
            str(compressed_ckpt),
            "--data_root",
            str(tmp_path / "nowhere"),
            "--out_dir",
            str(tmp_path / "o1"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "middlebury_others" in err[0] and "not found" in err[0]

    import cdfi.evaluation.cli
    import cdfi.io.paths

    monkeypatch.setattr(cdfi.io.paths, "CHECKPOINT_DIR", tmp_path / "no_checkpoints")
    monkeypatch.setattr(cdfi.evaluation.cli, "CHECKPOINT_DIR", tmp_path / "no_checkpoints")
    rc = test_cdfi.main(["--data_root", str(small_root), "--out_dir", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "CDFI_adacof.pth" in err[0] and "checkpoint not found" in err[0]


def test_in_memory_validation_matches_png_round_trip(small_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = make_model("compressed_adacof", 5, 1).train()
    items = middlebury_items(small_root)[:2]
    on_disk = evaluate_items(model, items, tmp_path / "val", progress=False, print_rows=False)
    in_memory = evaluate_items(model, items, None, progress=False, print_rows=False)
    assert model.training
    assert [r.psnr for r in on_disk.rows] == pytest.approx([r.psnr for r in in_memory.rows], abs=1e-9)
    assert [r.ssim for r in on_disk.rows] == pytest.approx([r.ssim for r in in_memory.rows], abs=1e-9)
    assert all(r.output is None for r in in_memory.rows)


def test_vimeo_test_split(
    data_root: Path, compressed_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vimeo = tmp_path / "vimeo_triplet"
    entries = ("00001/0001", "00002/0007")
    for entry, n in zip(entries, UCF, strict=True):
        for src, dst in (("frame_00.png", "im1.png"), ("frame_01_gt.png", "im2.png"), ("frame_02.png", "im3.png")):
            crop_copy(data_root / "ucf101_interp_ours" / n / src, vimeo / "sequences" / entry / dst, (0, 0, 64, 32))
    out = tmp_path / "out"
    args = [
        "--checkpoint",
        str(compressed_ckpt),
        "--vimeo_dir",
        str(vimeo),
        "--datasets",
        "vimeo90k",
        "--out_dir",
        str(out),
        "--no_progress",
    ]
    assert test_compressed_adacof.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "tri_testlist.txt" in err[-1] and "not found" in err[-1]
    (vimeo / "tri_testlist.txt").write_text("\n".join(entries) + "\n\n")
    assert test_compressed_adacof.main(args) == 0
    results = json.loads((out / "results.json").read_text())["sets"]["vimeo90k"]
    assert [i["name"] for i in results["items"]] == list(entries)
    for item in results["items"]:
        png = out / "vimeo90k_test" / item["name"] / "im2.png"
        gt = read_png(vimeo / "sequences" / item["name"] / "im2.png")
        assert item["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, read_png(png), data_range=1), abs=1e-6)


def _vimeo_split(data_root: Path, root: Path, count: int) -> list[str]:
    """A Vimeo-90K test split of ``count`` triplets: distinct, asymmetric 48x32 crops of UCF101 items."""
    entries = [f"{i // 4 + 1:05d}/{i % 4 + 1:04d}" for i in range(count)]
    for i, entry in enumerate(entries):
        src = data_root / "ucf101_interp_ours" / UCF101_ITEMS[i % len(UCF101_ITEMS)]
        box = (8 * i, 4 * i, 8 * i + 48, 4 * i + 32)
        for name, dst in (("frame_00.png", "im1.png"), ("frame_01_gt.png", "im2.png"), ("frame_02.png", "im3.png")):
            crop_copy(src / name, root / "sequences" / entry / dst, box)
    (root / "tri_testlist.txt").write_text("\n".join(entries) + "\n\n")
    return entries


UCF101_ITEMS = ("1", "11", "21", "31")


def _published_reader(root: Path, entries: list[str], seed: int) -> list[list[np.ndarray]]:
    """The published Vimeo-90K reader with its default augmentations, item by item in list order: PIL
    frames mirrored left-right on a coin, then top-bottom on a coin, converted, then served in reverse
    order on a coin; Python's global ``random`` seeded first. Returns [frame0, frame1 (gt), frame2]."""
    random.seed(seed)
    served = []
    for entry in entries:
        frames = [Image.open(root / "sequences" / entry / f"im{i}.png").convert("RGB") for i in (1, 2, 3)]
        if random.randint(0, 1):
            frames = [ImageOps.mirror(f) for f in frames]
        if random.randint(0, 1):
            frames = [ImageOps.flip(f) for f in frames]
        arrays = [np.asarray(f, dtype=np.float64) / 255.0 for f in frames]
        served.append(arrays[::-1] if random.randint(0, 1) else arrays)
    return served


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_vimeo_augment_serves_the_published_readers_views(data_root: Path, tmp_path: Path, seed: int) -> None:
    root = tmp_path / "vimeo"
    entries = _vimeo_split(data_root, root, 8)
    plain = load_benchmark_set("vimeo90k", vimeo_dir=root)
    augmented = published_vimeo_augment(plain, seed)
    for flag in ("hflip", "vflip", "reversed"):  # the seeds give both outcomes of every coin over 8 items
        assert {getattr(item, flag) for item in augmented.items} == {True, False}
    reference = _published_reader(root, entries, seed)
    for item, (frame0, gt, frame2) in zip(augmented.items, reference, strict=True):
        got = read_item(item)
        for ours, theirs in zip(got, (frame0, frame2, gt), strict=True):
            assert np.abs(_hwc(ours) - theirs).max() < 1e-6
    for item, entry in zip(plain.items, entries, strict=True):  # the default path: the files as they are
        assert item.views() == []
        files = [root / "sequences" / entry / f"im{i}.png" for i in (1, 3, 2)]
        for ours, path in zip(read_item(item), files, strict=True):
            assert np.abs(_hwc(ours) - read_png(path)).max() < 1e-6


def test_vimeo_augment_in_the_cli(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "vimeo"
    entries = _vimeo_split(data_root, root, 4)
    ckpt = save_lively(tmp_path / "lively.pth")
    model = lively_model()
    argv = ["--checkpoint", str(ckpt), "--vimeo_dir", str(root), "--datasets", "vimeo90k", "--no_progress"]
    runs = {"plain": [], "augmented": ["--vimeo_augment", "--seed", "3"]}
    for name, extra in runs.items():
        out = tmp_path / name
        assert test_compressed_adacof.main([*argv, "--out_dir", str(out), "--device", "cpu", *extra]) == 0
        results = json.loads((out / "results.json").read_text())
        served = _published_reader(root, entries, 3) if extra else None
        if extra:
            views = results["meta"]["vimeo_augment"]
            assert views["seed"] == 3 and list(views["views"]) == entries
        else:
            assert results["meta"]["vimeo_augment"] is None
        for i, item in enumerate(results["sets"]["vimeo90k"]["items"]):
            if served:
                frame0, gt, frame2 = served[i]
            else:
                frame0, gt, frame2 = (read_png(root / "sequences" / entries[i] / f"im{k}.png") for k in (1, 2, 3))
            pred = read_png(Path(item["output"]))
            with torch.no_grad():
                direct = model(*(torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in (frame0, frame2)))
            assert np.abs(direct[0].clamp(0, 1).permute(1, 2, 0).numpy() - pred).max() <= 1 / 255 + 1e-4
            assert item["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-6)
    capsys.readouterr()
    assert test_compressed_adacof.main([*argv[:2], "--vimeo_augment", "--out_dir", str(tmp_path / "x")]) == 2
    assert "--vimeo_augment changes only the vimeo90k set" in capsys.readouterr().err


# AdaCoF-pytorch's checkpoint/kernelsize_11/config.txt, abridged: three runs, the last one F11, no dilation.
ADACOF_CONFIG_11 = "2019-09-20-09:55:47\n\nmodel: adc\nkernel_size: 9\n\n2019-09-23-16:29:39\n\nkernel_size: 13\n\n"
ADACOF_CONFIG_11 += "2019-09-23-16:30:39\n\nmodel: adc\nkernel_size: 11\nflow_num: 30\n\n"


def test_adacof_pytorch_checkpoint_with_its_config(
    small_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "kernelsize_11"
    folder.mkdir()
    config = folder / "config.txt"
    config.write_text(ADACOF_CONFIG_11)
    torch.manual_seed(8)
    model = make_model("adacof", 11, 1).eval()
    torch.save({"epoch": 50, "state_dict": model.state_dict()}, folder / "ckpt.pth")  # the published format
    out = tmp_path / "out"
    argv = ["--config", str(config), "--data_root", str(small_root), "--datasets", "middlebury", "--limit", "1"]
    assert test_cdfi.main([*argv, "--out_dir", str(out), "--device", "cpu", "--no_progress"]) == 0
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert (meta["model"], meta["kernel_size"], meta["dilation"]) == ("adacof", 11, 1)
    assert meta["checkpoint"] == str(folder / "ckpt.pth") and meta["config"] == str(config)
    a, b = (read_png(small_root / "middlebury_others" / "input" / "Beanbags" / f) for f in MIDDLEBURY_INPUTS)
    written = torch.from_numpy(read_png(out / "middlebury_others" / "Beanbags" / "frame10i11.png"))
    as_d2 = make_model("adacof", 11, 2).eval()
    as_d2.load_state_dict(model.state_dict())
    with torch.no_grad():
        inputs = [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in (a, b)]
        want, other = (m(*inputs)[0].clamp(0, 1).permute(1, 2, 0) for m in (model, as_d2))
    assert (want - written.float()).abs().max() <= 1 / 255 + 1e-4  # built as F11/D1, the config's sizes
    assert (other - written.float()).abs().max() > 2 / 255  # which the paper's F11/D2 would not give

    assert mytest.main([*argv, "--out_dir", str(tmp_path / "m"), "--device", "cpu", "--no_progress"]) == 0
    assert (tmp_path / "m" / "middlebury_others" / "Beanbags" / "output.png").is_file()
    capsys.readouterr()
    bad = [
        ([*argv, "--kernel_size", "5"], f"--kernel_size 5 disagrees with {config}, which gives kernel_size 11"),
        ([*argv, "--checkpoint", str(tmp_path / "none.pth")], f"{tmp_path / 'none.pth'}: checkpoint not found"),
    ]
    for args, needle in bad:
        assert test_cdfi.main([*args, "--out_dir", str(tmp_path / "bad")]) == 2
        assert needle in capsys.readouterr().err
    assert mytest.main([*argv, "--model", "compressed_adacof", "--out_dir", str(tmp_path / "bad")]) == 2
    assert "drop --model compressed_adacof" in capsys.readouterr().err
    (folder / "ckpt.pth").unlink()
    assert test_cdfi.main([*argv, "--out_dir", str(tmp_path / "bad")]) == 2
    assert f"{folder / 'ckpt.pth'}: checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
