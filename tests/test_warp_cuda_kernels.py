"""The CUDA kernels without a GPU: nvcc and NVRTC compile them, and the host shim runs the very same
source on the CPU (over small launch grids, so the grid-stride loops wrap; the backward's warp shuffles
on cooperative host threads) to compare with the PyTorch reference: forward, true and published
(legacy) backward, both sampling rules, F = 5 and 11, dilation 1 and 2, odd sizes, an input that
needs no gradient, every lane grouping of the backward, fp16 loading. test_warp_backends.py runs the
shared backend checks on "cuda_shim" as well."""

from __future__ import annotations

import ctypes
import glob
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cupy_module import adacof_warp, adacof_warp_reference, cuda
from cupy_module.build import CUDA_SOURCE

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if shutil.which("/usr/local/cuda/bin/nvcc") else None)
ENTRIES = [f"adacof_{kind}_{suffix}" for kind in ("forward", "backward") for suffix in ("f32", "f16", "f64")]


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
    for name in ENTRIES:
        assert f".entry {name}(" in text


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_every_kernel_compiles_for_sm90_without_spills(tmp_path):
    """Machine code for Hopper (the H200), with register spills and local memory made errors."""
    cubin = tmp_path / "adacof.cubin"
    cmd = [NVCC, "-cubin", "-arch=sm_90", "-Werror", "all-warnings", "-Xptxas", "-v,-warn-spills,-warn-lmem-usage"]
    proc = subprocess.run([*cmd, "-o", str(cubin), str(CUDA_SOURCE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ENTRIES:
        assert f"Compiling entry function '{name}' for 'sm_90'" in proc.stderr
    assert proc.stderr.count(" 0 bytes spill stores, 0 bytes spill loads") == len(ENTRIES)


def _nvrtc() -> ctypes.CDLL | None:
    """libnvrtc of the installed CUDA wheels or toolkit (its builtins loaded first), or None."""
    roots = []
    try:
        import nvidia

        roots += [Path(p) for p in nvidia.__path__]
    except ImportError:
        pass
    roots += [Path("/usr/local/cuda/lib64")]
    for root in roots:
        for lib in sorted(glob.glob(str(root / "**" / "libnvrtc.so*"), recursive=True)):
            if ".alt." in lib:
                continue
            try:
                for builtins in glob.glob(str(Path(lib).parent / "libnvrtc-builtins.so*")):
                    if ".alt." not in builtins:
                        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                return ctypes.CDLL(lib)
            except OSError:
                continue
    return None


NVRTC = _nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc not installed")
def test_source_compiles_with_nvrtc_as_cupy_does():
    """cupy.RawModule compiles the source with NVRTC (no include path, CuPy's default options)."""
    assert NVRTC is not None
    prog = ctypes.c_void_p()
    src = CUDA_SOURCE.read_bytes()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(prog), src, b"adacof_cuda.cu", 0, None, None) == 0
    try:
        options = [b"--gpu-architecture=compute_90", b"--device-as-default-execution-space"]
        rc = NVRTC.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(prog, log)
        assert rc == 0, log.value.decode(errors="replace")
        NVRTC.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetPTX(prog, ptx)
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    text = ptx.value.decode()
    for name in ENTRIES:
        assert f".entry {name}(" in text


def make(c=5, dtype=torch.float32, n=2, f=3, d=2, h=5, w=6, spread=4.0, seed=2):
    g = torch.Generator().manual_seed(seed)
    p = (f - 1) * d
    inp = (torch.rand(n, c, h + p, w + p, generator=g, dtype=torch.float64) * 4 - 2).to(dtype)
    wt = torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64).to(dtype)
    a = (torch.randn(n, f * f, h, w, generator=g, dtype=torch.float64) * spread).to(dtype)
    b = (torch.randn(n, f * f, h, w, generator=g, dtype=torch.float64) * spread).to(dtype)
    return inp, wt, a, b, d


def reference_grads(tensors, d, rule, g):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = adacof_warp_reference(*leaves, d, rule)
    out.backward(g)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("lanes", [None, 1, 2, 4, 16, 32])
@pytest.mark.parametrize(("block", "max_grid"), [(1, 1), (32, 3), (256, 1 << 20)])
@pytest.mark.parametrize("rule", ["trunc", "floor"])
def test_shim_results_do_not_depend_on_the_launch_grid(block, max_grid, rule, lanes):
    inp, wt, a, b, d = make()
    out = cuda.forward(cuda.shim_run, inp, wt, a, b, d, rule, block=block, max_grid=max_grid)
    assert torch.allclose(out, adacof_warp_reference(inp, wt, a, b, d, rule), atol=1e-5)
    g = torch.randn_like(out)
    grads = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, rule, True, block=block, max_grid=max_grid, lanes=lanes)
    leaves = [t.clone().requires_grad_() for t in (inp, wt, a, b)]
    adacof_warp_reference(*leaves, d, rule).backward(g)
    for mine, ref in zip(grads, leaves, strict=True):
        assert torch.allclose(mine, ref.grad, atol=1e-4)


