"""Per-layer density of a (pruned) checkpoint: table on stdout, CSV and bar chart PNG.

For each convolution: density (nonzero weights / weights), in/out channels, and the channels the sqrt
rule keeps (integer part of sqrt(density) * channels), as CDFI reads its pruning result. ``compress.py``
turns the CSV into an architecture spec with widths that connect. The published report's table (columns
Name, Density, In, Out, In', Out') is ``extended_version/get_sparsity_report.py``.

Example: python sparsity_report.py --checkpoint pruned.pth --out_dir sparsity/
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from cdfi.cli import EXIT_OK, run_cli
from cdfi.compression.report import ReportResult, write_sparsity_report


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``sparsity_report.py``."""
    p = argparse.ArgumentParser(description="Per-layer density report of a pruned checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. written by prune.py)")
    p.add_argument(
        "--out_dir", default=None, help="folder for <name>_sparsity.csv and .png (default: beside the checkpoint)"
    )
    p.add_argument("--csv", default=None, help="CSV path (overrides --out_dir)")
    p.add_argument("--png", default=None, help="bar chart path (overrides --out_dir)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="count |w| > threshold as nonzero (default 0: exact zeros, as OBProxSG leaves them)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing CSV/PNG files")
    return p


def output_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The CSV and PNG paths: ``--csv``/``--png``, else ``<out_dir>/<checkpoint stem>_sparsity.*``."""
    ckpt_path = Path(args.checkpoint)
    out_dir = Path(args.out_dir) if args.out_dir else ckpt_path.parent
    csv_path = Path(args.csv) if args.csv else out_dir / f"{ckpt_path.stem}_sparsity.csv"
    png_path = Path(args.png) if args.png else out_dir / f"{ckpt_path.stem}_sparsity.png"
    return csv_path, png_path


def _wrote(result: ReportResult) -> int:
    print(f"wrote {result.csv} and {result.png}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Print the table and write the CSV and PNG; returns the exit status (2: bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.threshold >= 0:
        parser.error(f"--threshold must be >= 0, got {args.threshold}")
    csv_path, png_path = output_paths(args)
    work = partial(write_sparsity_report, threshold=args.threshold, force=args.force)
    return run_cli(
        work,
        args.checkpoint,
        csv_path,
        png_path,
        status=_wrote,
        on_interrupt="interrupted; outputs are written whole or not at all",
    )


if __name__ == "__main__":
    sys.exit(main())
