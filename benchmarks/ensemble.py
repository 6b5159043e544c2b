"""What does the test-time self-ensemble buy a checkpoint? PSNR for ensemble sizes 1, 2, 4 and 8 in one pass.

Each item is interpolated once per view of ``cdfi.inference.ensemble.VIEWS`` (eight model calls); the size-N
result is the mean of the first N views, exactly what ``--ensemble N`` computes, so all four sizes cost
the eight calls together. Printed: mean PSNR per set and size (8-bit quantised prediction, skimage's
metric, as ``test.py``), and the mirror-only mean (views without time reversal) for comparison. CPU or
GPU (the runtime flags of every script), fp32 unless ``--precision`` says otherwise.

    python benchmarks/ensemble.py --checkpoint checkpoints/cdfi_adacof_ours.pth
    python benchmarks/ensemble.py --checkpoint checkpoints/compressed_adacof_F_5_D_1_ours.pth --every 6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import UsageError, run_cli
from cdfi.evaluation.metrics import psnr
from cdfi.inference.ensemble import ENSEMBLE_SIZES, VIEWS
from cdfi.inference.prealign import add_prealign_argument
from cdfi.inference.stack import InferenceOptions, build_inference_stack
from cdfi.io.checkpoint import load_model
from cdfi.io.images import quantize, read_image
from cdfi.io.paths import resolve_data_root
from cdfi.runtime import Runtime, add_runtime_arguments, resolve_runtime
from datasets.benchmark_sets import BenchmarkItem, load_benchmark_set

MIRRORS = tuple(i for i, view in enumerate(VIEWS) if not view.reverse_time)
"""Indices of the four views without time reversal."""


def view_outputs(model: torch.nn.Module, item: BenchmarkItem, runtime: Runtime) -> list[torch.Tensor]:
    """The model's middle frame for every view of the item's pair, each mapped back, on the CPU."""
    a, b = (read_image(p)[None].to(runtime.device) for p in (item.frame0, item.frame2))
    outs = []
    with torch.inference_mode(), runtime.autocast():
        for view in VIEWS:
            out = model(*view.apply(a, b))
            outs.append(view.invert(out["frame1"] if isinstance(out, dict) else out)[0].float().cpu())
    return outs


def score(outs: list[torch.Tensor], gt: torch.Tensor, views: tuple[int, ...]) -> float:
    """PSNR of the mean of the given views, clamped and quantised as a written PNG."""
    return psnr(gt, quantize(torch.stack([outs[i] for i in views]).mean(0).clamp(0, 1)))


def measure(args: argparse.Namespace) -> None:
    """Print the table of mean PSNR per set and ensemble size."""
    for flag, value in (("--every", args.every), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    root = resolve_data_root(args.data_root)
    sets = [load_benchmark_set(key.strip(), root, None) for key in args.datasets.split(",")]
    runtime = resolve_runtime(args)
    model = load_model(args.checkpoint, map_location=runtime.device)
    _, net = build_inference_stack(model, runtime, InferenceOptions(prealign=args.prealign))
    columns = [(f"x{n}", tuple(range(n))) for n in ENSEMBLE_SIZES] + [("mirrors only", MIRRORS)]
    mode = ", pre-aligned" if args.prealign else ""
    print(f"Self-ensemble PSNR (dB) of {args.checkpoint} on {runtime.describe()}{mode}")
    print("| set | items | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for bench in sets:
        items = bench.items[: args.limit][:: args.every]
        sums = [0.0] * len(columns)
        for item in tqdm(items, desc=bench.key, leave=False):
            outs, gt = view_outputs(net, item, runtime), read_image(item.gt)
            for i, (_, views) in enumerate(columns):
                sums[i] += score(outs, gt, views)
        means = " | ".join(f"{s / len(items):.2f}" for s in sums)
        print(f"| {bench.key} | {len(items)} of {len(bench.items)} | {means} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and print the table; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="AdaCoF-family or CDFI checkpoint")
    parser.add_argument("--data_root", default=None, help="folder of the evaluation sets (default: CDFI_DATA_ROOT)")
    parser.add_argument("--datasets", default="middlebury,ucf101", help="comma-separated (default middlebury,ucf101)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N items of each set (as test.py)")
    parser.add_argument("--every", type=int, default=1, help="then every N-th of them (default 1: all)")
    add_prealign_argument(parser)
    add_runtime_arguments(parser, precision_default="fp32")
    return run_cli(measure, parser.parse_args(argv), on_interrupt="interrupted; the table is incomplete")


if __name__ == "__main__":
    sys.exit(main())
