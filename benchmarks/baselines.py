"""Score the classical baselines (frame average, DIS optical flow) with the evaluation code of test.py.

    python benchmarks/baselines.py [--data_root DIR] [--datasets middlebury,ucf101] [--limit N]

Prints one mean row per baseline and set and writes ``results.json`` under ``--out_dir`` (an existing
one only with ``--force``); the model card quotes these numbers next to the trained checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import run_cli
from cdfi.evaluation.baselines import BASELINES
from cdfi.evaluation.protocol import evaluate_set, write_results_json
from cdfi.io.atomic import ensure_writable
from datasets.benchmark_sets import load_benchmark_set


def score(args: argparse.Namespace, names: list[str]) -> None:
    """Score the baselines ``names`` on every set of ``args``; writes one results.json per baseline."""
    outputs = {name: Path(args.out_dir) / name / "results.json" for name in names}
    for path in outputs.values():  # refuse before any work, not after the first baseline
        ensure_writable(path, args.force)
    sets = [load_benchmark_set(k, args.data_root) for k in args.datasets.split(",") if k]
    summary = []
    for name in names:
        model = BASELINES[name]()
        results = [evaluate_set(model, bench, None, limit=args.limit, print_rows=False) for bench in sets]
        write_results_json(outputs[name], results, {"baseline": name}, force=args.force)
        for r in results:
            m = r.mean()
            summary.append(f"{name:10s} {r.name:12s} items {m['items']:4d}  PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}")
    print("\n".join(summary))


def main(argv: list[str] | None = None) -> int:
    """Score every baseline on every set and write their results.json; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", default=None, help="folder with middlebury_others/ and ucf101_interp_ours/")
    parser.add_argument("--datasets", default="middlebury,ucf101")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--limit", type=int, default=None, help="first N items of each set")
    parser.add_argument("--out_dir", default="test_output/baselines")
    parser.add_argument("--force", action="store_true", help="overwrite existing results.json files")
    args = parser.parse_args(argv)
    names = [b for b in args.baselines.split(",") if b]
    unknown = sorted(set(names) - set(BASELINES))
    if unknown or not names:
        parser.error(f"unknown baseline(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BASELINES)}")
    if args.limit is not None and args.limit < 1:  # as test.py: a limit counts items, so it is at least 1
        parser.error(f"--limit must be at least 1, got {args.limit}")
    return run_cli(
        score, args, names, on_interrupt="interrupted; the results.json of the baseline in progress was not written"
    )


if __name__ == "__main__":
    sys.exit(main())