@pytest.mark.parametrize("rule", ["trunc", "floor"])
@pytest.mark.parametrize(("f", "d"), [(5, 1), (5, 2), (11, 1), (11, 2)])
@pytest.mark.parametrize("mode", ["true", "input_needs_no_grad", "legacy"])
def test_shim_matches_the_reference_float64(mode, f, d, rule):
    """Through adacof_warp: odd sizes and channel count, offsets reaching past the border."""
    inp, wt, a, b, _ = make(c=5, dtype=torch.float64, n=2, f=f, d=d, h=5, w=7, spread=f * d * 0.75 + 1, seed=f + d)
    leaves = [t.clone().requires_grad_(k > 0 or mode != "input_needs_no_grad") for k, t in enumerate((inp, wt, a, b))]
    out = adacof_warp(*leaves, d, sampling=rule, legacy_grad=mode == "legacy", backend="cuda_shim")
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    out.backward(g)
    ref, rgs = reference_grads((inp, wt, a, b), d, rule, g)
    assert torch.allclose(out, ref, atol=1e-12)
    if mode == "legacy":  # zero input gradient; weight/offset gradients of the first three channels
        assert torch.equal(leaves[0].grad, torch.zeros_like(inp))
        _, rgs = reference_grads((inp[:, :3], wt, a, b), d, rule, g[:, :3])
    elif mode == "input_needs_no_grad":
        assert leaves[0].grad is None
    else:
        assert torch.allclose(leaves[0].grad, rgs[0], atol=1e-11)
    for mine, theirs in zip(leaves[1:], rgs[1:], strict=True):
        assert torch.allclose(mine.grad, theirs, atol=1e-11)


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("c", [1, 3, 13])
def test_every_lane_grouping_matches_the_reference(c, lanes):
    """Groups wider and narrower than the channel count, channel counts not a multiple of the group."""
    inp, wt, a, b, d = make(c=c, dtype=torch.float64, n=1, f=5, d=1, h=3, w=7, spread=3.0, seed=c)
    g = torch.randn(1, c, 3, 7, generator=torch.Generator().manual_seed(c), dtype=torch.float64)
    _, rgs = reference_grads((inp, wt, a, b), d, "floor", g)
    grads = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, "floor", True, block=64, max_grid=2, lanes=lanes)
    for mine, theirs in zip(grads, rgs, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-11)


def test_backward_float32_with_cdfi_channels_and_layouts():
    """63 channels (a CDFI stack) in fp32, planar or channels_last, with and without the input gradient;
    the input gradient comes back as a channels-last view with rows padded to 64 elements."""
    inp, wt, a, b, d = make(c=63, dtype=torch.float32, n=1, f=5, d=1, h=5, w=9, spread=3.0)
    g = torch.randn(1, 63, 5, 9, generator=torch.Generator().manual_seed(4))
    _, rgs = reference_grads((inp.double(), wt.double(), a.double(), b.double()), d, "trunc", g.double())
    nhwc = inp.contiguous(memory_format=torch.channels_last)
    for need in (True, False):
        planar = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, "trunc", need, block=32, max_grid=5)
        in_place = cuda.backward(cuda.shim_run, nhwc, wt, a, b, g, d, "trunc", need, block=32, max_grid=5)
        first = 0 if need else 1
        assert need or (planar[0] is None and in_place[0] is None)
        for x, y, ref in zip(planar[first:], in_place[first:], rgs[first:], strict=True):
            assert x.dtype == torch.float32 and torch.equal(x, y)
            assert torch.allclose(x.double(), ref, rtol=1e-5, atol=1e-4)
    gin = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, "trunc", True)[0]
    assert gin.shape == inp.shape and gin.stride() == (64 * 9 * 13, 1, 64 * 13, 64)


