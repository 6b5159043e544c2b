"""One-shot GPU check of the CuPy AdaCoF warp: correctness against the PyTorch reference and the CPU
backend (fp32 and fp16, both sampling rules, true and legacy gradients, fp64 gradcheck with a tolerance
for the order-nondeterministic atomicAdd of the input gradient), then timings
on CDFI shapes. Prints a compact table; exit status 1 if any check fails, 2 without CUDA or CuPy.

    python benchmarks/gpu_check.py [--sizes 640x480,1920x1080] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupy_module import adacof_warp, adacof_warp_reference
from cupy_module.cuda import cupy_available

FAILED: list[str] = []
# Allowed difference between two float64 backward passes on the same input (atomicAdd order).
NONDET_TOL = 1e-10


def report(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name:58s} {detail}")
    if not ok:
        FAILED.append(name)


def make(n, c, f, d, h, w, dtype, device, seed=0, off_integer=False):
    g = torch.Generator().manual_seed(seed)
    p = (f - 1) * d
    inp = torch.rand(n, c, h + p, w + p, generator=g, dtype=torch.float64)
    wt = torch.softmax(torch.randn(n, f * f, h, w, generator=g, dtype=torch.float64), 1)
    a = torch.randn(n, f * f, h, w, generator=g, dtype=torch.float64) * 3
    b = torch.randn(n, f * f, h, w, generator=g, dtype=torch.float64) * 3
    if off_integer:
        a = a.floor() + 0.15 + 0.7 * (a - a.floor())
        b = b.floor() + 0.15 + 0.7 * (b - b.floor())
    return [t.to(device=device, dtype=dtype) for t in (inp, wt, a, b)]


def run_grads(fn: Callable, tensors: list[torch.Tensor], g: torch.Tensor | None = None):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    if g is None:
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    out.backward(g)
    return out.detach(), [x.grad for x in leaves], g


def max_rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().cpu(), y.double().cpu()
    return float((x - y).abs().max() / y.abs().max().clamp_min(1e-12))


def check_values(dev: torch.device) -> None:
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        for rule in ("trunc", "floor"):
            for legacy in (False, True):
                name = f"cupy vs reference {str(dtype)[6:]} {rule}{' legacy' if legacy else ''}"
                try:
                    t = make(2, 20, 5, 2, 24, 31, dtype, dev, seed=1)
                    out, gs, g = run_grads(
                        lambda *x, r=rule, lg=legacy: adacof_warp(*x, 2, sampling=r, legacy_grad=lg, backend="cupy"), t
                    )
                    # Reference in fp64 on the CPU from the same (rounded) values.
                    t64 = [x.double().cpu() for x in t]
                    g64 = g.double().cpu()
                    src = [t64[0][:, :3], *t64[1:]] if legacy else t64
                    gsrc = g64[:, :3] if legacy else g64
                    ref, rgs, _ = run_grads(lambda *x, r=rule: adacof_warp_reference(*x, 2, r), src, gsrc)
                    errs = [max_rel(out, adacof_warp_reference(*t64, 2, rule))]
                    errs += [max_rel(m, r) for m, r in zip(gs[1:], rgs[1:], strict=True)]
                    if legacy:
                        errs.append(float(gs[0].abs().max()))
                    else:
                        errs.append(max_rel(gs[0], rgs[0]))
                    cpu_out = adacof_warp(*t64, 2, sampling=rule, backend="cpu")
                    errs.append(max_rel(out, cpu_out))
                    ok = out.dtype == dtype and max(errs) < tol
                    report(name, ok, "max rel err out/gw/ga/gb/gin/vs-cpu " + " ".join(f"{e:.1e}" for e in errs))
                except Exception:
                    report(name, False, traceback.format_exc(limit=2).replace("\n", " | "))
    # The input gradient is accumulated with atomicAdd, whose order (and so the last bits of a float64
    # sum) varies from run to run; gradcheck's reentrancy check compares two backward passes exactly,
    # so it gets a tolerance far below the gradient check's own (atol 1e-6) but above that rounding.
    for rule in ("trunc", "floor"):
        name = f"cupy gradcheck float64 {rule}"
        try:
            t = [x.requires_grad_() for x in make(1, 3, 3, 2, 4, 5, torch.float64, dev, seed=2, off_integer=True)]
            ok = torch.autograd.gradcheck(
                lambda *x, r=rule: adacof_warp(*x, 2, sampling=r, backend="cupy"),
                t,
                eps=1e-6,
                atol=1e-6,
                nondet_tol=NONDET_TOL,
            )
            report(name, bool(ok), "")
        except Exception:
            report(name, False, traceback.format_exc(limit=2).replace("\n", " | "))
    name = "cupy on a non-default stream"
    try:
        t = make(1, 63, 11, 2, 64, 64, torch.float32, dev, seed=4)
        s = torch.cuda.Stream(dev)
        s.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(s):
            out = adacof_warp(*t, 2, backend="cupy")
        torch.cuda.current_stream(dev).wait_stream(s)
        ref = adacof_warp(*t, 2, backend="reference")
        err = max_rel(out, ref)
        report(name, err < 1e-5, f"max rel err {err:.1e}")
    except Exception:
        report(name, False, traceback.format_exc(limit=2).replace("\n", " | "))


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def timings(dev: torch.device, sizes: list[tuple[int, int]], repeat: int) -> None:
    print("\ntimings: one CDFI side (63 channels, F=11, D=2), milliseconds, best of", repeat)
    print(f"{'size':>10s} {'dtype':>8s} {'backend':>10s} {'forward':>9s} {'backward':>9s} {'bwd/fwd':>8s}")
    for w, h in sizes:
        for dtype in (torch.float32, torch.float16):
            t = make(1, 63, 11, 2, h, w, dtype, dev, seed=5)
            for backend in ("cupy", "reference"):
                if backend == "reference" and w * h > 700_000:
                    continue
                try:
                    with torch.no_grad():
                        fwd = timed(lambda b=backend, x=t: adacof_warp(*x, 2, backend=b), repeat)
                    leaves = [x.detach().clone().requires_grad_() for x in t]

                    def both(b: str = backend, lv: list[torch.Tensor] = leaves) -> None:
                        adacof_warp(*lv, 2, backend=b).float().sum().backward()

                    fb = timed(both, repeat)
                    bwd = fb - fwd
                    print(
                        f"{f'{w}x{h}':>10s} {str(dtype)[6:]:>8s} {backend:>10s} {fwd * 1e3:9.2f} {bwd * 1e3:9.2f} "
                        f"{bwd / fwd:8.2f}"
                    )
                except Exception as exc:
                    print(f"{f'{w}x{h}':>10s} {str(dtype)[6:]:>8s} {backend:>10s} error: {exc!r}"[:200])
                torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", default="640x480,1920x1080", help="comma-separated WxH sizes to time (default 640x480,1920x1080)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed calls per measurement; the best is kept (default 5)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to PyTorch")
        return 2
    if not cupy_available():
        print("gpu_check: CuPy is not installed or sees no device (pip install cupy-cuda12x or cupy-cuda13x)")
        return 2
    import cupy

    dev = torch.device("cuda", torch.cuda.current_device())
    print(f"device {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, cupy {cupy.__version__}")
    check_values(dev)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    timings(dev, sizes, args.repeat)
    print(f"\n{len(FAILED)} check(s) failed" + (": " + ", ".join(FAILED) if FAILED else ""))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
