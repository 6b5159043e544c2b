"""Every AdaCoF backend that runs without a GPU against the PyTorch reference: values, true and
published (legacy) gradients, gradcheck, dtypes and autocast, threads, the batched call."""

from __future__ import annotations

import pytest
import torch

import cupy_module.adacof
from cupy_module import adacof_warp, adacof_warp_many, adacof_warp_reference

BACKENDS = ["cpu", "cuda_shim"]


def make(n, c, f, d, h, w, spread=4.0, dtype=torch.float64, seed=0, off_integer=False):
    """Input, weights and offsets with negative and out-of-border offsets (|offset| up to ``spread``)."""
    g = torch.Generator().manual_seed(seed)
    p = (f - 1) * d
    inp = torch.rand(n, c, h + p, w + p, generator=g, dtype=torch.float64)
    wt = torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64)
    a = (torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64) - 0.5) * 2 * spread
    b = (torch.rand(n, f * f, h, w, generator=g, dtype=torch.float64) - 0.5) * 2 * spread
    if off_integer:  # fractions in [0.15, 0.85]: away from the kinks at integer offsets
        a = a.floor() + 0.15 + 0.7 * (a - a.floor())
        b = b.floor() + 0.15 + 0.7 * (b - b.floor())
    return [t.to(dtype) for t in (inp, wt, a, b)]


def grads(fn, tensors, grad_out=None):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    g = g if grad_out is None else grad_out
    out.backward(g)
    return out.detach(), [x.grad for x in leaves], g


SHAPES = [(2, 5, 3, 2, 5, 7), (1, 20, 5, 1, 4, 6), (1, 3, 1, 1, 3, 3), (2, 1, 2, 3, 3, 4), (1, 63, 3, 2, 3, 40)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["trunc", "floor"])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_float64(backend, rule, shape):
    n, c, f, d, h, w = shape
    tensors = make(n, c, f, d, h, w, spread=1.5 * f * d + 2)
    out, gs, g = grads(lambda *t: adacof_warp(*t, d, sampling=rule, backend=backend), tensors)
    ref, rgs, _ = grads(lambda *t: adacof_warp_reference(*t, d, rule), tensors, g)
    assert torch.allclose(out, ref, atol=1e-12)
    for mine, theirs in zip(gs, rgs, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["trunc", "floor"])
def test_matches_reference_float32(backend, rule):
    tensors = make(2, 6, 3, 2, 6, 5, spread=5.0, dtype=torch.float32)
    out, gs, g = grads(lambda *t: adacof_warp(*t, 2, sampling=rule, backend=backend), tensors)
    ref, rgs, _ = grads(lambda *t: adacof_warp_reference(*t, 2, rule), tensors, g)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=1e-5)
    for mine, theirs in zip(gs, rgs, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-4)


@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
@pytest.mark.parametrize("rule", ["trunc", "floor"])
def test_gradcheck(backend, rule):
    tensors = [t.requires_grad_() for t in make(1, 2, 2, 2, 3, 3, spread=4.0, seed=1, off_integer=True)]
    assert torch.autograd.gradcheck(
        lambda *t: adacof_warp(*t, 2, sampling=rule, backend=backend), tensors, eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
@pytest.mark.parametrize("c", [2, 3, 5])
def test_legacy_grad_is_the_published_backward(backend, c):
    """Zero input gradient; weight/offset gradients of the first three channels only."""
    tensors = make(2, c, 3, 1, 4, 5, spread=3.0)
    out, gs, g = grads(lambda *t: adacof_warp(*t, 1, legacy_grad=True, backend=backend), tensors)
    assert torch.allclose(out, adacof_warp_reference(*tensors, 1, "trunc"), atol=1e-12)
    assert torch.equal(gs[0], torch.zeros_like(tensors[0]))
    c3 = min(c, 3)
    first = [tensors[0][:, :c3], *tensors[1:]]
    _, rgs, _ = grads(lambda *t: adacof_warp_reference(*t, 1, "trunc"), first, g[:, :c3])
    for mine, theirs in zip(gs[1:], rgs[1:], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-11)
    _, true_gs, _ = grads(lambda *t: adacof_warp_reference(*t, 1, "trunc"), tensors, g)
    same = all(torch.allclose(x, y, atol=1e-11) for x, y in zip(gs[1:], true_gs[1:], strict=True))
    assert same == (c <= 3)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("h", "spread"), [(40, 0.9), (9, 30.0)])
