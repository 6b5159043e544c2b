"""AdaCoF warp entry point: bad input, backend choice and fallback, the build step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cupy_module.adacof as adacof_mod
from cupy_module import adacof_warp, adacof_warp_many, resolve_backend
from cupy_module import build as build_mod

REPO = Path(__file__).resolve().parents[1]


def good(n=1, c=3, f=3, d=2, h=4, w=5):
    p = (f - 1) * d
    return (
        torch.rand(n, c, h + p, w + p),
        torch.rand(n, f * f, h, w),
        torch.zeros(n, f * f, h, w),
        torch.zeros(n, f * f, h, w),
    )


def test_good_input_passes_and_non_contiguous_is_accepted():
    inp, _, a, b = good()
    wide = torch.rand(1, 9, 4, 10)[..., ::2]
    assert not wide.is_contiguous()
    assert adacof_warp(inp, wide, a, b, 2).shape == (1, 3, 4, 5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: (t[0].long(), *t[1:]), "float16, bfloat16, float32 or float64"),
        (lambda t: (t[0].to(torch.complex64), *t[1:]), "float16, bfloat16, float32 or float64"),
        (lambda t: (t[0][0], *t[1:]), "must be 4-D"),
        (lambda t: (t[0], t[1], t[2][:, :, :3], t[3]), "must have one shape"),
        (lambda t: (t[0], t[1][:, :8], t[2][:, :8], t[3][:, :8]), "not a square kernel size"),
        (lambda t: (t[0][:, :, 1:], *t[1:]), "does not match weights"),
        (lambda t: (t[0][:1].expand(2, -1, -1, -1), *t[1:]), "does not match weights"),
        (lambda t: (t[0][:, :0], *t[1:]), "is empty"),
        (lambda t: ([1.0], *t[1:]), "must be a tensor"),
    ],
)
def test_bad_tensors_raise_one_line_value_errors(change, message):
    with pytest.raises(ValueError, match=message) as info:
        adacof_warp(*change(good()), 2)
    assert "\n" not in str(info.value)


def test_inconsistent_dilation_and_bad_options():
    t = good(d=2)
    with pytest.raises(ValueError, match="does not match weights"):
        adacof_warp(*t, 1)
    for bad in (0, -1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="dilation must be a positive integer"):
            adacof_warp(*t, bad)
    with pytest.raises(ValueError, match="unknown sampling rule"):
        adacof_warp(*t, 2, sampling="round")
    with pytest.raises(ValueError, match="unknown backend"):
        adacof_warp(*t, 2, backend="opencl")
    with pytest.raises(ValueError, match="legacy_grad must be"):
        adacof_warp(*t, 2, legacy_grad=1)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        adacof_warp(*t, 2, backend="cupy")


def test_warp_many_rejects_mismatched_inputs():
    inp, w, a, b = good()
    with pytest.raises(ValueError, match="non-empty sequence"):
        adacof_warp_many([], w, a, b, 2)
    with pytest.raises(ValueError, match=r"inputs\[1\]"):
        adacof_warp_many([inp, inp[..., 1:]], w, a, b, 2)


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    def broken():
        raise build_mod.BuildError("no C++ compiler found (set CXX or install g++)")

    monkeypatch.setattr(adacof_mod, "cpu_library", broken)
    monkeypatch.setattr(adacof_mod, "_warned", set())
    with pytest.warns(RuntimeWarning, match="slow PyTorch reference") as record:
        out = adacof_warp(*good(), 2)
        again = adacof_warp(*good(), 2)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert out.shape == again.shape == (1, 3, 4, 5)


def test_auto_picks_the_compiled_cpu_backend():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"


def test_missing_compiler_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build_mod.BuildError, match="no C\\+\\+ compiler"):
        build_mod.find_compiler()


@pytest.mark.parametrize("module", ["cupy_module", "cupy_module.build"])
def test_build_command_builds_into_a_fresh_cache(tmp_path, module):
    env = {"CDFI_BUILD_DIR": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "cupy_module").glob("adacof_cpu-*.so"))
