"""Precision policy (cdfi/runtime/precision.py), every family under bf16 autocast + channels_last against fp32,
and the warp's dtype contract under autocast.

Tolerances, bf16 against fp32 on seeded random-weight models and 32x48 frames (bf16 keeps 8 bits of
mantissa, relative step 2^-8 = 0.0039; errors of ~20 chained convolutions partly average out):
output frames within 1e-2 absolute (mean 2e-3), regularisers within 1e-2 relative, the gradient of
all parameters within 0.1 relative (L2 norm of the difference over the norm of the fp32 gradient).
"""

from __future__ import annotations

import pytest
import torch

import cdfi.runtime.precision as precision
from cdfi.runtime.precision import (
    PrecisionError,
    autocast,
    default_inference_precision,
    make_grad_scaler,
    prepare_model,
    resolve_precision,
)
from cupy_module import adacof_warp
from models import make_model

FAMILIES = ["adacof", "compressed_adacof", "cdfi_adacof"]


def test_unknown_and_fp16_on_cpu_are_errors() -> None:
    for bad in ("fp64", "half", "", "bfloat"):
        with pytest.raises(PrecisionError, match="unknown precision"):
            resolve_precision(bad, "cpu")
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(PrecisionError):
        precision.autocast_dtype("fp8")


def test_names_resolve_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "BF16_DEFAULT_ON_CPU", False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "BF16_DEFAULT_ON_CPU", True)
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("BF16", torch.device("cpu")) == "bf16"
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision(None, "cpu") == "bf16"
    assert resolve_precision("fp16", "cuda") == "fp16"
    assert default_inference_precision("cuda") == "fp32"  # reduced precision measured no faster on a GPU
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert default_inference_precision("cpu") == "fp32"
    assert resolve_precision("auto", "cpu") == "fp32"


def test_bf16_without_native_support_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("bf16", "cpu") == "fp32"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "bf16" in captured.err and "fp32" in captured.err


