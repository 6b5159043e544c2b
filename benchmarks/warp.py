"""AdaCoF warp benchmark on CDFI shapes (F=11, D=2, 63 channels per side: frame + 5 feature maps).

Prints, for each size, forward and backward times of every available backend for the two warps of one
CDFI pass, and three ratios (cupy_module/README.md), all measured in this one run:
  warp/non-warp   warp forward time / time of the CDFI model with the warps replaced by free stand-ins
  ref/fast        reference forward time / fast backend forward time
  bwd/fwd         fast backend backward time / its forward time

    python benchmarks/warp.py [--sizes 256x256,640x480] [--repeat 2] [--reference-backward 128x128]
                              [--no-model] [--no-reference]

With --train it times the CuPy backend at CDFI's training shape instead (one warp of one side: batch 16,
256x256 output, 63 channels in channels_last memory as adacof_warp_many hands them over, fp32, kernel
sizes F11/D2 and F5/D1): forward, backward with all four gradients, backward without the input gradient,
and the bwd/fwd ratio of this run (goal <= 3), after checking the CuPy output and four gradients against
the reference on a small case (status 1 if they disagree). It needs a CUDA device with CuPy and exits with
status 2 and one line otherwise.

    python benchmarks/warp.py --train [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupy_module import adacof_warp, adacof_warp_reference
from cupy_module.cuda import cupy_available

F_SIZE, DILATION, CHANNELS = 11, 2, 63
TRAIN_BATCH, TRAIN_SIZE, TRAIN_KERNELS = 16, 256, ((11, 2), (5, 1))


def best_time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Best wall time of ``repeat`` calls (CUDA synchronised)."""
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def side_inputs(h: int, w: int, device: torch.device, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = (F_SIZE - 1) * DILATION
    taps = F_SIZE * F_SIZE
    inp = torch.rand(1, CHANNELS, h + p, w + p, generator=g)
    weight = torch.softmax(torch.randn(1, taps, h, w, generator=g), 1)
    oi = torch.randn(1, taps, h, w, generator=g) * 2
    oj = torch.randn(1, taps, h, w, generator=g) * 2
    return [t.to(device) for t in (inp, weight, oi, oj)]


def warp_times(backend: str, sides: list[list[torch.Tensor]], repeat: int, backward: bool) -> tuple[float, float]:
    """Forward and (optionally) backward time of the two warps of one CDFI pass."""
    device = sides[0][0].device

    def fwd() -> None:
        with torch.no_grad():
            for s in sides:
                adacof_warp(*s, DILATION, backend=backend)

    t_fwd = best_time(fwd, repeat, device)
    if not backward:
        return t_fwd, float("nan")
    best = float("inf")
    for _ in range(repeat):
        outs, leaves = [], []
        for s in sides:
            lv = [t.detach().clone().requires_grad_() for t in s]
            leaves.append(lv)
            outs.append(adacof_warp(*lv, DILATION, backend=backend))
        grads = [torch.ones_like(o) for o in outs]
        best = min(best, best_time(lambda o=outs, g=grads: torch.autograd.backward(o, g), 1, device))
    return t_fwd, best


def model_times(h: int, w: int, repeat: int, device: torch.device) -> tuple[float, float] | None:
    """(full CDFI forward, CDFI forward with free warp stand-ins), or None without models/.

    The stand-ins replace ``adacof_warp`` and ``adacof_warp_many`` wherever a module under ``models``
    imported them; if the model never calls them, the ratio would be meaningless and None is returned.
    """
    try:
        import models
        from models import make_model
    except Exception as exc:
        print(f"  (models/ not importable: {exc}; no warp/non-warp ratio)")
        return None
    model = make_model("cdfi_adacof", F_SIZE, DILATION).to(device).eval()
    g = torch.Generator().manual_seed(0)
    f0, f2 = (torch.rand(1, 3, h, w, generator=g).to(device) for _ in range(2))

    def run() -> None:
        with torch.no_grad():
            model(f0, f2)

    full = best_time(run, repeat, device)
    calls = [0]

    def free_warp(x: torch.Tensor, weight: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        calls[0] += 1
        return x.new_zeros(x.shape[0], x.shape[1], *weight.shape[2:])

    def free_warp_many(xs: list[torch.Tensor], weight: torch.Tensor, *_: object, **__: object) -> list[torch.Tensor]:
        return [free_warp(x, weight) for x in xs]

    stand_ins = {"adacof_warp": free_warp, "adacof_warp_many": free_warp_many}
    patched = [
        (module, name, getattr(module, name))
        for key, module in list(sys.modules.items())
        if key == models.__name__ or key.startswith(models.__name__ + ".")
        for name in stand_ins
        if hasattr(module, name)
    ]
    try:
        for module, name, _ in patched:
            setattr(module, name, stand_ins[name])
        rest = best_time(run, repeat, device)
    finally:
        for module, name, original in patched:
            setattr(module, name, original)
    if calls[0] == 0:
        print("  (the model called no patched warp; no warp/non-warp ratio)")
        return None
    return full, rest


def train_inputs(
    f: int, d: int, device: torch.device, seed: int = 0, n: int = TRAIN_BATCH, c: int = CHANNELS, size: int = TRAIN_SIZE
) -> list[torch.Tensor]:
    """Input (channels_last), softmax weights and offsets of one warp, made on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    taps, p = f * f, (f - 1) * d
    inp = torch.rand(n, c, size + p, size + p, generator=g, device=device)
    weight = torch.softmax(torch.randn(n, taps, size, size, generator=g, device=device), 1)
    oi = torch.randn(n, taps, size, size, generator=g, device=device) * 2
    oj = torch.randn(n, taps, size, size, generator=g, device=device) * 2
    return [inp.contiguous(memory_format=torch.channels_last), weight, oi, oj]


def train_times(tensors: list[torch.Tensor], d: int, repeat: int, input_grad: bool) -> tuple[float, float]:
    """Best forward and best backward time (seconds) of one warp with gradients, after one warm-up call."""
    device = tensors[0].device
    leaves = [t.detach().requires_grad_(k > 0 or input_grad) for k, t in enumerate(tensors)]
    wanted = leaves if input_grad else leaves[1:]
    best_fwd = best_bwd = float("inf")
    for r in range(repeat + 1):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = adacof_warp(*leaves, d, backend="cupy")
        torch.cuda.synchronize(device)
        mid = time.perf_counter()
        torch.autograd.grad(out, wanted, torch.ones_like(out))
        torch.cuda.synchronize(device)
        end = time.perf_counter()
        del out
        if r > 0:  # the first call compiles the kernels
            best_fwd, best_bwd = min(best_fwd, mid - start), min(best_bwd, end - mid)
    return best_fwd, best_bwd


def train_check(device: torch.device) -> float:
    """Largest relative error of the CuPy output and four gradients against the float64 reference on a
    small case (batch 2, 27x27, 20 channels, F5/D2), so that the timing run also checks the values."""
    tensors = train_inputs(5, 2, device, seed=1, n=2, c=20, size=27)
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = adacof_warp(*leaves, 2, backend="cupy")
    g = torch.randn(out.shape, generator=torch.Generator(device=device).manual_seed(3), device=device)
    mine = [out, *torch.autograd.grad(out, leaves, g)]
    ref_leaves = [t.detach().double().requires_grad_() for t in tensors]
    ref = adacof_warp_reference(*ref_leaves, 2)
    theirs = [ref, *torch.autograd.grad(ref, ref_leaves, g.double())]
    errors = [(x.double() - y).abs().max() / y.abs().max().clamp_min(1e-12) for x, y in zip(mine, theirs, strict=True)]
    return float(max(errors))


def train_main(repeat: int) -> int:
    """The --train mode: CuPy forward and backward at the training shape, and their ratio."""
    if not (torch.cuda.is_available() and cupy_available()):
        print("benchmarks/warp.py --train: needs a CUDA device with CuPy, none found; nothing timed", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    shape = f"batch {TRAIN_BATCH}, {TRAIN_SIZE}x{TRAIN_SIZE}, {CHANNELS} channels (channels_last), fp32"
    print(f"{torch.cuda.get_device_name(device)}, backend 'cupy', one warp: {shape}; ms, best of {repeat}")
    error = train_check(device)
    print(f"  value check against the reference (output and four gradients): max relative error {error:.1e}")
    if not error < 1e-4:
        print("  FAIL: the CuPy warp disagrees with the reference; timings not taken")
        return 1
    for f, d in TRAIN_KERNELS:
        tensors = train_inputs(f, d, device)
        fwd, bwd = train_times(tensors, d, repeat, input_grad=True)
        _, bwd_params = train_times(tensors, d, repeat, input_grad=False)
        ratio = f"bwd/fwd {bwd / fwd:5.2f} (goal <= 3)"
        print(f"  F={f:2d} D={d}  forward {fwd * 1e3:8.2f}  backward {bwd * 1e3:8.2f}  {ratio}")
        print(f"           backward without input gradient {bwd_params * 1e3:8.2f} ({bwd_params / fwd:.2f} x forward)")
        del tensors
        torch.cuda.empty_cache()
    return 0


def parse_sizes(text: str) -> list[str]:
    """``"256x256,640x480"`` checked as WIDTHxHEIGHT items (both sides at least 17 px); argparse type."""
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    for item in items:
        try:
            w, h = (int(v) for v in item.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
        if min(w, h) < 17:
            raise argparse.ArgumentTypeError(f"size {item!r}: both sides need at least 17 px")
    return items


def main(argv: list[str] | None = None) -> int:
    """Print the warp timings and ratios; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default="256x256,640x480", help="comma-separated WxH list")
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per measurement; the best is kept")
    parser.add_argument(
        "--reference-backward",
        type=parse_sizes,
        default="",
        help="sizes at which to also time the reference backward (needs GBs)",
    )
    parser.add_argument("--no-model", action="store_true", help="skip the full-model timing")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference forward (minutes at 640x480; no ref/fast ratio)"
    )
    parser.add_argument(
        "--train", action="store_true", help="time the CuPy backend at the training shape instead (needs CUDA)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.train:
        return train_main(args.repeat)
    if not args.sizes:
        parser.error("--sizes names no size")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fast = "cupy" if device.type == "cuda" and cupy_available() else "cpu"
    ref_bwd_sizes = set(args.reference_backward)
    print(f"device {device}, torch threads {torch.get_num_threads()}, fast backend {fast!r}")
    print(f"CDFI warps: F={F_SIZE}, D={DILATION}, 2 sides x {CHANNELS} channels; seconds, best of {args.repeat}")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        sides = [side_inputs(h, w, device, seed) for seed in (1, 2)]
        print(f"\n{w}x{h}")
        fast_fwd, fast_bwd = warp_times(fast, sides, args.repeat, backward=True)
        print(f"  {fast:9s} forward {fast_fwd:8.3f}  backward {fast_bwd:8.3f}")
        if not args.no_reference:
            ref_fwd, ref_bwd = warp_times("reference", sides, 1, backward=size in ref_bwd_sizes)
            print(f"  reference forward {ref_fwd:8.3f}  backward {ref_bwd:8.3f}")
        model = None if args.no_model else model_times(h, w, args.repeat, device)
        if not args.no_reference:
            print(f"  ratio ref/fast forward   {ref_fwd / fast_fwd:8.1f}   (goal >= 20)")
        print(f"  ratio bwd/fwd ({fast})    {fast_bwd / fast_fwd:8.2f}   (goal <= 3)")
        if model is not None:
            full, rest = model
            print(f"  CDFI forward {full:.3f}, with a free warp {rest:.3f} (warps inside the model {full - rest:.3f})")
            in_model = (full - rest) / rest
            print(f"  ratio warp/non-warp      {fast_fwd / rest:8.2f}   (goal <= 0.5; in the model {in_model:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
