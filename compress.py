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
import json
import math
import sys

from cdfi.compression.core import LayerMismatchError, compress_variant, conv_densities, read_report_csv
from cdfi.io.atomic import atomic_write_text, ensure_writable
from cdfi.io.checkpoint import load_checkpoint, requested_variant
from models import DEFAULT_SIZES, list_models, load_arch


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str] | None = None) -> int:
    """Write the spec and print the old and new widths; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        out = ensure_writable(args.out, args.force)
        base_spec = None
        if args.checkpoint:
            ckpt = load_checkpoint(args.checkpoint)
            # Options that contradict the checkpoint are refused, not silently ignored.
            name, k, d = requested_variant(ckpt, args.model, args.kernel_size, args.dilation)
            base_spec = ckpt.meta.get("arch")
            layers = conv_densities(ckpt.state_dict, threshold=args.threshold)
            source = args.checkpoint
        else:
            if args.model is None:
                raise ValueError("--report needs --model (and --kernel_size/--dilation unless published)")
            name = args.model
            k = args.kernel_size or DEFAULT_SIZES[name][0]
            d = args.dilation or DEFAULT_SIZES[name][1]
            layers = read_report_csv(args.report)
            source = args.report
        if args.arch:
            base_spec = load_arch(args.arch)
        densities = {layer.name: layer.density for layer in layers}
        if all(v >= 1.0 for v in densities.values()):
            raise ValueError(f"{source}: every layer has density 1.0 (no sparsity); prune it with prune.py first")
        try:
            result = compress_variant(
                name, k, d, base_spec, densities, method=args.method, balance=args.balance, layers=layers
            )
        except LayerMismatchError as exc:
            raise ValueError(f"{source}: {exc}") from None
        for conv_name, (c_in, c_out) in result.widths.items():
            layer = result.graph.convs[conv_name]
            print(
                f"{conv_name:<40} {layer.c_in:>4}->{layer.c_out:<4}  =>  {c_in:>4}->{c_out:<4}"
                f"  density {densities.get(conv_name, 1.0):.4f}"
            )
        print(
            f"parameters: {result.full_params:,} -> {result.compressed_params:,} "
            f"({result.compressed_params / result.full_params:.1%})"
        )
        atomic_write_text(out, json.dumps(result.spec, indent=1) + "\n", force=args.force)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}; train it with: python train.py --model {result.spec['model']} "
        f"--kernel_size {k} --dilation {d} --arch {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
