"""interpolate_twoframe.py and interpolate_video.py end to end on tiny inputs with a seeded checkpoint:
outputs against the model called directly, frame counts and order for every factor, fps metadata,
tiling, resume after an interruption, scene cuts, GIF preview, and bad input of every listed kind;
unwritable outputs and Ctrl-C in the two-frame tool and the evaluation scripts (more for the video
tool in test_video_cli.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from inference_helpers import (
    deny_writes,
    example_frames,
    lively_model,
    load_rgb,
    png_bomb,
    psnr,
    reference_middle,
    save_lively,
    save_rgb,
)
from PIL import Image

import cdfi.inference.cli
import cdfi.io.paths
import interpolate_twoframe
import interpolate_video
import models as cdfi_models
import test as test_cdfi
import test_compressed_adacof
from cdfi.inference.interpolator import Interpolator
from cdfi.io.video import MANIFEST

H, W = 40, 56


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_lively(tmp_path_factory.mktemp("ckpt") / "seeded.pth")


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    """Three 8-bit-exact frames with motion (quantised so that PNG round trips are lossless)."""
    a, b = example_frames(H, W)
    seq = [a, b, torch.roll(b, shifts=(2, 3), dims=(1, 2))]
    return [(f * 255).round() / 255 for f in seq]


def frame_folder(folder: Path, frames: list[torch.Tensor], names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(names or [f"{i:03d}.png" for i in range(len(frames))], frames, strict=True):
        save_rgb(folder / name, frame)
    return folder


def make_video(path: Path, frames: list[torch.Tensor], fps: Fraction) -> Path:
    """Encode frames with PyAV directly (independent of cdfi.io.video)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[-1], frames[0].shape[-2], "yuv420p"
        for frame in frames:
            array = (frame * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def probe(path: Path) -> tuple[int, Fraction, tuple[int, int]]:
    """(decoded frame count, average rate, (width, height)) read with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, Fraction(stream.average_rate), (stream.codec_context.width, stream.codec_context.height)


def average_forward(self: Interpolator, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
    """Stand-in for the model call: the mean, so 2^k recursion gives linear blends of the inputs."""
    self.calls += 1
    return ((frame0 + frame1) / 2).float()


def video(*args: str | Path) -> list[str]:
    return [str(a) for a in args]


# --- interpolate_twoframe.py ---------------------------------------------------------------------


def test_twoframe_matches_model(
    tmp_path: Path, ckpt: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    out = tmp_path / "mid.png"
    argv = [
        "--first_frame",
        str(a),
        "--second_frame",
        str(b),
        "--output_frame",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]  # the reference: fp32 on the CPU (GPUs use TF32)
    assert interpolate_twoframe.main(argv) == 0
    assert f"wrote {out.resolve()} ({W}x{H}" in capsys.readouterr().out
    got = load_rgb(out)
    want = reference_middle(lively_model(), frames[0], frames[1])
    assert got.shape == (3, H, W)
    assert float((got - want).abs().max()) <= 1 / 255 + 1e-6
    # An existing output needs --force and is left untouched without it.
    before = out.read_bytes()
    assert interpolate_twoframe.main([*argv, "--tile", "0"]) == 2
    assert "already exists (pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert interpolate_twoframe.main([*argv, "--force"]) == 0


def test_twoframe_without_arguments_uses_bundled_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo``: no arguments, the published default checkpoint missing, the shipped one used."""
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    monkeypatch.setattr(cdfi.io.paths, "CHECKPOINT_DIR", ckpt_dir)
    monkeypatch.setattr(cdfi.inference.cli, "DEFAULT_CHECKPOINT", ckpt_dir / "CDFI_adacof.pth")
    monkeypatch.chdir(tmp_path)
    assert interpolate_twoframe.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CDFI_adacof.pth: checkpoint not found" in err
    assert not (tmp_path / "output.png").exists()
    save_lively(ckpt_dir / cdfi.io.paths.SHIPPED_CHECKPOINTS["CDFI_adacof.pth"])
    assert interpolate_twoframe.main([]) == 0
    captured = capsys.readouterr()
    assert "using this project's own checkpoint" in captured.err
    assert f"wrote {(tmp_path / 'output.png').resolve()}" in captured.out
    assert Image.open(tmp_path / "output.png").size == Image.open(interpolate_twoframe.EXAMPLES / "0.png").size


def _bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """Unusable frames, each with the phrase its error message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gray = folder / "gray.png"
    Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(gray)
    rgba = folder / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (H, W, 4), dtype=np.uint8)).save(rgba)
    deep = folder / "deep.png"
    Image.fromarray(rng.integers(0, 65535, (H, W), dtype=np.uint16)).save(deep)
    broken = folder / "broken.png"
    broken.write_bytes(b"not an image at all")
    return {"gray": (gray, "gray"), "rgba": (rgba, "RGBA"), "deep": (deep, "16"), "broken": (broken, "not a readable")}


def test_twoframe_bad_inputs(
    tmp_path: Path, ckpt: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    good = save_rgb(tmp_path / "good.png", frames[0])
    other = save_rgb(tmp_path / "other.png", torch.rand(3, H, W + 1))
    out = tmp_path / "out.png"
    cases = {name: (path, phrase) for name, (path, phrase) in _bad_images(tmp_path / "bad").items()}
    cases["size"] = (other, "differ in size")
    cases["missing"] = (tmp_path / "missing.png", "no such file")
    for name, (path, phrase) in cases.items():
        argv = [
            "--first_frame",
            str(good),
            "--second_frame",
            str(path),
            "--output_frame",
            str(out),
            "--checkpoint",
            str(ckpt),
        ]
        assert interpolate_twoframe.main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert phrase in err and (path.name in err), (name, err)
        assert not out.exists(), name
    argv = ["--first_frame", str(good), "--second_frame", str(good), "--output_frame", str(out)]
    assert interpolate_twoframe.main([*argv, "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth: checkpoint not found" in capsys.readouterr().err
    assert interpolate_twoframe.main([*argv, "--checkpoint", str(ckpt), "--precision", "fp16", "--device", "cpu"]) == 2
    assert "fp16 is not supported on the CPU" in capsys.readouterr().err
    assert interpolate_twoframe.main([*argv, "--checkpoint", str(ckpt), "--kernel_size", "11"]) == 2
    assert "but compressed_adacof F11/D1 was asked for" in capsys.readouterr().err
    assert not out.exists()


def test_twoframe_odd_size_and_tiling(tmp_path: Path, ckpt: Path) -> None:
    a, b = example_frames(97, 131)
    fa, fb = save_rgb(tmp_path / "a.png", a), save_rgb(tmp_path / "b.png", b)
    outs = {}
    for tile in ("0", "96"):
        outs[tile] = tmp_path / f"out_{tile}.png"
        argv = [
            "--first_frame",
            str(fa),
            "--second_frame",
            str(fb),
            "--output_frame",
            str(outs[tile]),
            "--checkpoint",
            str(ckpt),
            "--tile",
            tile,
            "--tile_overlap",
            "32",
        ]
        assert interpolate_twoframe.main(argv) == 0
    untiled, tiled = load_rgb(outs["0"]), load_rgb(outs["96"])
    assert untiled.shape == tiled.shape == (3, 97, 131)
    assert psnr(tiled, untiled) > 35.0


def _readme_pair(folder: Path, frames: list[torch.Tensor]) -> None:
    """``imgs/0.png`` and ``imgs/1.png`` under ``folder``, as the published README's command names them."""
    (folder / "imgs").mkdir()
    save_rgb(folder / "imgs" / "0.png", frames[0])
    save_rgb(folder / "imgs" / "1.png", frames[1])


README_COMMAND = shlex.split(
    "--gpu_id 0 --first_frame imgs/0.png --second_frame imgs/1.png --output_frame ./output.png"
)
"""The published README's two-frame command, flags as written."""

GPU_NOTE = "note: --gpu_id 0: no CUDA GPU available; running on the CPU"


def test_published_readme_command_runs_on_the_cpu(
    tmp_path: Path, frames: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """#22: without CUDA, ``--gpu_id 0`` runs on the CPU with one line saying so (it used to exit 1)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    monkeypatch.setattr(cdfi.inference.cli, "DEFAULT_CHECKPOINT", save_lively(ckpt_dir / "CDFI_adacof.pth"))
    monkeypatch.chdir(tmp_path)
    _readme_pair(tmp_path, frames)
    assert interpolate_twoframe.main(README_COMMAND) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "CPU" in line or "cuda" in line.lower()] == [GPU_NOTE], err
    assert any(line.startswith("model compressed_adacof_F_5_D_1 from") and " on cpu (" in line for line in err), err
    got = load_rgb(tmp_path / "output.png")
    assert psnr(got, reference_middle(lively_model(), frames[0], frames[1])) > 30.0  # bf16 where native


def test_published_readme_command_as_a_process_without_cuda(tmp_path: Path, frames: list[torch.Tensor]) -> None:
    """The script itself, CUDA hidden, the default checkpoint (the published file or the shipped one)."""
    if (
        not cdfi.inference.cli.DEFAULT_CHECKPOINT.is_file()
        and not (cdfi.io.paths.CHECKPOINT_DIR / cdfi.io.paths.SHIPPED_CHECKPOINTS["CDFI_adacof.pth"]).is_file()
    ):
        pytest.skip("neither checkpoints/CDFI_adacof.pth nor the shipped replacement is present")
    _readme_pair(tmp_path, frames)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    script = Path(interpolate_twoframe.__file__).resolve()
    run = subprocess.run(
        [sys.executable, str(script), *README_COMMAND], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert GPU_NOTE in run.stderr.splitlines() and "Traceback" not in run.stderr
    assert f"wrote {(tmp_path / 'output.png').resolve()} ({W}x{H}" in run.stdout
    assert load_rgb(tmp_path / "output.png").shape == (3, H, W)


def test_published_variant_flags_that_do_not_fit_name_the_flags(
    tmp_path: Path, ckpt: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    """The published defaults --kernel_size 11 --dilation 2 (CDFI) against an F5/D1 file: one line naming the
    flags and the values that fit, exit 2, nothing written; AdaCoF-pytorch's --model adacofnet is adacof."""
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    out = tmp_path / "mid.png"
    cases = {
        ("--kernel_size", "11", "--dilation", "2"): "use --kernel_size 5 --dilation 1 or leave the flags out",
        ("--model", "adacofnet"): "use --model compressed_adacof or leave the flags out",
        ("--model", "cdfi_adacof", "--dilation", "2"): "use --model compressed_adacof --dilation 1 or leave",
    }
    for flags, advice in cases.items():
        assert interpolate_twoframe.main([*_twoframe_argv(a, b, out, ckpt), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith(f"error: {' '.join(flags).replace('adacofnet', 'adacof')}: {ckpt}: ") and advice in err
        assert err.count("\n") == 1 and not out.exists(), err
    for bad in (["--kernel_size", "0"], ["--dilation", "-1"]):
        assert interpolate_twoframe.main([*_twoframe_argv(a, b, out, ckpt), *bad]) == 2
        assert capsys.readouterr().err == f"error: {bad[0]} must be at least 1, got {bad[1]}\n"
    with pytest.raises(SystemExit) as info:
        interpolate_twoframe.main([*_twoframe_argv(a, b, out, ckpt), "--model", "gridnet"])
    assert info.value.code == 2 and not out.exists()


def lively_adacof(kernel_size: int, dilation: int) -> torch.nn.Module:
    """Full-width AdaCoF with seeded Kaiming weights (zero biases): outputs that depend on the dilation."""
    torch.manual_seed(1)
    model = cdfi_models.make_model("adacof", kernel_size, dilation)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            torch.nn.init.zeros_(mod.bias)
    return model.eval()


@pytest.fixture(scope="module")
def adacof_pytorch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AdaCoF-pytorch run folder: ckpt.pth ({'epoch', 'state_dict'}, no metadata) and its config.txt
    (two runs appended, the last with kernel_size 5 and dilation 2)."""
    folder = tmp_path_factory.mktemp("kernelsize_5")
    torch.save({"epoch": 50, "state_dict": lively_adacof(5, 2).state_dict()}, folder / "ckpt.pth")
    (folder / "config.txt").write_text(
        "2019-09-20-09:55:47\n\nmodel: adc\nkernel_size: 9\n\n"
        "2019-09-23-16:30:39\n\nmodel: adc\nkernel_size: 5\ndilation: 2\nflow_num: 30\n\n"
    )
    return folder


def test_adacof_pytorch_config(
    tmp_path: Path, adacof_pytorch_run: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    """--config: the ckpt.pth beside it loads as AdaCoF with the config's kernel size and dilation (D2 here,
    which the weights alone cannot show: the published rule would make an F5 file D1)."""
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    config = adacof_pytorch_run / "config.txt"
    want = reference_middle(lively_adacof(5, 2), frames[0], frames[1])
    d1 = cdfi_models.make_model("adacof", 5, 1)
    d1.load_state_dict(lively_adacof(5, 2).state_dict())
    assert psnr(want, reference_middle(d1.eval(), frames[0], frames[1])) < 40  # the dilation matters
    base = ["--first_frame", str(a), "--second_frame", str(b), "--device", "cpu", "--precision", "fp32"]
    agreeing = (["--config", str(config)], ["--config", str(config), "--model", "adacofnet", "--kernel_size", "5"])
    for i, flags in enumerate(agreeing):
        out = tmp_path / f"mid{i}.png"
        assert interpolate_twoframe.main([*base, "--output_frame", str(out), *flags]) == 0, flags
        err = capsys.readouterr().err
        assert f"model adacof_F_5_D_2 from {adacof_pytorch_run / 'ckpt.pth'} on cpu (fp32)" in err, err
        assert float((load_rgb(out) - want).abs().max()) <= 1 / 255 + 1e-6


def test_adacof_pytorch_config_that_does_not_fit_is_bad_input(
    tmp_path: Path,
    adacof_pytorch_run: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    config = adacof_pytorch_run / "config.txt"
    out = tmp_path / "mid.png"
    argv = ["--first_frame", str(a), "--second_frame", str(b), "--output_frame", str(out), "--config", str(config)]
    cases = [
        (["--kernel_size", "11"], f"--kernel_size 11 disagrees with {config}, which gives kernel_size 5; drop"),
        (["--dilation", "1"], f"--dilation 1 disagrees with {config}, which gives dilation 2; drop --dilation"),
        (["--model", "cdfi_adacof"], "--config loads an AdaCoF-pytorch checkpoint (model adacof); drop --model"),
        (["--checkpoint", str(ckpt)], f"--config {config}: {ckpt}: checkpoint holds compressed_adacof F5/D1"),
        (["--checkpoint", str(tmp_path / "none.pth")], "none.pth: checkpoint not found"),
    ]
    for flags, phrase in cases:
        assert interpolate_twoframe.main([*argv, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and phrase in err and err.count("\n") == 1, (flags, err)
    missing = tmp_path / "elsewhere" / "config.txt"
    assert interpolate_twoframe.main([*argv[:-1], str(missing)]) == 2
    assert f"{missing}: cannot read AdaCoF config" in capsys.readouterr().err
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "config.txt").write_text("kernel_size: 5\n")
    assert interpolate_twoframe.main([*argv[:-1], str(tmp_path / "only" / "config.txt")]) == 2
    assert f"{tmp_path / 'only' / 'ckpt.pth'}: checkpoint not found" in capsys.readouterr().err
    assert not out.exists()


# --- interpolate_video.py ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
def test_video_frame_counts_and_natural_order(
    tmp_path: Path, ckpt: Path, factor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names f1, f2, f10 must be taken in that order; with the mean as midpoint, output frame
    i * factor + k is the linear blend of inputs i and i + 1 (up to 8-bit rounding)."""
    monkeypatch.setattr(Interpolator, "_forward", average_forward)
    values = {"f10.png": 1.0, "f1.png": 0.0, "f2.png": 0.6}
    inputs = frame_folder(tmp_path / "in", [torch.full((3, 20, 24), v) for v in values.values()], list(values))
    out = tmp_path / "out"
    assert (
        interpolate_video.main(
            video(
                "--input_video",
                inputs,
                "--output_video",
                out,
                "--factor",
                factor,
                "--checkpoint",
                ckpt,
                "--no_progress",
            )
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert names == [f"{i:05d}.png" for i in range(2 * factor + 1)]
    ordered = [0.0, 0.6, 1.0]
    for i in range(2 * factor + 1):
        seg, k = divmod(i, factor)
        want = ordered[seg] if seg == 2 else ordered[seg] + (ordered[seg + 1] - ordered[seg]) * k / factor
        got = load_rgb(out / f"{i:05d}.png")
        assert abs(float(got.mean()) - want) <= 0.5 / 255 + 1e-6, (i, float(got.mean()), want)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["factor"] == factor and manifest["fps"] == str(25 * factor)


def test_video_file_to_video_fps_and_preview(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = make_video(tmp_path / "clip.mp4", frames, Fraction(10))
    out, gif = tmp_path / "slow.mp4", tmp_path / "preview.gif"
    assert (
        interpolate_video.main(
            video(
                "--input_video",
                src,
                "--output_video",
                out,
                "--factor",
                4,
                "--checkpoint",
                ckpt,
                "--gif",
                gif,
                "--gif_frames",
                5,
            )
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "frame/s" in captured.err  # the progress bar reports throughput
    assert probe(out) == (9, Fraction(40), (W, H))
    with Image.open(gif) as img:
        assert img.n_frames == 5 and img.size == (W, H)
    # --fps overrides the multiplied rate; the output exists, so --force is needed.
    monkeypatch.setattr(Interpolator, "_forward", average_forward)
    argv = video(
        "--input_video", src, "--output_video", out, "--factor", 2, "--fps", "24", "--checkpoint", ckpt, "--no_progress"
    )
    assert interpolate_video.main(argv) == 2
    assert "already exists (pass --force" in capsys.readouterr().err
    assert probe(out)[0] == 9
    assert interpolate_video.main([*argv, "--force"]) == 0
    assert probe(out) == (5, Fraction(24), (W, H))


def test_cpu_default_precision_is_bf16_where_native(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --precision the CLIs take the device default: bf16 on CPUs with native bf16, else fp32."""
    import cdfi.runtime.precision as precision

    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        out = tmp_path / f"mid_{expected}.png"
        argv = [
            "--first_frame",
            str(a),
            "--second_frame",
            str(b),
            "--output_frame",
            str(out),
            "--checkpoint",
            str(ckpt),
            "--device",
            "cpu",
        ]
        assert interpolate_twoframe.main(argv) == 0
        assert f"on cpu ({expected})" in capsys.readouterr().err
    want = reference_middle(lively_model(), frames[0], frames[1])
    assert float((load_rgb(tmp_path / "mid_fp32.png") - want).abs().max()) <= 1 / 255 + 1e-6


def test_video_middle_frames_match_model(tmp_path: Path, ckpt: Path, frames: list[torch.Tensor]) -> None:
    inputs = frame_folder(tmp_path / "in", frames)
    out = tmp_path / "out"
    assert (
        interpolate_video.main(
            video(
                "--input_video",
                inputs,
                "--output_video",
                out,
                "--checkpoint",
                ckpt,
                "--device",
                "cpu",
                "--precision",
                "fp32",
                "--no_progress",
            )
        )
        == 0
    )
    model = lively_model()
    for i in range(3):
        assert torch.equal(load_rgb(out / f"{2 * i:05d}.png"), frames[i])
    for i in range(2):
        want = reference_middle(model, frames[i], frames[i + 1])
        assert float((load_rgb(out / f"{2 * i + 1:05d}.png") - want).abs().max()) <= 1 / 255 + 1e-6


def test_video_odd_size_to_h264(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Interpolator, "_forward", average_forward)
    inputs = frame_folder(tmp_path / "in", [torch.rand(3, 41, 57) for _ in range(3)])
    out = tmp_path / "odd.mkv"
    assert (
        interpolate_video.main(
            video("--input", inputs, "--output", out, "--checkpoint", ckpt, "--fps", "30000/1001", "--no_progress")
        )
        == 0
    )
    assert "odd" in capsys.readouterr().err
    count, rate, size = probe(out)
    assert (count, size) == (5, (58, 42)) and abs(float(rate) - 30000 / 1001) < 1e-3


def test_video_resume_after_interruption(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(Interpolator, "_forward", average_forward)
    inputs = frame_folder(tmp_path / "in", frames)
    argv = video("--input_video", inputs, "--factor", 4, "--checkpoint", ckpt, "--no_progress")
    assert interpolate_video.main([*argv, *video("--output_video", tmp_path / "whole")]) == 0
    calls = []

    def interrupting(self: Interpolator, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:  # segment 0 done (3 calls), segment 1 half way
            raise KeyboardInterrupt
        return average_forward(self, a, b)

    monkeypatch.setattr(Interpolator, "_forward", interrupting)
    out = tmp_path / "resumed"
    assert interpolate_video.main([*argv, *video("--output_video", out)]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    partial = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert "00001.png" in partial and "00008.png" not in partial
    calls.clear()
    assert interpolate_video.main([*argv, *video("--output_video", out)]) == 0
    assert "resuming" in capsys.readouterr().err
    assert len(calls) == 3  # only segment 1 is recomputed
    assert all((out / name).stat().st_mtime_ns == t for name, t in partial.items())
    whole = sorted((tmp_path / "whole").glob("*.png"))
    assert [p.name for p in whole] == sorted(p.name for p in out.glob("*.png"))
    assert all(p.read_bytes() == (out / p.name).read_bytes() for p in whole)
    # Other settings do not silently mix into the folder.
    assert (
        interpolate_video.main(
            video("--input_video", inputs, "--factor", 2, "--checkpoint", ckpt, "--output_video", out, "--no_progress")
        )
        == 2
    )
    assert "factor=4" in capsys.readouterr().err
    assert interpolate_video.main([*argv, *video("--output_video", out, "--ensemble", 2)]) == 2
    assert "ensemble=None, now 2" in capsys.readouterr().err
    assert interpolate_video.main([*argv, *video("--output_video", out, "--prealign")]) == 2
    assert "prealign=None, now True" in capsys.readouterr().err
    monkeypatch.setattr(Interpolator, "_forward", average_forward)
    ens = tmp_path / "ensemble"
    assert interpolate_video.main([*argv, *video("--output_video", ens, "--ensemble", 2)]) == 0
    assert interpolate_video.main([*argv, *video("--output_video", ens)]) == 2  # and the other way round
    assert "ensemble=2, now None" in capsys.readouterr().err


def test_video_scene_cut_copies(
    tmp_path: Path, ckpt: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    cut = ((1 - frames[1]) * 255).round() / 255
    inputs = frame_folder(tmp_path / "in", [frames[0], frames[1], cut])
    out = tmp_path / "out"
    assert (
        interpolate_video.main(
            video(
                "--input_video",
                inputs,
                "--output_video",
                out,
                "--factor",
                4,
                "--scene_threshold",
                30,
                "--checkpoint",
                ckpt,
                "--no_progress",
            )
        )
        == 0
    )
    assert "1 scene cut(s) copied" in capsys.readouterr().out
    got = [load_rgb(out / f"{i:05d}.png") for i in range(9)]
    assert torch.equal(got[5], frames[1]) and all(torch.equal(g, cut) for g in got[6:9])
    assert not any(torch.equal(g, frames[0]) or torch.equal(g, frames[1]) for g in got[1:4])


def test_video_existing_folder_needs_force(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(Interpolator, "_forward", average_forward)
    inputs = frame_folder(tmp_path / "in", frames[:2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    save_rgb(out / "00007.png", frames[0])
    argv = video("--input_video", inputs, "--output_video", out, "--checkpoint", ckpt, "--no_progress")
    assert interpolate_video.main(argv) == 2
    assert "not empty (pass --force" in capsys.readouterr().err
    assert interpolate_video.main([*argv, "--force"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "00000.png",
        "00001.png",
        "00002.png",
        "notes.txt",
    ]


def test_video_bad_inputs(
    tmp_path: Path, ckpt: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    cases["empty folder"] = (empty, "holds no images")
    cases["one frame"] = (frame_folder(tmp_path / "one", frames[:1]), "only one frame")
    sizes = frame_folder(tmp_path / "sizes", [frames[0], frames[1], torch.rand(3, H + 2, W)])
    cases["sizes"] = (sizes, "002.png: frame is 56x42")
    for name, (path, phrase) in _bad_images(tmp_path / "bad").items():
        folder = frame_folder(tmp_path / f"with_{name}", frames[:2])
        path.rename(folder / "zz.png")
        cases[name] = (folder, phrase)
    cases["one-frame video"] = (make_video(tmp_path / "single.mp4", frames[:1], Fraction(25)), "only one frame")
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video")
    cases["not a video"] = (fake, "not a readable video")
    cases["missing"] = (tmp_path / "missing.mp4", "no such file")
    for name, (path, phrase) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}.mp4"
        rc = interpolate_video.main(
            video("--input_video", path, "--output_video", out, "--checkpoint", ckpt, "--no_progress")
        )
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err, (name, err)
        assert not out.exists() and not list(tmp_path.glob(".out_*")), name
    out_dir = tmp_path / "frames_out"
    assert interpolate_video.main(video("--input_video", sizes, "--output_video", out_dir, "--checkpoint", ckpt)) == 2
    assert not out_dir.exists()
    two = frame_folder(tmp_path / "two", frames[:2])
    assert (
        interpolate_video.main(video("--input_video", two, "--output_video", tmp_path / "x.gif", "--checkpoint", ckpt))
        == 2
    )
    assert "--gif" in capsys.readouterr().err


# --- robustness: unusable inputs and outputs, Ctrl-C ------------------------------------------------


def _twoframe_argv(a: Path, b: Path, out: Path, ckpt: Path) -> list[str]:
    return ["--first_frame", str(a), "--second_frame", str(b), "--output_frame", str(out), "--checkpoint", str(ckpt)]


def test_twoframe_folder_and_huge_image_as_input(
    tmp_path: Path, ckpt: Path, frames: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    good = save_rgb(tmp_path / "good.png", frames[0])
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)
    out = tmp_path / "mid.png"
    for bad, phrase in ((tmp_path, "is a folder"), (bomb, "image too large")):
        assert interpolate_twoframe.main(_twoframe_argv(bad, good, out, ckpt)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad}: {phrase}") and err.count("\n") == 1, err
        assert not out.exists()


def test_twoframe_unwritable_output_fails_before_inference(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    calls = []
    monkeypatch.setattr(Interpolator, "_forward", lambda self, x, y: calls.append(1) or (x + y) / 2)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_writes(monkeypatch, ro)
    folder_png = tmp_path / "folder.png"
    folder_png.mkdir()
    cases = [(blocker / "mid.png", "not a folder"), (ro / "mid.png", "Permission denied"), (folder_png, "is a folder")]
    for out, phrase in cases:
        for force in ([], ["--force"]):
            assert interpolate_twoframe.main([*_twoframe_argv(a, b, out, ckpt), *force]) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"error: {out}: ") and phrase in err and err.count("\n") == 1, err
    assert calls == [] and list(ro.iterdir()) == []


def test_twoframe_late_write_failure_names_the_output(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    deny_writes(monkeypatch, out_dir, probe_too=False)  # the early check passes, the write itself fails
    out = out_dir / "mid.png"
    assert interpolate_twoframe.main(_twoframe_argv(a, b, out, ckpt)) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"error: {out}: cannot write (Permission denied)" and "Traceback" not in err, err
    assert list(out_dir.iterdir()) == []


def test_twoframe_ctrl_c_exits_130_without_output(
    tmp_path: Path,
    ckpt: Path,
    frames: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(self: Interpolator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise KeyboardInterrupt

    monkeypatch.setattr(Interpolator, "_forward", interrupted)
    a, b = save_rgb(tmp_path / "a.png", frames[0]), save_rgb(tmp_path / "b.png", frames[1])
    out = tmp_path / "out" / "mid.png"
    assert interpolate_twoframe.main(_twoframe_argv(a, b, out, ckpt)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == f"interrupted; {out} was not written"
    assert not out.exists() and not list(tmp_path.glob("**/.mid.*"))


@pytest.mark.parametrize("script", [test_compressed_adacof, test_cdfi])
def test_evaluation_ctrl_c_exits_130_without_results(
    tmp_path: Path,
    ckpt: Path,
    script: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import cdfi.evaluation.cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cdfi.evaluation.cli, "resolve_data_root", interrupted)
    out_dir = tmp_path / "out"
    rc = script.main(["--checkpoint", str(ckpt), "--out_dir", str(out_dir), "--no_progress"])  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line] == ["interrupted; results.json was not written"]
    assert not out_dir.exists()
