"""Per-layer density of a (pruned) checkpoint: table on stdout, CSV and bar chart PNG.

For each convolution: density (nonzero weights / weights), in/out channels, and the channels the sqrt
rule keeps (integer part of sqrt(density) * channels), as CDFI reads its pruning result. ``compress.py``
turns the CSV into an architecture spec with widths that connect.

Example: python sparsity_report.py --checkpoint pruned.pth --out_dir sparsity/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cdfi.compression.core import LayerDensity, conv_densities, format_report, report_csv_text
from cdfi.io.atomic import atomic_path, atomic_write_text, ensure_writable
from cdfi.io.checkpoint import load_checkpoint


def plot_densities(layers: Sequence[LayerDensity], path: Path, title: str, force: bool) -> None:
    """Horizontal bar chart of per-layer density, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(3.0, 0.18 * len(layers) + 1.2)
    fig, ax = plt.subplots(figsize=(8.0, height))
    names = [d.name.removeprefix("get_kernel.") for d in layers]
    ax.barh(range(len(layers)), [d.density for d in layers], color="tab:blue")
    ax.set_yticks(range(len(layers)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("density (nonzero weights / weights)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path, force) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str] | None = None) -> int:
    """Print the table and write the CSV and PNG; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        ckpt_path = Path(args.checkpoint)
        out_dir = Path(args.out_dir) if args.out_dir else ckpt_path.parent
        csv_path = Path(args.csv) if args.csv else out_dir / f"{ckpt_path.stem}_sparsity.csv"
        png_path = Path(args.png) if args.png else out_dir / f"{ckpt_path.stem}_sparsity.png"
        ensure_writable(csv_path, args.force)
        ensure_writable(png_path, args.force)
        ckpt = load_checkpoint(ckpt_path)
        layers = conv_densities(ckpt.state_dict, threshold=args.threshold)
        print(format_report(layers))
        atomic_write_text(csv_path, report_csv_text(layers), force=args.force)
        plot_densities(layers, png_path, f"{ckpt_path.name}: per-layer density", args.force)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {csv_path} and {png_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