def test_backward_reads_channel_slices_of_channels_last_tensors_in_place():
    """Rows with a stride above the channel count (a channel slice of a channels_last tensor), as the
    published backward hands over the first three channels; and a strided output gradient."""
    inp, wt, a, b, d = make(c=10, dtype=torch.float64, n=2, f=3, d=2, h=4, w=5)
    g = torch.randn(2, 10, 4, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    nhwc, g_nhwc = (t.contiguous(memory_format=torch.channels_last) for t in (inp, g))
    rows, stride = cuda._channel_rows(nhwc[:, :3], torch.float64)
    assert stride == 10 and rows.data_ptr() == nhwc.data_ptr()
    _, rgs = reference_grads((inp[:, :3], wt, a, b), d, "floor", g[:, :3])
    grads = cuda.backward(cuda.shim_run, nhwc[:, :3], wt, a, b, g_nhwc[:, :3], d, "floor", False)
    assert grads[0] is None
    for mine, theirs in zip(grads[1:], rgs[1:], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-12)
    _, rgs = reference_grads((inp[:, 2:7], wt, a, b), d, "floor", g[:, 2:7])
    grads = cuda.backward(cuda.shim_run, nhwc[:, 2:7], wt, a, b, g_nhwc[:, 2:7], d, "floor", True)
    for mine, theirs in zip(grads, rgs, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-12)


def test_input_gradient_is_skipped_when_not_needed():
    inp, wt, a, b, d = make(c=7)
    g = torch.randn(2, 7, 5, 6, generator=torch.Generator().manual_seed(5))
    with_input = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, "trunc", True)
    without = cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, "trunc", False)
    assert without[0] is None and with_input[0] is not None
    for x, y in zip(with_input[1:], without[1:], strict=True):
        assert torch.equal(x, y)


def test_fp16_backward_reads_half_input_and_accumulates_in_float32():
    inp, wt, a, b, d = make(c=6)
    half = inp.to(torch.float16)
    g = torch.randn(2, 6, 5, 6, generator=torch.Generator().manual_seed(6))
    grads = cuda.backward(cuda.shim_run, half, wt, a, b, g, d, "floor", True, block=64, max_grid=3)
    _, rgs = reference_grads((half.double(), wt.double(), a.double(), b.double()), d, "floor", g.double())
    for mine, theirs in zip(grads, rgs, strict=True):
        assert mine.dtype == torch.float32
        assert torch.allclose(mine.double(), theirs, rtol=1e-5, atol=1e-5)


def test_backward_lanes_row_strides_and_validation():
    channels = (1, 2, 3, 5, 8, 12, 63, 256)
    assert [cuda.backward_lanes(c) for c in channels] == [1, 2, 4, 8, 8, 8, 8, 8]
    assert [cuda._row_stride(c) for c in channels] == [1, 2, 4, 8, 8, 16, 64, 256]
    inp, wt, a, b, d = make()
    g = torch.zeros(2, 5, 5, 6)
    with pytest.raises(ValueError, match="power of two"):
        cuda.backward(cuda.shim_run, inp, wt, a, b, g, d, "trunc", True, lanes=3)


def test_fp16_kernel_reads_half_bits_exactly():
    """Every finite fp16 value class (normal, subnormal, zero, negative) through the f16 kernel."""
    inp, wt, a, b, d = make(c=3)
    special = torch.tensor([0.0, -0.0, 6e-8, -3e-5, 1e-4, 65504.0, -2.5, 0.333], dtype=torch.float16)
    half = inp.to(torch.float16)
    half.view(-1)[: special.numel()] = special
    out = cuda.forward(cuda.shim_run, half, wt, a, b, d, "trunc", block=64, max_grid=5)
    expected = adacof_warp_reference(half.float(), wt, a, b, d, "trunc")
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
