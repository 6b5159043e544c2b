"""interpolate_video.py robustness: resume refuses another frame naming, unwritable outputs fail before
any work, Ctrl-C leaves nothing behind, and output names and bad-input messages are what the docs say.

The model call is replaced by the mean of the two frames, so every test runs in well under a second
of compute on 64x48 frames; the checkpoint is a seeded compressed AdaCoF F5/D1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from inference_helpers import deny_writes, png_bomb, save_lively, save_rgb

import interpolate_video
from cdfi.inference.interpolator import Interpolator
from cdfi.io.images import read_image
from cdfi.io.video import MANIFEST, VideoWriter

H, W = 48, 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_lively(tmp_path_factory.mktemp("ckpt") / "seeded.pth")


@pytest.fixture(autouse=True)
def _mean_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model call is the mean of the two frames (what these tests check is not the model)."""
    monkeypatch.setattr(Interpolator, "_forward", lambda self, a, b: ((a + b) / 2).float())


def frame_folder(folder: Path, count: int = 3, size: tuple[int, int] = (H, W)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(count)
    for i in range(count):
        save_rgb(folder / f"{i:03d}.png", torch.rand(3, *size, generator=gen))
    return folder


def run(*args: str | Path) -> int:
    return interpolate_video.main([str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_error_line(err: str, *phrases: str) -> None:
    """``err`` ends in one ``error:`` line holding ``phrases``; anything before it is a note, no traceback."""
    *before, last = err.splitlines()
    assert last.startswith("error: ") and "Traceback" not in err, err
    assert all(line.startswith(("note: ", "model ")) for line in before), err
    for phrase in phrases:
        assert phrase in last, (phrase, err)


# --- problem 1: resuming into a folder made with another frame naming ------------------------------


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (("--index_from", "2"), "index_from=0, now 2"),
        (("--zpad", "3"), "zpad=5, now 3"),
        (("--img_format", ".jpg"), "img_format='.png', now '.jpg'"),
    ],
)
def test_resume_refuses_other_frame_naming(
    tmp_path: Path, ckpt: Path, flags: tuple[str, str], phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = frame_folder(tmp_path / "in")
    out = tmp_path / "out"
    base = ("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress")
    assert run(*base) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert run(*base, *flags) == 2
    one_error_line(capsys.readouterr().err, str(out), phrase, "--force")
    assert snapshot(out) == before
    # --force starts over in the new naming: no frame of the old naming is left to mix in
    assert run(*base, *flags, "--force") == 0
    frames = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    want = {
        "--index_from": [f"{i:05d}.png" for i in range(2, 7)],
        "--zpad": [f"{i:03d}.png" for i in range(5)],
        "--img_format": [f"{i:05d}.jpg" for i in range(5)],
    }[flags[0]]
    assert frames == want
    manifest = json.loads((out / MANIFEST).read_text())
    assert {k: manifest[k] for k in ("img_format", "zpad", "index_from")} == {
        "img_format": ".jpg" if flags[0] == "--img_format" else ".png",
        "zpad": 3 if flags[0] == "--zpad" else 5,
        "index_from": 2 if flags[0] == "--index_from" else 0,
    }


def test_resume_of_a_folder_from_before_naming_was_recorded(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest without the naming keys was written with the default naming: it still resumes."""
    inputs = frame_folder(tmp_path / "in")
    out = tmp_path / "out"
    base = ("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress")
    assert run(*base) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    for key in ("img_format", "zpad", "index_from"):
        del manifest[key]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert run(*base) == 0
    assert "resuming" in capsys.readouterr().err
    assert run(*base, "--index_from", "1") == 2
    one_error_line(capsys.readouterr().err, "index_from=0, now 1")


# --- problem 2: a PNG whose header claims a huge size ---------------------------------------------


def test_decompression_bomb_frame_is_one_line(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = frame_folder(tmp_path / "in", 2)
    png_bomb(inputs / "002.png", 20000, 20000)
    out = tmp_path / "out.mp4"
    assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 2
    one_error_line(capsys.readouterr().err, "002.png", "too large")
    assert not out.exists()


# --- problem 3: unwritable outputs ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["video", "folder", "gif"])
def test_unwritable_output_fails_before_any_work(
    tmp_path: Path,
    ckpt: Path,
    target: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = frame_folder(tmp_path / "in")
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_writes(monkeypatch, ro)
    out = ro / "clip.mp4" if target == "video" else ro / "frames" if target == "folder" else tmp_path / "clip.mp4"
    argv = ["--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress"]
    if target == "gif":
        argv += ["--gif", ro / "preview.gif"]
    assert run(*argv) == 1
    err = capsys.readouterr().err
    named = ro / "preview.gif" if target == "gif" else out
    one_error_line(err, f"{named}:", "Permission denied")
    assert "model " not in err  # refused before the model was loaded
    assert not (tmp_path / "clip.mp4").exists() and list(ro.iterdir()) == []


def test_output_under_a_file_fails_before_any_work(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real unwritable location (no privileges needed): the parent of the output is a file."""
    inputs = frame_folder(tmp_path / "in")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    for out in (blocker / "clip.mp4", blocker / "frames"):
        assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 1
        err = capsys.readouterr().err
        one_error_line(err, f"{out}:", "not a folder")
        assert "model " not in err
    argv = ("--input_video", inputs, "--output_video", tmp_path / "ok.mp4", "--checkpoint", ckpt, "--no_progress")
    assert run(*argv, "--gif", blocker / "p.gif") == 1
    one_error_line(capsys.readouterr().err, f"{blocker / 'p.gif'}:", "not a folder")
    assert not (tmp_path / "ok.mp4").exists()


def test_late_write_failure_names_the_output_not_the_temp_file(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder passes the early check, then refuses the real write (a full disk, say)."""
    inputs = frame_folder(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    deny_writes(monkeypatch, out_dir, probe_too=False)  # the early probe succeeds, the real write does not
    out = out_dir / "clip.mp4"
    assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 1
    err = capsys.readouterr().err
    one_error_line(err, f"{out}: cannot write", "Permission denied")
    assert ".tmp" not in err and list(out_dir.iterdir()) == []


# --- problem 4: Ctrl-C --------------------------------------------------------------------------


def test_ctrl_c_into_a_video_leaves_nothing(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: Interpolator, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise KeyboardInterrupt

    monkeypatch.setattr(Interpolator, "_forward", interrupted)
    inputs = frame_folder(tmp_path / "in")
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == f"interrupted; {out} was not written", err
    assert "" not in err.splitlines()
    assert list(out.parent.iterdir()) == []


# --- problem 5: output names and messages ---------------------------------------------------------


@pytest.mark.parametrize("suffix", [".webm", ".flv", ".ts"])
def test_video_container_it_cannot_write_is_refused(
    tmp_path: Path, ckpt: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = frame_folder(tmp_path / "in")
    out = tmp_path / f"clip{suffix}"
    assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 2
    one_error_line(capsys.readouterr().err, f"{out}:", suffix, ".mp4, .mkv, .mov, .avi, .m4v")
    assert not out.exists()


def test_folder_names_with_dots_are_still_folders(tmp_path: Path, ckpt: Path) -> None:
    inputs = frame_folder(tmp_path / "in")
    out = tmp_path / "run.v2"
    assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 0
    assert (out / "00000.png").is_file()


def test_default_output_name_keeps_the_whole_stem(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = frame_folder(tmp_path / "in")
    dotted = tmp_path / "my.clip.v2.mp4"
    with VideoWriter(dotted, Fraction(25)) as writer:
        for p in sorted(inputs.iterdir()):
            writer.write(read_image(p))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert run("--input_video", dotted, "--checkpoint", ckpt, "--no_progress") == 0
    assert sorted(os.listdir(work)) == ["my.clip.v2_x2.mp4"]
    assert run("--input_video", inputs, "--factor", "4", "--checkpoint", ckpt, "--no_progress") == 0
    assert sorted(os.listdir(work)) == ["in_x4.mp4", "my.clip.v2_x2.mp4"]


def test_frames_too_small_names_the_input(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = frame_folder(tmp_path / "tiny", size=(8, 8))
    out = tmp_path / "out.mp4"
    assert run("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress") == 2
    err = capsys.readouterr().err
    one_error_line(err, f"{inputs}: frames of 8x8 are too small")
    assert "model " not in err and not out.exists()


def test_output_that_is_the_input_is_refused_and_the_input_kept(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = frame_folder(tmp_path / "in")
    before = snapshot(inputs)
    link = tmp_path / "link"
    link.symlink_to(inputs, target_is_directory=True)
    # --zpad 3 names the output frames exactly as the input frames, so writing would overwrite them
    for out in (inputs, link, Path(f"{inputs}/")):
        code = run("--input_video", inputs, "--output_video", out, "--zpad", "3", "--force", "--checkpoint", ckpt)
        assert code == 2
        one_error_line(capsys.readouterr().err, f"{out}: is the input itself")
        assert snapshot(inputs) == before
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, Fraction(25)) as writer:
        for p in sorted(inputs.iterdir()):
            writer.write(read_image(p))
    data = clip.read_bytes()
    assert run("--input_video", clip, "--output_video", clip, "--force", "--checkpoint", ckpt, "--no_progress") == 2
    one_error_line(capsys.readouterr().err, f"{clip}: is the input itself")
    assert clip.read_bytes() == data


CTRL_C_ON_IMPORT = """
import runpy, sys
class CtrlC:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "cdfi.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC)
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", ["interpolate_video.py", "interpolate_twoframe.py"])
def test_ctrl_c_while_loading_is_one_line_and_130(script: str) -> None:
    """Ctrl-C during the imports (PyTorch takes a second or two to load) exits 130 with one line."""
    root = Path(interpolate_video.__file__).resolve().parent
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_ON_IMPORT, str(root / script)], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["interrupted; nothing was written"], done.stderr