def test_cpu_threads_agree(threads, h, spread):
    """Both multi-threaded input-gradient paths: direct two-phase writes (small offsets, tall row
    blocks) and per-thread buffers (offsets that land far outside), over several backward column
    strips (the last one partial)."""
    tensors = make(2, 4, 3, 2, h, 37, spread=spread, seed=5)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, gs, g = grads(lambda *t: adacof_warp(*t, 2, backend="cpu"), tensors)
    finally:
        torch.set_num_threads(before)
    ref, rgs, _ = grads(lambda *t: adacof_warp_reference(*t, 2, "trunc"), tensors, g)
    assert torch.allclose(out, ref, atol=1e-12)
    for mine, theirs in zip(gs, rgs, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-11)


@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input_computes_in_float32(backend, dtype):
    inp, wt, a, b = make(1, 4, 3, 1, 5, 5, spread=3.0, dtype=torch.float32)
    low = inp.to(dtype)
    out = adacof_warp(low, wt.to(dtype), a.to(dtype), b.to(dtype), 1, backend=backend)
    assert out.dtype == dtype
    expected = adacof_warp_reference(low.float(), wt.to(dtype).float(), a.to(dtype).float(), b.to(dtype).float(), 1)
    assert torch.allclose(out.float(), expected.to(dtype).float(), atol=0, rtol=0)
    leaves = [t.requires_grad_() for t in (low.clone(), wt.clone(), a.clone(), b.clone())]
    adacof_warp(*leaves, 1, backend=backend).float().sum().backward()
    assert leaves[0].grad.dtype == dtype and leaves[1].grad.dtype == torch.float32


