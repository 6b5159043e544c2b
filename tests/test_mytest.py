"""mytest.py, the published evaluation script's face: its flags and defaults, the published file layout
and printout (rows recomputed with skimage on the written PNGs, the Average line against the mean of
the printed rows), results.json, and the bad-input cases (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_helpers import crop_copy, read_png, small_published_root
from inference_helpers import lively_model
from lpips_helpers import reference_lpips, save_backbone_as_torchvision
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import cdfi.evaluation.cli
import cdfi.io.paths
import mytest
from cdfi.evaluation.cli import build_parser
from cdfi.io.checkpoint import save_checkpoint
from models import make_model

MIDDLEBURY = ("Beanbags", "Dimetrodon")
UCF = ("1", "11")
VIMEO = ("00001/0001", "00002/0007")
VARIANT_F5 = ["--model", "compressed_adacof", "--kernel_size", "5", "--dilation", "1"]
VARIANT_F11 = ["--model", "compressed_adacof", "--kernel_size", "11", "--dilation", "2"]
# A published row: name and colon padded to 15, PSNR to 20, SSIM and lpips to 23, 16 decimals each.
ROW = re.compile(r"^(\S+): +(\S+) +(\S+) +(\S+) *$")


def _to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float().to(device)


@pytest.fixture()
def small_root(data_root: Path, tmp_path: Path) -> Path:
    """Cropped copies of two Middlebury and two UCF101 items, in the published data layout."""
    return small_published_root(data_root, tmp_path / "data", (160, 120, 224, 168), MIDDLEBURY, UCF)


@pytest.fixture()
def vimeo_dir(data_root: Path, tmp_path: Path) -> Path:
    """A two-triplet Vimeo-90K test split made of UCF101 crops."""
    vimeo = tmp_path / "vimeo_triplet"
    for entry, n in zip(VIMEO, UCF, strict=True):
        for src, dst in (("frame_00.png", "im1.png"), ("frame_01_gt.png", "im2.png"), ("frame_02.png", "im3.png")):
            crop_copy(data_root / "ucf101_interp_ours" / n / src, vimeo / "sequences" / entry / dst, (0, 0, 64, 32))
    (vimeo / "tri_testlist.txt").write_text("\n".join(VIMEO) + "\n\n")
    return vimeo


@pytest.fixture()
def published_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty checkpoints/ folder where the script looks (and for the shipped files), and the repository
    root under which it writes test_output/."""
    checkpoints, repo = tmp_path / "checkpoints", tmp_path / "repo"
    checkpoints.mkdir()
    repo.mkdir()
    monkeypatch.setattr(cdfi.evaluation.cli, "CHECKPOINT_DIR", checkpoints)
    monkeypatch.setattr(cdfi.io.paths, "CHECKPOINT_DIR", checkpoints)
    monkeypatch.setattr(cdfi.evaluation.cli, "REPO_ROOT", repo)
    return checkpoints, repo


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_flags_and_defaults_are_the_published_ones() -> None:
    parser = build_parser(mytest.FACE)
    args = parser.parse_args([])
    # --gpu_id unset means GPU 0 when there is one (the published default), without a note on the CPU
    assert (args.model, args.gpu_id, args.vimeo_dir, args.layout) == (None, None, None, "published")
    assert "cdfi_adacof" in parser.format_help() and "(default 11)" in parser.format_help()
    args = parser.parse_args(["--gpu_id", "1", *VARIANT_F5, "--vimeo_dir", "v"])
    assert (args.model, args.gpu_id, args.kernel_size, args.dilation, args.vimeo_dir) == (
        "compressed_adacof",
        1,
        5,
        1,
        "v",
    )
    with pytest.raises(SystemExit) as info:  # the published choices: cdfi_adacof, compressed_adacof
        parser.parse_args(["--model", "adacof"])
    assert info.value.code == 2
    assert "published evaluation" in " ".join(parser.format_help().split())  # --vimeo_augment says what it is


