"""Does bf16 inference keep the quality? fp32 against bf16 (autocast + channels_last) on Middlebury.

For each of the 12 Middlebury "other" sequences the checkpoint's model interpolates the middle frame
in fp32 and in bf16; both frames are rounded to 8 bits (the published protocol writes PNGs) and scored
with the published PSNR. The issue's criteria: every bf16 frame within 40 dB PSNR of the fp32 frame
(PSNR(fp32 frame, bf16 frame) >= 40 dB), and the mean PSNR against ground truth moving by at most
0.05 dB. Exit status 0 when both hold, 1 when not, 2 for bad input (including a device without bf16).
The CPU by default; ``--device cuda`` compares on a GPU of compute capability 8.0+. ``--json`` writes
the figures atomically (an existing file only with ``--force``).

    python benchmarks/bf16_quality.py --checkpoint checkpoints/cdfi_adacof_ours.pth
    python benchmarks/bf16_quality.py --random cdfi_adacof --seed 0      # seeded random weights
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import UsageError, run_cli
from cdfi.evaluation.metrics import psnr
from cdfi.io.atomic import atomic_write_text, ensure_writable
from cdfi.io.checkpoint import load_model
from cdfi.io.images import quantize, read_image
from cdfi.io.paths import resolve_data_root
from cdfi.runtime import Runtime, resolve_runtime
from cdfi.runtime.precision import autocast, prepare_model, resolve_precision
from datasets.benchmark_sets import middlebury_items
from models import list_models, make_model

FRAME_PSNR_MIN = 40.0
MEAN_PSNR_SHIFT_MAX = 0.05


def interpolate(
    model: torch.nn.Module,
    frame0: torch.Tensor,
    frame2: torch.Tensor,
    precision: str,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The model's middle frame (3, H, W) on the CPU, fp32, 8-bit quantised."""
    with torch.inference_mode(), autocast(device, precision):
        out = model(frame0[None].to(device), frame2[None].to(device))
    return quantize(out[0].float().cpu())


def compare(args: argparse.Namespace) -> bool:
    """Print the per-sequence table and the verdict; True when both criteria hold."""
    if args.json:
        ensure_writable(args.json, args.force)
    items = middlebury_items(resolve_data_root(args.data_root))
    if args.checkpoint:
        model = load_model(args.checkpoint)
        source_text = args.checkpoint
    else:
        torch.manual_seed(args.seed)
        model = make_model(args.random).eval()
        source_text = f"{args.random}, random weights, seed {args.seed}"
    runtime: Runtime = resolve_runtime(device=args.device, threads=args.threads, precision="fp32")
    if resolve_precision("bf16", runtime.device, warn=False) != "bf16":
        raise UsageError(f"{runtime.device} has no native bf16 (avx512_bf16/amx_bf16): nothing to compare")
    prepare_model(model, runtime.device, "bf16")

    print(f"bf16 vs fp32 on Middlebury ({source_text}) on {runtime.device}; frames 8-bit quantised, published PSNR")
    print("| sequence | PSNR fp32 vs GT | PSNR bf16 vs GT | shift | PSNR bf16 vs fp32 | max abs diff (8-bit steps) |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    start = time.perf_counter()
    for item in items:
        frame0, frame2, gt = read_image(item.frame0), read_image(item.frame2), read_image(item.gt)
        full = interpolate(model, frame0, frame2, "fp32", runtime.device)
        half = interpolate(model, frame0, frame2, "bf16", runtime.device)
        diff = full != half
        row = {
            "sequence": item.name,
            "psnr_fp32": psnr(gt, full),
            "psnr_bf16": psnr(gt, half),
            "psnr_bf16_vs_fp32": psnr(full, half) if diff.any() else math.inf,
            "max_steps": round(float((full - half).abs().max()) * 255),
            "changed_fraction": float(diff.float().mean()),
        }
        rows.append(row)
        shift = row["psnr_bf16"] - row["psnr_fp32"]
        print(
            f"| {item.name} | {row['psnr_fp32']:.3f} | {row['psnr_bf16']:.3f} | {shift:+.3f} | "
            f"{row['psnr_bf16_vs_fp32']:.2f} dB | {row['max_steps']} |",
            flush=True,
        )
    mean32 = sum(r["psnr_fp32"] for r in rows) / len(rows)
    mean16 = sum(r["psnr_bf16"] for r in rows) / len(rows)
    worst = min(r["psnr_bf16_vs_fp32"] for r in rows)
    ok = worst >= FRAME_PSNR_MIN and abs(mean16 - mean32) <= MEAN_PSNR_SHIFT_MAX
    print(
        f"| mean | {mean32:.3f} | {mean16:.3f} | {mean16 - mean32:+.3f} | worst {worst:.2f} dB | "
        f"{max(r['max_steps'] for r in rows)} |"
    )
    print(
        f"criteria: every frame >= {FRAME_PSNR_MIN:.0f} dB from fp32 ({worst:.2f} dB), mean PSNR shift <= "
        f"{MEAN_PSNR_SHIFT_MAX} dB ({mean16 - mean32:+.3f} dB): {'PASS' if ok else 'FAIL'} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    if args.json:
        summary = {
            "source": source_text,
            "device": str(runtime.device),
            "mean_psnr_fp32": mean32,
            "mean_psnr_bf16": mean16,
            "worst_psnr_bf16_vs_fp32": worst,
            "pass": ok,
            "sequences": rows,
        }
        atomic_write_text(args.json, json.dumps(summary, indent=2, default=str) + "\n", args.force)
    return ok


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and compare; returns the exit status (0 pass, 1 fail, 2 bad input, 130 interrupted)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint to evaluate")
    source.add_argument("--random", choices=list_models(), help="a seeded random-weight model instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random (0)")
    parser.add_argument("--data_root", default=None, help="folder holding middlebury_others/ (default: CDFI_DATA_ROOT)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")
    parser.add_argument("--json", default=None, help="also write the per-sequence figures here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    args = parser.parse_args(argv)
    on_interrupt = f"interrupted; {args.json} was not written" if args.json else "interrupted"
    return run_cli(compare, args, on_interrupt=on_interrupt, status=lambda ok: 0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
