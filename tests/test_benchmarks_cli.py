"""Benchmark scripts: argument checks (one-line errors, no tracebacks) and outputs that are never overwritten
without --force; and the mode of the compiled warp library they time."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "argv", "needle"),
    [
        ("speed", ["--repeats", "0"], "--repeats must be at least 1, got 0"),
        ("precision", ["--repeats", "0"], "--repeats must be at least 1, got 0"),
        ("precision", ["--size", "0x0"], "both sides need at least 17 px"),
        ("warp", ["--sizes", "0x0"], "size '0x0': both sides need at least 17 px"),
        ("warp", ["--sizes", "64x64", "--repeat", "0"], "--repeat must be at least 1, got 0"),
        ("train_steps", ["--models", "foo"], "unknown model(s) foo"),
        ("train_steps", ["--crops", "64,x"], "expected a comma list of integers"),
        ("compression_check", ["--seeds", "-1"], "--seeds must be at least 1, got -1"),
        ("baselines", ["--limit", "-1"], "--limit must be at least 1, got -1"),
        ("baselines", ["--limit", "0"], "--limit must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_usage_errors(script: str, argv: list[str], needle: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        _script(script).main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_compression_check_interrupt_exits_130(capsys) -> None:
    module = _script("compression_check")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    module.check_variant = interrupted
    assert module.main(["--steps", "0"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_train_steps_missing_data_is_one_line(tmp_path: Path, capsys) -> None:
    argv = ["--models", "compressed_adacof", "--data", str(tmp_path / "nodata")]
    assert _script("train_steps").main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nodata'}: triplet folder not found\n"


def _refuses_then_forces(main, argv: list[str], out: Path, capsys) -> None:
    out.write_text("keep me")
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err == f"error: {out}: already exists (pass --force to overwrite)\n"
    assert out.read_text() == "keep me"
    assert main([*argv, "--force"]) == 0
    assert out.read_text() != "keep me"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary files left behind


def test_speed_json_is_not_overwritten_without_force(tmp_path: Path, capsys, one_thread) -> None:
    out = tmp_path / "speed.json"
    argv = ["--variants", "compressed_adacof_F_5_D_1", "--sizes", "32x32", "--devices", "cpu"]
    argv += ["--precision", "fp32", "--json", str(out)]
    _refuses_then_forces(_script("speed").main, argv, out, capsys)
    assert '"rows"' in out.read_text()


def test_train_steps_out_is_not_overwritten_without_force(tmp_path: Path, capsys, one_thread) -> None:
    out = tmp_path / "steps.json"
    argv = ["--models", "compressed_adacof", "--crops", "32", "--batches", "1", "--precisions", "fp32"]
    argv += ["--steps", "1", "--warmup", "0", "--out", str(out)]
    _refuses_then_forces(_script("train_steps").main, argv, out, capsys)
    assert '"steps_per_s"' in out.read_text()


def test_baselines_results_are_not_overwritten_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "overlay" / "results.json"
    out.parent.mkdir()
    out.write_text("keep me")
    argv = ["--baselines", "overlay", "--out_dir", str(tmp_path), "--data_root", str(tmp_path / "nodata")]
    assert _script("baselines").main(argv) == 2  # refused before looking for the data
    assert capsys.readouterr().err == f"error: {out}: already exists (pass --force to overwrite)\n"
    assert out.read_text() == "keep me"


def test_compiled_warp_library_is_readable_by_others(tmp_path: Path, monkeypatch) -> None:
    from cupy_module import build

    try:
        build.find_compiler()
    except build.BuildError:
        pytest.skip("no C++ compiler")
    source = tmp_path / "tiny.cpp"
    source.write_text('extern "C" int tiny() { return 7; }\n')
    monkeypatch.setenv("CDFI_BUILD_DIR", str(tmp_path / "build"))
    old = os.umask(0o022)
    try:
        path = build.compile_library(source, "tiny", ("-O0", "-fPIC", "-shared"), openmp=False)
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        path.chmod(0o711)  # as cached by earlier versions: loading it again repairs the mode
        assert build.compile_library(source, "tiny", ("-O0", "-fPIC", "-shared"), openmp=False) == path
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    finally:
        os.umask(old)
    if sys.platform.startswith("linux"):
        import ctypes

        assert ctypes.CDLL(str(path)).tiny() == 7


def test_baselines_ctrl_c_exits_130_without_results(tmp_path: Path, monkeypatch, capsys) -> None:
    module = _script("baselines")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    (tmp_path / "data" / "middlebury_others").mkdir(parents=True)
    monkeypatch.setattr(module, "evaluate_set", interrupted)
    argv = ["--baselines", "overlay", "--datasets", "middlebury", "--data_root", str(tmp_path / "data")]
    assert module.main([*argv, "--out_dir", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted; the results.json of the baseline in progress was not written"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["ensemble", "motion_check", "bf16_quality"])
def test_missing_data_is_one_line_exit_2(script: str, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "model.pth"
    from cdfi.io.checkpoint import save_checkpoint
    from cdfi.probe import lively_model

    save_checkpoint(ckpt, lively_model(), epoch=0)
    argv = ["--checkpoint", str(ckpt), "--data_root", str(tmp_path / "nodata")]
    assert _script(script).main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "nodata" / "middlebury_others") in err[0]


@pytest.mark.parametrize("script", ["ensemble", "motion_check", "bf16_quality"])
def test_missing_checkpoint_is_one_line_exit_2(script: str, tmp_path: Path, data_root: Path, capsys) -> None:
    argv = ["--checkpoint", str(tmp_path / "none.pth"), "--data_root", str(data_root), "--device", "cpu"]
    assert _script(script).main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning:")]
    assert err == [f"error: {tmp_path / 'none.pth'}: checkpoint not found"]


def test_bf16_quality_json_is_not_overwritten_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bf16.json"
    out.write_text("keep me")
    argv = ["--random", "compressed_adacof", "--data_root", str(tmp_path / "nodata"), "--json", str(out)]
    assert _script("bf16_quality").main(argv) == 2  # refused before looking for the data
    assert capsys.readouterr().err == f"error: {out}: already exists (pass --force to overwrite)\n"
    assert out.read_text() == "keep me"
