"""One-shot check of the inference API on a machine with a GPU (and of 4K memory on its CPU).

GPU: fp32 output against the CPU, fp16/bf16 against fp32, tiled against untiled, a batch against single
pairs (a small seeded model with lively, input-dependent offsets), and a 4K CDFI pair with automatic
tiling (time and peak memory). CPU: a 4K CDFI pair with automatic tiling in a child process, its peak
resident memory against the 8 GB goal. Prints one line per check.

    python benchmarks/inference_check.py [--skip-cpu-4k] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdfi.inference.interpolator import Interpolator  # noqa: E402
from cdfi.probe import example_frames, lively_model, psnr  # noqa: E402
from models import make_model  # noqa: E402

UHD = (2160, 3840)


def gpu_checks() -> None:
    model = lively_model()
    a, b = example_frames(256, 448)
    cpu = Interpolator(model, device="cpu", tile=None).interpolate(a, b)
    gpu = Interpolator(lively_model(), device="cuda", tile=None)
    out = gpu.interpolate(a, b)
    print(
        f"cuda fp32 vs cpu fp32 (TF32 convs as default): {psnr(out, cpu):.1f} dB, max |diff| "
        f"{float((out - cpu).abs().max()):.4f}"
    )
    for precision in ("fp16", "bf16"):
        low = Interpolator(lively_model(), device="cuda", tile=None, precision=precision).interpolate(a, b)
        print(f"cuda {precision} vs cuda fp32: {psnr(low, out):.1f} dB")
    big0, big1 = example_frames(540, 960)
    whole = Interpolator(lively_model(), device="cuda", tile=None).interpolate(big0, big1)
    for tile, overlap in ((256, 64), (256, 128), (512, 128)):
        tiled = Interpolator(lively_model(), device="cuda", tile=tile, overlap=overlap)
        print(
            f"cuda 960x540 tiled {tile}/{overlap} vs untiled: {psnr(tiled.interpolate(big0, big1), whole):.1f} dB "
            f"({tiled.calls} tiles)"
        )
    batch = Interpolator(lively_model(), device="cuda", tile=None, batch_size=4)
    pairs = [(a, b), (b, a), (a, a.flip(-1)), (b, b.roll(5, -1))]
    outs = batch.interpolate_batch(pairs)
    single = [gpu.interpolate(x, y) for x, y in pairs]
    worst = max(float((o - s).abs().max()) for o, s in zip(outs, single, strict=True))
    print(f"cuda batch of 4 vs single pairs: max |diff| {worst:.2e} ({batch.calls} call)")
    for precision in ("fp16", "fp32"):
        torch.manual_seed(0)
        interp = Interpolator(make_model("cdfi_adacof", 11, 2), device="cuda", precision=precision)
        f0, f1 = torch.rand(3, *UHD), torch.rand(3, *UHD)
        interp.interpolate(f0[:, :512, :512], f1[:, :512, :512])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        res = interp.interpolate(f0, f1)
        torch.cuda.synchronize()
        print(
            f"cuda CDFI 4K {precision}: {time.perf_counter() - start:.2f} s, tile {interp.tile_size(*UHD)}, "
            f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, shape {tuple(res.shape)}"
        )


def cpu_4k_child(precision: str) -> None:
    """Run in a child process so that its peak RSS is the pair's alone."""
    torch.manual_seed(0)
    interp = Interpolator(make_model("cdfi_adacof", 11, 2), device="cpu", precision=precision)
    f0, f1 = torch.rand(3, *UHD), torch.rand(3, *UHD)
    start = time.perf_counter()
    out = interp.interpolate(f0, f1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"cpu CDFI 4K {precision}: {time.perf_counter() - start:.1f} s with {torch.get_num_threads()} threads, "
        f"tile {interp.tile_size(*UHD)}, {interp.calls} tiles, peak RSS {peak:.2f} GiB, shape {tuple(out.shape)}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--skip-cpu-4k", action="store_true", help="skip the 4K pair on the CPU (its tiling and peak memory)"
    )
    p.add_argument("--cpu-4k-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_4k_child:
        cpu_4k_child(args.cpu_4k_child)
        return 0
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
        gpu_checks()
    else:
        print("no CUDA GPU: GPU checks skipped")
    if not args.skip_cpu_4k:
        cmd = [sys.executable, __file__, "--cpu-4k-child", "fp32"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