def test_cpuinfo_flags(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert precision.cpu_bf16_flags(info) == {"avx512_bf16", "amx_bf16"}
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n")
    precision.cpu_bf16_flags.cache_clear()
    assert precision.cpu_bf16_flags(info) == frozenset()
    assert precision.cpu_bf16_flags(tmp_path / "missing") == frozenset()
    precision.cpu_bf16_flags.cache_clear()


def test_autocast_context_and_scaler() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert conv(x).dtype == torch.float32
    assert conv(x).dtype == torch.float32
    assert not make_grad_scaler("cpu", "bf16").is_enabled()
    assert not make_grad_scaler("cpu", "fp32").is_enabled()
    with pytest.raises(PrecisionError):
        make_grad_scaler("cpu", "fp16")


def test_prepare_model_memory_format() -> None:
    model = make_model("compressed_adacof")
    prepare_model(model, "cpu", "bf16", channels_last=True)
    conv = model.get_kernel.moduleConv1[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.dtype == torch.float32
    prepare_model(model, "cpu", "fp32", channels_last=False)
    assert conv.weight.is_contiguous()


def _run(model: torch.nn.Module, frames: tuple[torch.Tensor, ...], prec: str, channels_last: bool) -> dict:
    f0, f2, gt = frames
    prepare_model(model, "cpu", prec, channels_last=channels_last)
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad(), autocast("cpu", prec):
        eval_out = model(f0, f2)
    model.train()
    with autocast("cpu", prec):
        out = model(f0, f2)
        loss = (out["frame1"] - gt).abs().mean() + sum(v for k, v in out.items() if k.startswith("g_"))
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}
    regs = {k: float(v.detach()) for k, v in out.items() if k.startswith("g_")}
    return {"eval": eval_out, "frame1": out["frame1"].detach(), "regs": regs, "grads": grads}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_bf16_forward_backward_matches_fp32(name: str) -> None:
    model = make_model(name)
    f0 = torch.rand(1, 3, 32, 48)
    frames = (f0, (f0 + 0.2 * torch.rand_like(f0)).clamp(0, 1), torch.rand_like(f0))
    ref = _run(model, frames, "fp32", channels_last=False)
    low = _run(model, frames, "bf16", channels_last=True)
    for key in ("eval", "frame1"):
        assert low[key].dtype == torch.float32
        assert low[key].shape == f0.shape
        diff = (low[key] - ref[key]).abs()
        assert diff.max() <= 1e-2 and diff.mean() <= 2e-3, (key, float(diff.max()), float(diff.mean()))
    assert low["regs"].keys() == ref["regs"].keys()
    for k, v in ref["regs"].items():
        assert low["regs"][k] == pytest.approx(v, rel=1e-2)
    assert low["grads"].keys() == ref["grads"].keys()
    g_ref = torch.cat([g.flatten() for g in ref["grads"].values()])
    g_low = torch.cat([g.flatten() for g in low["grads"].values()])
    assert torch.isfinite(g_low).all()
    rel = float((g_low - g_ref).norm() / g_ref.norm())
    assert rel <= 0.1, rel


def _ramp_case(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """F=1 warp of a horizontal ramp over 600 columns with a +0.25 px offset: positions near 600 are
    not representable in bf16 (spacing 4), so any bf16 position arithmetic shows up."""
    width = 600
    ramp = (torch.arange(width, dtype=torch.float32) / 1024).view(1, 1, 1, width).expand(1, 2, 3, width)
    weight = torch.ones(1, 1, 3, width, dtype=dtype)
    off_i = torch.zeros(1, 1, 3, width, dtype=dtype)
    off_j = torch.full((1, 1, 3, width), 0.25, dtype=dtype)
    expected = ramp + 0.25 / 1024
    expected[..., -1] = ramp[..., -1]  # the tap right of the last column is clamped to the border
    return ramp.contiguous(), weight, off_i, off_j, expected


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_warp_under_autocast_keeps_input_dtype_and_fp32_positions(in_dtype: torch.dtype) -> None:
    ramp, weight, off_i, off_j, expected = _ramp_case(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adacof_warp(ramp.to(in_dtype), weight, off_i, off_j, 1)
    assert out.dtype == in_dtype
    # Exact in fp32; for a bf16 input, rounding of the input plus rounding of the output: one bf16
    # step (2^-8 for values in [0.5, 1)).
    atol = 1e-6 if in_dtype == torch.float32 else 2**-8
    expected = expected.to(in_dtype).float() if in_dtype == torch.bfloat16 else expected
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_warp_accumulates_in_fp32_under_autocast(in_dtype: torch.dtype) -> None:
    """121 taps of weight bf16(1/121) on a constant image: the fp32 sum is 0.99701; a bf16 running sum
    stalls near 0.953, far outside one bf16 rounding of the result."""
    f, h, w = 11, 3, 4
    image = torch.ones(1, 2, h + f - 1, w + f - 1, dtype=in_dtype)
    weight = torch.full((1, f * f, h, w), 1 / 121, dtype=torch.bfloat16)
    zeros = torch.zeros_like(weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adacof_warp(image, weight, zeros, zeros, 1)
    exact = float(weight[0, 0, 0, 0].double()) * f * f
    assert out.dtype == in_dtype
    atol = 1e-6 if in_dtype == torch.float32 else 2**-8
    torch.testing.assert_close(out.float(), torch.full_like(out, exact, dtype=torch.float32), atol=atol, rtol=0)


def test_warp_backward_under_autocast_matches_fp32() -> None:
    """Gradients for bf16 weights/offsets come back in their dtype and equal the fp32 gradients at the
    same (bf16-representable) values up to bf16 rounding of the gradient."""
    f, d, h, w = 3, 2, 5, 6
    p = (f - 1) * d
    image = torch.rand(1, 3, h + p, w + p)
    weight = torch.softmax(torch.randn(1, f * f, h, w), 1).bfloat16()
    off_i, off_j = (2 * torch.randn(1, f * f, h, w)).bfloat16(), (2 * torch.randn(1, f * f, h, w)).bfloat16()
    low = [t.clone().requires_grad_() for t in (image, weight, off_i, off_j)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adacof_warp(*low, d).square().sum().backward()
    ref = [t.float().clone().requires_grad_() for t in (image, weight, off_i, off_j)]
    adacof_warp(*ref, d).square().sum().backward()
    for a, b in zip(low, ref, strict=True):
        assert a.grad.dtype == a.dtype
        torch.testing.assert_close(a.grad.float(), b.grad, atol=1e-2, rtol=2**-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_softmax_reads_channels_last_in_place(dtype: torch.dtype) -> None:
    """The kernel-weight softmax of a channels_last input (reduced over the last dim of its (N, H, W, C)
    view) equals the softmax over dim 1 of the same values in fp32 up to float rounding and stays
    channels_last; planar inputs keep nn.Softmax's exact values."""
    from models.adacof import Float32Softmax

    torch.manual_seed(0)
    x = (4 * torch.randn(2, 25, 6, 7)).to(dtype)
    ref = torch.softmax(x.float(), 1)
    out = Float32Softmax(dim=1)(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(Float32Softmax(dim=1)(x), ref)


def test_spatial_regulariser_channels_last_path_equals_planar() -> None:
    """g_Spatial of channels_last heads (float32 softmax weights, bf16 offsets, as under autocast) is
    taken over the last dim of the (N, H, W, C) views: same value and gradients as the planar formula."""
    from models.adacof import spatial_regulariser

    g = torch.Generator().manual_seed(0)
    planar = {}
    for side in ("1", "2"):
        planar["Weight" + side] = torch.softmax(torch.randn(2, 9, 6, 7, generator=g), 1)
        for name in ("Alpha", "Beta"):
            planar[name + side] = (3 * torch.randn(2, 9, 6, 7, generator=g)).to(torch.bfloat16)
    cl = {k: v.to(memory_format=torch.channels_last).requires_grad_() for k, v in planar.items()}
    planar = {k: v.clone().requires_grad_() for k, v in planar.items()}
    a, b = spatial_regulariser(planar), spatial_regulariser(cl)
    a.backward()
    b.backward()
    torch.testing.assert_close(b, a, rtol=1e-6, atol=0)
    for k in planar:
        assert cl[k].grad.dtype == planar[k].grad.dtype
        torch.testing.assert_close(cl[k].grad, planar[k].grad)  # summation order: float rounding


def _channel_means_operands(channels: int, weight_dtype: torch.dtype, offset_dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cl = torch.channels_last
    w = torch.softmax(torch.randn(2, channels, 5, 7, generator=g), 1).to(weight_dtype).contiguous(memory_format=cl)
    a, b = (
        (3 * torch.randn(2, channels, 5, 7, generator=g)).to(offset_dtype).contiguous(memory_format=cl) for _ in "ab"
    )
    return w, a, b


@pytest.mark.parametrize("channels", [9, 121])
@pytest.mark.parametrize(
    "weight_dtype,offset_dtype",
    [(torch.float32, torch.bfloat16), (torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)],
)
def test_fused_channel_means_match_autograd(
    channels: int, weight_dtype: torch.dtype, offset_dtype: torch.dtype
) -> None:
    """The compiled g_Spatial channel means (one pass over channels_last weights and both offsets) equal
    the torch formula's values up to float rounding (summation order), and their gradients equal torch
    autograd's, in each argument's dtype and channels_last layout: bitwise for float32 weights (the same
    products; bf16 offset gradients rounded once as autograd's cast does); for bf16 weights, float32
    gradients rounded once to bf16 (autograd rounds each product's gradient before summing them)."""
    from models.adacof import _channel_mean_of_product, _ChannelMeansCPU

    w, a, b = _channel_means_operands(channels, weight_dtype, offset_dtype)
    g = torch.Generator().manual_seed(1)
    ga, gb = torch.randn(2, 1, 5, 7, generator=g), torch.randn(2, 1, 5, 7, generator=g)
    fused = [t.clone().requires_grad_() for t in (w, a, b)]
    ref = [t.clone().requires_grad_() for t in (w, a, b)]
    ma, mb = _ChannelMeansCPU.apply(*fused)
    ra, rb = _channel_mean_of_product(ref[0], ref[1]), _channel_mean_of_product(ref[0], ref[2])
    assert ma.dtype == torch.float32 and ma.shape == (2, 1, 5, 7)
    torch.testing.assert_close(ma, ra, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(mb, rb, rtol=1e-6, atol=1e-7)
    (ma * ga + mb * gb).sum().backward()
    (ra * ga + rb * gb).sum().backward()
    for f, r in zip(fused, ref, strict=True):
        assert f.grad.dtype == r.dtype and f.grad.is_contiguous(memory_format=torch.channels_last)
        if weight_dtype == torch.float32:
            assert torch.equal(f.grad, r.grad)
    if weight_dtype == torch.bfloat16:
        # autograd rounds each product's gradient to bf16 before summing; compare with float32 gradients
        # rounded once.
        exact = [t.float().requires_grad_() for t in (w, a, b)]
        ea, eb = _channel_mean_of_product(exact[0], exact[1]), _channel_mean_of_product(exact[0], exact[2])
        (ea * ga + eb * gb).sum().backward()
        for f, e in zip(fused, exact, strict=True):
            torch.testing.assert_close(f.grad, e.grad.to(f.dtype), rtol=8e-3, atol=1e-6)


def test_fused_channel_means_one_output_used() -> None:
    """Only one of the two means in the loss: the other's gradient is taken as zero."""
    from models.adacof import _channel_mean_of_product, _ChannelMeansCPU

    w, a, b = _channel_means_operands(121, torch.float32, torch.bfloat16)
    fused = [t.clone().requires_grad_() for t in (w, a, b)]
    ref = [t.clone().requires_grad_() for t in (w, a, b)]
    _ChannelMeansCPU.apply(*fused)[1].sum().backward()
    _channel_mean_of_product(ref[0], ref[2]).sum().backward()
    assert torch.equal(fused[0].grad, ref[0].grad) and torch.equal(fused[2].grad, ref[2].grad)
    assert torch.count_nonzero(fused[1].grad) == 0


def test_fused_channel_means_finite_differences() -> None:
    """Gradients of the compiled channel means against central differences: the means are linear in each
    argument, so the difference quotient along a direction in one argument is exact up to rounding."""
    from models.adacof import _ChannelMeansCPU

    w, a, b = (t.requires_grad_() for t in _channel_means_operands(121, torch.float32, torch.float32))
    g = torch.Generator().manual_seed(2)
    ga, gb = torch.randn(2, 1, 5, 7, generator=g), torch.randn(2, 1, 5, 7, generator=g)

    def loss(*args: torch.Tensor) -> torch.Tensor:
        ma, mb = _ChannelMeansCPU.apply(*args)
        return (ma * ga).double().sum() + (mb * gb).double().sum()

    loss(w, a, b).backward()
    with torch.no_grad():
        for k, grad in enumerate((w.grad, a.grad, b.grad)):
            d = torch.randn(w.shape, generator=g).contiguous(memory_format=torch.channels_last)
            args = [t.detach() for t in (w, a, b)]
            plus, minus = list(args), list(args)
            plus[k], minus[k] = args[k] + 0.5 * d, args[k] - 0.5 * d
            numeric = float(loss(*plus) - loss(*minus))
            analytic = float((grad.double() * d.double()).sum())
            assert abs(numeric - analytic) <= 1e-4 * max(1.0, abs(analytic))


def test_spatial_regulariser_planar_keeps_torch_formula() -> None:
    """Planar heads (the fp32 model without channels_last) do not take the compiled kernel: g_Spatial is
    exactly the torch formula of before."""
    from models.adacof import _channel_mean_of_product, smoothness, spatial_regulariser

    g = torch.Generator().manual_seed(3)
    k = {
        n: torch.randn(2, 121, 6, 7, generator=g) for n in ("Weight1", "Alpha1", "Beta1", "Weight2", "Alpha2", "Beta2")
    }
    total = torch.zeros(())
    for w, o in (("Weight1", "Alpha1"), ("Weight1", "Beta1"), ("Weight2", "Alpha2"), ("Weight2", "Beta2")):
        total = total + smoothness(_channel_mean_of_product(k[w], k[o]))
    assert torch.equal(spatial_regulariser(k), total)


def test_bf16_softmax_fused_backward_matches_autograd() -> None:
    """The kernel-weight softmax of bf16 channels_last logits that need a gradient (training under
    autocast) has the same forward values as before and a bf16 channels_last input gradient equal to
    torch autograd's up to float rounding, for a channels_last float32 output gradient (one compiled
    pass) and for a planar one (torch fallback)."""
    from models.adacof import Float32Softmax

    torch.manual_seed(0)
    x = (4 * torch.randn(2, 121, 5, 7)).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    for grad in (torch.randn(2, 121, 5, 7).contiguous(memory_format=torch.channels_last), torch.randn(2, 121, 5, 7)):
        fused, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = Float32Softmax(dim=1)(fused)
        expected = torch.softmax(ref.permute(0, 2, 3, 1), -1, dtype=torch.float32).permute(0, 3, 1, 2)
        assert torch.equal(out, expected) and out.is_contiguous(memory_format=torch.channels_last)
        out.backward(grad)
        expected.backward(grad)
        assert fused.grad.dtype == torch.bfloat16
        assert fused.grad.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fused.grad.float(), ref.grad.float(), rtol=8e-3, atol=1e-6)


def test_bf16_softmax_fused_backward_finite_differences() -> None:
    """The fused softmax gradient against central differences of the float32 softmax (float64 loss)."""
    from models.adacof import Float32Softmax

    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 9, 3, 4, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1, 9, 3, 4, generator=g, dtype=torch.float64)
    x.requires_grad_()
    (Float32Softmax(dim=1)(x).double() * w).sum().backward()
    xf = x.detach().double()
    for idx in ((0, 0, 0, 0), (0, 4, 1, 2), (0, 8, 2, 3)):
        e = torch.zeros_like(xf)
        e[idx] = 1e-4
        numeric = float(((torch.softmax(xf + e, 1) - torch.softmax(xf - e, 1)) * w).sum() / 2e-4)
        assert abs(float(x.grad[idx]) - numeric) <= 1e-2 * abs(numeric) + 1e-4