@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
def test_autocast_leaves_the_warp_in_float32(backend):
    tensors = make(1, 3, 3, 2, 4, 4, spread=3.0, dtype=torch.float32)
    plain = adacof_warp(*tensors, 2, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = adacof_warp(*tensors, 2, backend=backend)
    assert auto.dtype == torch.float32
    assert torch.equal(auto, plain)


@pytest.mark.parametrize("backend", BACKENDS)
def test_warp_many_equals_separate_calls(backend):
    inp, wt, a, b = make(2, 7, 3, 2, 4, 5, spread=3.0)
    parts = [inp[:, :3], inp[:, 3:4].float(), inp[:, 4:]]
    leaves = [p.clone().requires_grad_() for p in parts]
    outs = adacof_warp_many(leaves, wt, a, b, 2, sampling="floor", backend=backend)
    assert [o.dtype for o in outs] == [p.dtype for p in parts]
    sum(o.double().sum() * (k + 1) for k, o in enumerate(outs)).backward()
    for k, (p, o, leaf) in enumerate(zip(parts, outs, leaves, strict=True)):
        x = p.clone().requires_grad_()
        single = adacof_warp(x, wt, a, b, 2, sampling="floor", backend=backend)
        (single.double().sum() * (k + 1)).backward()
        assert torch.allclose(o.double(), single.double(), atol=1e-6)
        assert torch.allclose(leaf.grad.double(), x.grad.double(), atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_gradient_skipped_when_input_needs_none(backend, monkeypatch):
    """A frame that needs no gradient: the kernel is told so, and the other gradients still match."""
    tensors = make(1, 63, 3, 2, 5, 21, spread=3.0)
    seen = []
    if backend == "cpu":  # the CPU path calls cpu.backward directly (need_input_grad is its 8th argument)
        original_cpu = cupy_module.cpu.backward

        def spy_cpu(*args, **kwargs):
            seen.append(args[7])
            return original_cpu(*args, **kwargs)

        monkeypatch.setattr(cupy_module.cpu, "backward", spy_cpu)
    else:
        original = cupy_module.adacof._backward

        def spy(name, *args):
            seen.append(args[-1])
            return original(name, *args)

        monkeypatch.setattr(cupy_module.adacof, "_backward", spy)
    params = [t.clone().requires_grad_() for t in tensors[1:]]
    out = adacof_warp(tensors[0], *params, 2, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    out.backward(g)
    assert seen == [False]
    _, rgs, _ = grads(lambda *t: adacof_warp_reference(*t, 2, "trunc"), tensors, g)
    for mine, theirs in zip(params, rgs[1:], strict=True):
        assert torch.allclose(mine.grad, theirs, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rule", ["trunc", "floor"])
@pytest.mark.parametrize("planar_weight", [False, True])
@pytest.mark.parametrize(("c", "f", "d", "h", "w"), [(1, 3, 2, 5, 7), (3, 2, 1, 9, 33), (63, 3, 2, 4, 37)])
def test_cpu_channels_last_weights_are_read_directly(dtype, rule, planar_weight, c, f, d, h, w):
    """Weights and offsets in channels_last layout (how convolutions hand them over; bf16 under
    autocast) go to the CPU kernel as they are, upcast tile by tile (tiles of 32 pixels, the last one
    partial), each tensor in its own layout (CDFI under autocast: float32 planes of softmax weights,
    bf16 channels_last offsets): the same values and gradients as float32 planes of the same numbers,
    and gradients in the arguments' dtype."""
    inp, wt, a, b = make(2, c, f, d, h, w, spread=5.0, dtype=torch.float32, seed=11)
    wt, a, b = (t.to(dtype) for t in (wt, a, b))
    for t in (wt, a, b):
        cl = t.to(memory_format=torch.channels_last)
        assert cupy_module.cpu.operand(cl, torch.float32) is cl
    planar, pgs, g = grads(
        lambda *t: adacof_warp(*t, d, sampling=rule, backend="cpu"), [inp, *(t.float() for t in (wt, a, b))]
    )
    leaves = [t.detach().clone().to(memory_format=torch.channels_last).requires_grad_() for t in (inp, wt, a, b)]
    if planar_weight:
        leaves[1] = wt.float().requires_grad_()
    out = adacof_warp(*leaves, d, sampling=rule, backend="cpu")
    out.backward(g)
    assert out.dtype == torch.float32 and torch.equal(out, planar)
    assert torch.equal(leaves[0].grad, pgs[0])
    for leaf, expected in zip(leaves[1:], pgs[1:], strict=True):
        assert leaf.grad.dtype == leaf.dtype
        assert torch.equal(leaf.grad.float(), expected.to(leaf.dtype).float())
    if c > 1:
        with torch.no_grad():
            low = leaves[0][:, 1:].to(torch.bfloat16)
            many = adacof_warp_many([leaves[0][:, :1], low], *leaves[1:], d, sampling=rule)
            assert torch.equal(many[0], planar[:, :1])
            assert torch.equal(many[1], adacof_warp(low, *leaves[1:], d, sampling=rule))
            assert many[1].dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", ["planar", "channels_last", "strided"])
def test_cpu_contiguous_as_equals_torch(dtype, layout):
    t = torch.randn(2, 7, 5, 6).to(dtype)
    if layout == "channels_last":
        t = t.to(memory_format=torch.channels_last)
    elif layout == "strided":
        t = t[..., ::2]
    for target in (torch.float32, torch.float64):
        mine = cupy_module.cpu.contiguous_as(t, target)
        assert mine.is_contiguous() and mine.dtype == target
        assert torch.equal(mine, t.to(target))


def test_warp_many_without_grad_equals_separate_calls():
    """The no-grad CPU path of the batched call (inputs packed straight into the kernel's layout)."""
    inp, wt, a, b = make(2, 13, 3, 2, 6, 9, spread=3.0, dtype=torch.float32, seed=2)
    parts = [inp[:, :3], inp[:, 3:7].to(torch.bfloat16), inp[:, 7:].to(memory_format=torch.channels_last)]
    with torch.no_grad():
        outs = adacof_warp_many(parts, wt, a, b, 2, sampling="floor")
    for p, o in zip(parts, outs, strict=True):
        assert o.dtype == p.dtype
        assert torch.equal(o, adacof_warp(p, wt, a, b, 2, sampling="floor"))


@pytest.mark.parametrize("rule", ["trunc", "floor"])
@pytest.mark.parametrize("c", [3, 13, 63, 70])
def test_warp_many_channels_last_inputs_give_channels_last_outputs(rule, c):
    """channels_last inputs (a channels_last model's tensors) come back channels_last, written so by
    the kernel, with bitwise the values of separate planar calls; channel counts cover whole groups of
    register blocks (63, 70) and the blocks left over (3, 13)."""
    inp, wt, a, b = make(2, c + 2, 5, 2, 7, 11, spread=3.0, dtype=torch.float32, seed=4)
    wl, al, bl = (t.to(torch.bfloat16).to(memory_format=torch.channels_last) for t in (wt, a, b))
    parts = [inp[:, :2], inp[:, 2:]]
    cl = [
        parts[0].to(memory_format=torch.channels_last),
        parts[1].to(torch.bfloat16, memory_format=torch.channels_last),
    ]
    with torch.no_grad():
        outs = adacof_warp_many(cl, wl, al, bl, 2, sampling=rule)
        for p, q, o in zip(parts, cl, outs, strict=True):
            assert o.dtype == q.dtype
            assert o.stride(1) == 1  # channels innermost: a channel slice of a channels_last buffer
            planar = adacof_warp(p.to(q.dtype).contiguous(), wl, al, bl, 2, sampling=rule)
            assert planar.is_contiguous()
            assert torch.equal(o, planar)


def test_legacy_grad_ignores_channels_beyond_three_of_the_packed_input():
    """The legacy backward reuses the forward's packed input but only its first three channels: an
    infinite value in a later channel must not reach the weight and offset gradients."""
    inp, wt, a, b = make(1, 6, 3, 1, 4, 5, spread=2.0)
    inp[:, 4, 2, 3] = float("inf")
    _, gs, g = grads(lambda *t: adacof_warp(*t, 1, legacy_grad=True, backend="cpu"), [inp, wt, a, b])
    _, rgs, _ = grads(lambda *t: adacof_warp_reference(*t, 1, "trunc"), [inp[:, :3], wt, a, b], g[:, :3])
    assert torch.equal(gs[0], torch.zeros_like(inp))
    for mine, theirs in zip(gs[1:], rgs[1:], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-11)


@pytest.mark.parametrize("rule", ["trunc", "floor"])
@pytest.mark.parametrize("c", [3, 13, 63])
def test_warp_many_with_grad_channels_last(rule, c):
    """The CPU batched warp with gradients (CDFI training under autocast): inputs packed once, a
    channels_last output for channels_last inputs, weight/offset gradients written by the kernel in
    their arguments' layout and dtype (bf16 channels_last), the output gradient read channels_last, and
    each input's gradient its slice of the kernel's buffer; all bitwise equal to one planar float32
    call of the same numbers."""
    inp, wt, a, b = make(2, c + 2, 5, 2, 7, 19, spread=3.0, dtype=torch.float32, seed=5)
    wl, al, bl = (t.to(torch.bfloat16).to(memory_format=torch.channels_last) for t in (wt, a, b))
    wl = wl.float().to(memory_format=torch.channels_last)  # softmax weights: float32 channels_last
    params = [t.detach().clone().requires_grad_() for t in (wl, al, bl)]
    parts = [
        inp[:, :2].to(memory_format=torch.channels_last).requires_grad_(),
        inp[:, 2:].to(torch.bfloat16).to(memory_format=torch.channels_last).requires_grad_(),
    ]
    outs = adacof_warp_many(parts, *params, 2, sampling=rule)
    assert outs[0].stride(1) == 1 and outs[1].dtype == torch.bfloat16
    g = torch.randn(2, c + 2, 7, 19, generator=torch.Generator().manual_seed(9))
    torch.autograd.backward(outs, [g[:, :2], g[:, 2:].to(torch.bfloat16)])
    ref_in = torch.cat([parts[0].detach(), parts[1].detach().float()], 1).requires_grad_()
    ref_params = [t.detach().float().contiguous().requires_grad_() for t in (wl, al, bl)]
    ref = adacof_warp(ref_in, *ref_params, 2, sampling=rule, backend="cpu")
    ref_g = torch.cat([g[:, :2], g[:, 2:].to(torch.bfloat16).float()], 1)
    ref.backward(ref_g)
    assert torch.equal(outs[0], ref[:, :2]) and torch.equal(outs[1], ref[:, 2:].to(torch.bfloat16))
    for p, r in zip(params, ref_params, strict=True):
        assert p.grad.dtype == p.dtype and p.grad.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(p.grad, r.grad.to(p.dtype))
    assert torch.equal(parts[0].grad, ref_in.grad[:, :2])
    assert parts[1].grad.dtype == torch.bfloat16
    assert torch.equal(parts[1].grad, ref_in.grad[:, 2:].to(torch.bfloat16))
