"""Turn a pruned checkpoint (or its sparsity report) into a compressed architecture spec.

Each layer's density says how many of its weights survived pruning; the widths are chosen so that every
layer keeps about that many weights, consistently across connected layers and skip additions, and written
as a JSON spec that ``make_model`` builds. ``--method sqrt`` is the paper's rule as written (sqrt(d) of
each side, averaged over connected layers); the default ``product`` keeps each layer's nonzero count in
the least-squares sense, which gives back the published compressed AdaCoF widths exactly from their
densities but follows noisy densities less smoothly (``benchmarks/compression_check.py`` measures both).
Train the result from scratch with ``python train.py --model compressed_adacof --arch spec.json``.

Examples:
    python compress.py --checkpoint pruned.pth --out compressed.json
    python compress.py --report pruned_sparsity.csv --model adacof --kernel_size 5 --dilation 1 --out c.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from cdfi.cli import EXIT_OK, run_cli
from cdfi.compression.compressor import CompressRequest, CompressResult, compress_to_spec
from models import list_models


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``compress.py``."""
    p = argparse.ArgumentParser(description="Compressed architecture spec from a pruned model.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="pruned checkpoint (e.g. from prune.py)")
    src.add_argument("--report", help="sparsity CSV from sparsity_report.py (needs --model)")
    p.add_argument(
        "--model",
        choices=list_models(),
        default=None,
        help="family of the pruned network (with --report; a checkpoint says it itself, and a "
        "contradicting --model is refused)",
    )
    p.add_argument(
        "--kernel_size", type=int, default=None, help="kernel size F (with --report; checked with --checkpoint)"
    )
    p.add_argument("--dilation", type=int, default=None, help="dilation D (with --report; checked with --checkpoint)")
    p.add_argument("--arch", default=None, help="spec of the pruned network when it is not the published one")
    p.add_argument("--out", required=True, help="where to write the compressed spec (JSON)")
    p.add_argument(
        "--method",
        choices=("product", "sqrt"),
        default="product",
        help="product: keep each layer's nonzero count, jointly (default); "
        "sqrt: sqrt(density) per side, averaged over connected layers",
    )
    p.add_argument(
        "--balance",
        type=float,
        default=0.0,
        help="product method only: weight of keeping a layer's input and output reductions equal "
        "(0: none, 1: same as --method sqrt)",
    )
    p.add_argument("--threshold", type=float, default=0.0, help="count |w| > threshold as nonzero")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option values that cannot describe a network (argparse's one-line usage error)."""
    for option in ("kernel_size", "dilation"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option} must be at least 1, got {value}")
    if not args.threshold >= 0:
        parser.error(f"--threshold must be >= 0, got {args.threshold}")
    if not (math.isfinite(args.balance) and args.balance >= 0):
        parser.error(f"--balance must be a number >= 0, got {args.balance}")


def _request(args: argparse.Namespace) -> CompressRequest:
    """The library request for the parsed flags."""
    optional = {
        name: Path(getattr(args, name)) if getattr(args, name) else None for name in ("checkpoint", "report", "arch")
    }
    return CompressRequest(
        out=Path(args.out),
        model=args.model,
        kernel_size=args.kernel_size,
        dilation=args.dilation,
        method=args.method,
        balance=args.balance,
        threshold=args.threshold,
        force=args.force,
        **optional,
    )


def _next_step(result: CompressResult) -> int:
    print(
        f"wrote {result.out}; train it with: python train.py --model {result.arch.spec['model']} "
        f"--kernel_size {result.kernel_size} --dilation {result.dilation} --arch {result.out}",
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Write the spec and print the old and new widths; returns the exit status (2: bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return run_cli(compress_to_spec, _request(args), status=_next_step, on_interrupt="interrupted; no spec written")


if __name__ == "__main__":
    sys.exit(main())