def test_published_layout_rows_average_and_results(
    small_root: Path,
    vimeo_dir: Path,
    published_dirs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoints, repo = published_dirs
    model = lively_model(3)
    save_checkpoint(checkpoints / "compressed_adacof_F_5_D_1.pth", model, epoch=0)
    reference = reference_lpips("squeeze")
    backbone = save_backbone_as_torchvision(reference, tmp_path / "squeeze.pth")
    argv = ["--gpu_id", "0", *VARIANT_F5, "--data_root", str(small_root), "--vimeo_dir", str(vimeo_dir)]
    rc = mytest.main([*argv, "--limit", "2", "--lpips_backbone", str(backbone), "--no_progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err

    out = repo / "test_output" / "compressed_adacof_F_5_D_1"
    assert _files(out) == {
        "results.json",
        *(f"middlebury_others/{seq}/output.png" for seq in MIDDLEBURY),
        *(f"ucf101-dvf/{n}/output.png" for n in UCF),
        "vimeo90k/0.png",
        "vimeo90k/1.png",
    }
    lines = captured.out.splitlines()
    assert lines[:4] == [
        "=" * 31,
        f"# of model parameters is: {sum(p.numel() for p in model.parameters())}",
        "Loading model compressed_adacof...",
        "Kernel size: 5, Dilation: 1",
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["layout"] == "published" and results["meta"]["model"] == "compressed_adacof"

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what --gpu_id 0 picks
    model.to(device)
    reference.to(device)
    sets = {
        "middlebury": ("Middlebury_others", "middlebury_others", MIDDLEBURY),
        "ucf101": ("UCF101-DVF", "ucf101-dvf", UCF),
    }
    for key, (title, folder, names) in sets.items():
        start = lines.index(f"Test: {title}")
        assert lines[start - 1] == "=" * 31
        assert lines[start + 1] == "PSNR".rjust(25) + "SSIM".rjust(21) + "lpips".rjust(21)
        rows = [ROW.match(line) for line in lines[start + 2 : start + 2 + len(names)]]
        assert [r.group(1) for r in rows] == list(names)
        assert all(len(line) == 15 + 20 + 23 + 23 for line in lines[start + 2 : start + 2 + len(names)])
        values = np.array([[float(r.group(i)) for i in (2, 3, 4)] for r in rows])
        assert lines[start + 2 + len(names)] == ""
        average = ROW.match(lines[start + 3 + len(names)])
        assert average.group(1) == "Average"
        assert [float(average.group(i)) for i in (2, 3, 4)] == pytest.approx(values.mean(0), abs=1e-12)
        for name, (psnr, ssim, lpips) in zip(names, values, strict=True):
            png = out / folder / name / "output.png"
            pred = read_png(png)
            if key == "middlebury":
                gt_path = small_root / "middlebury_others" / "gt" / name / "frame10i11.png"
                inputs = [small_root / "middlebury_others" / "input" / name / f for f in ("frame10.png", "frame11.png")]
            else:
                gt_path = small_root / "ucf101_interp_ours" / name / "frame_01_gt.png"
                inputs = [small_root / "ucf101_interp_ours" / name / f for f in ("frame_00.png", "frame_02.png")]
            gt = read_png(gt_path)
            assert psnr == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-6)
            assert ssim == pytest.approx(structural_similarity(gt, pred, data_range=1, channel_axis=-1), abs=1e-6)
            with torch.no_grad():
                assert lpips == pytest.approx(
                    reference(_to_tensor(pred, device), _to_tensor(gt, device)).item(), rel=1e-4, abs=1e-6
                )
                direct = model(*(_to_tensor(read_png(p), device) for p in inputs))[0].cpu().clamp(0, 1)
            written = torch.from_numpy(pred).permute(2, 0, 1).float()
            assert (direct - written).abs().max() <= 1 / 255 + 1e-4  # the library's model wrote this PNG
        entry = results["sets"][key]
        assert [i["name"] for i in entry["items"]] == list(names)
        assert [i["output"] for i in entry["items"]] == [str(out / folder / n / "output.png") for n in names]
        assert [i["psnr"] for i in entry["items"]] == pytest.approx(values[:, 0], abs=1e-12)

    start = lines.index("Test: Vimeo-90K")
    vimeo_rows = lines[start + 1 : start + 3]
    parsed = []
    for index, (entry, line) in enumerate(zip(VIMEO, vimeo_rows, strict=True)):
        match = re.fullmatch(r"idx: (\d+), psnr: (\S+), ssim: (\S+), lpips: (\S+)", line)
        assert match and int(match.group(1)) == index
        pred = read_png(out / "vimeo90k" / f"{index}.png")
        gt = read_png(vimeo_dir / "sequences" / entry / "im2.png")
        assert float(match.group(2)) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-6)
        parsed.append([float(match.group(i)) for i in (2, 3, 4)])
    means = [float(v) for v in lines[start + 3].split()]
    assert means == pytest.approx(np.mean(parsed, axis=0), abs=1e-5)  # the rows print 6 decimals
    assert lines[-1] == f"results: {out / 'results.json'}"


def test_shipped_checkpoint_stands_in_for_the_published_one(
    small_root: Path, published_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repo = published_dirs
    save_checkpoint(checkpoints / "compressed_adacof_F_5_D_1_ours.pth", lively_model(1), epoch=0)
    argv = [*VARIANT_F5, "--data_root", str(small_root), "--datasets", "middlebury", "--limit", "1"]
    assert mytest.main([*argv, "--no_progress"]) == 0
    err = capsys.readouterr().err
    assert "compressed_adacof_F_5_D_1.pth not found; using this project's own checkpoint" in err
    meta = json.loads((repo / "test_output" / "compressed_adacof_F_5_D_1" / "results.json").read_text())["meta"]
    assert meta["checkpoint"] == str(checkpoints / "compressed_adacof_F_5_D_1_ours.pth")


def test_f11_d2_with_its_published_file(
    small_root: Path, published_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repo = published_dirs
    torch.manual_seed(4)
    save_checkpoint(checkpoints / "compressed_adacof_F_11_D_2.pth", make_model("compressed_adacof", 11, 2), epoch=0)
    argv = ["--gpu_id", "0", *VARIANT_F11, "--data_root", str(small_root), "--datasets", "ucf101", "--limit", "1"]
    assert mytest.main([*argv, "--no_progress"]) == 0, capsys.readouterr().err
    out = repo / "test_output" / "compressed_adacof_F_11_D_2"
    assert _files(out) == {"results.json", "ucf101-dvf/1/output.png"}
    assert "Kernel size: 11, Dilation: 2" in capsys.readouterr().out


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_f11_d2_checkpoint_names_the_file_and_how_to_fetch_it(
    small_root: Path, published_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repo = published_dirs
    assert mytest.main(["--gpu_id", "0", *VARIANT_F11, "--data_root", str(small_root)]) == 2
    line = _one_error_line(capsys)
    assert str(checkpoints / "compressed_adacof_F_11_D_2.pth") in line
    assert "make weights" in line and "python checkpoints/download.py compressed_adacof_F_11_D_2" in line
    assert _files(repo) == set()


def test_missing_data_set_is_one_line(
    tmp_path: Path, published_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repo = published_dirs
    save_checkpoint(checkpoints / "compressed_adacof_F_5_D_1.pth", lively_model(), epoch=0)
    assert mytest.main([*VARIANT_F5, "--data_root", str(tmp_path / "nowhere")]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "nowhere" / "middlebury_others") in line and "not found" in line
    assert _files(repo) == set()


def test_checkpoint_of_another_variant_is_one_line(
    small_root: Path, published_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repo = published_dirs
    save_checkpoint(checkpoints / "compressed_adacof_F_11_D_2.pth", lively_model(), epoch=0)  # F5/D1 weights
    assert mytest.main([*VARIANT_F11, "--data_root", str(small_root), "--no_progress"]) == 2
    line = _one_error_line(capsys)
    assert "compressed_adacof F5/D1 weights" in line and "compressed_adacof F11/D2 was asked for" in line
    assert _files(repo) == set()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "compressed_adacof", "--kernel_size", "7", "--dilation", "1"], "no published checkpoint"),
        (["--model", "cdfi_adacof", "--kernel_size", "5", "--dilation", "1"], "published: F11/D2"),
        (["--limit", "0"], "--limit must be at least 1, got 0"),
        (["--datasets", "middlebury", "--vimeo_augment"], "--vimeo_augment changes only the vimeo90k set"),
    ],
)
def test_bad_settings_are_one_line(
    argv: list[str], needle: str, published_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert mytest.main(argv) == 2
    assert needle in _one_error_line(capsys)
    assert _files(published_dirs[1]) == set()
