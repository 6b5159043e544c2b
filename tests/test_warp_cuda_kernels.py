"""The CUDA kernels without a GPU: nvcc compiles them, and the host shim runs the very same source on
the CPU (thread by thread over a small launch grid, so the grid-stride loops wrap) to compare with the
PyTorch reference. The numeric comparison of every backend is in test_warp_backends.py (backend
"cuda_shim"); here: compilation, fp16 loading, launch-grid independence."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from cupy_module import adacof_warp_reference, cuda
from cupy_module.build import CUDA_SOURCE

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if shutil.which("/usr/local/cuda/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_every_kernel_compiles_with_nvcc(tmp_path):
    ptx = tmp_path / "adacof.ptx"
    proc = subprocess.run(
        [NVCC, "--ptx", "-arch=compute_75", "-Werror", "all-warnings", "-o", str(ptx), str(CUDA_SOURCE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    text = ptx.read_text()
    for kind in ("forward", "backward"):
        for suffix in ("f32", "f16", "f64"):
            assert f".entry adacof_{kind}_{suffix}(" in text


def make(c=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(2)
    n, f, d, h, w = 2, 3, 2, 5, 6
    p = (f - 1) * d
    inp = (torch.rand(n, c, h + p, w + p, generator=g) * 4 - 2).to(dtype)
    wt = torch.rand(n, f * f, h, w, generator=g)
    a = torch.randn(n, f * f, h, w, generator=g) * 4
    b = torch.randn(n, f * f, h, w, generator=g) * 4
    return inp, wt, a, b, d


@pytest.mark.parametrize(("block", "max_grid"), [(1, 1), (32, 3), (256, 1 << 20)])
@pytest.mark.parametrize("rule", ["trunc", "floor"])
def test_shim_results_do_not_depend_on_the_launch_grid(block, max_grid, rule):
    inp, wt, a, b, d = make()
    out = cuda.forward(cuda.shim_run, inp, wt, a, b, d, rule, block=block, max_grid=max_grid)
    assert torch.allclose(out, adacof_warp_reference(inp, wt, a, b, d, rule), atol=1e-5)
    g = torch.randn_like(out)
    gin, gw, gi, gj = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, rule, True, block=block, max_grid=max_grid)
    leaves = [t.clone().requires_grad_() for t in (inp, wt, a, b)]
    adacof_warp_reference(*leaves, d, rule).backward(g)
    for mine, ref in zip((gin, gw, gi, gj), leaves, strict=True):
        assert torch.allclose(mine, ref.grad, atol=1e-4)


def test_fp16_kernel_reads_half_bits_exactly():
    """Every finite fp16 value class (normal, subnormal, zero, negative) through the f16 kernel."""
    inp, wt, a, b, d = make(c=3)
    special = torch.tensor([0.0, -0.0, 6e-8, -3e-5, 1e-4, 65504.0, -2.5, 0.333], dtype=torch.float16)
    half = inp.to(torch.float16)
    half.view(-1)[: special.numel()] = special
    out = cuda.forward(cuda.shim_run, half, wt, a, b, d, "trunc", block=64, max_grid=5)
    expected = adacof_warp_reference(half.float(), wt, a, b, d, "trunc")
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
