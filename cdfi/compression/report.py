"""The sparsity report of a pruned checkpoint: text table, CSV (read back by ``compress.py``), bar chart,
and the published report's table (``extended_version/get_sparsity_report.py``).

Two tables of the same densities:

* ours (:func:`format_report`): per convolution its channels, density and the channels the sqrt rule
  keeps (at least 1), plus an overall line;
* the published one (:func:`format_published_table`): columns ``Name`` (the weight's parameter name),
  ``Density`` (nonzero / all entries, 3 decimals), ``In``/``Out`` (the weight's input and output
  channels) and ``In'``/``Out'`` (``int(sqrt(density) * channels)``, which can be 0), in the published
  column widths.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdfi.compression.densities import LayerDensity, conv_densities, published_reduced
from cdfi.compression.errors import CompressionError
from cdfi.io.atomic import atomic_path, atomic_write_text, ensure_writable
from cdfi.io.checkpoint import load_checkpoint

__all__ = [
    "PUBLISHED_COLUMNS",
    "REPORT_COLUMNS",
    "ReportResult",
    "format_published_table",
    "format_report",
    "plot_densities",
    "read_report_csv",
    "report_csv_text",
    "report_rows",
    "write_sparsity_report",
]

PUBLISHED_COLUMNS = ("Name", "Density", "In", "Out", "In'", "Out'")
# The published header right-aligns each title in these widths; rows put the name in 50 columns.
_PUBLISHED_HEADER_WIDTHS = (35, 24, 4, 5, 6, 5)
_PUBLISHED_NAME_WIDTH = 50


REPORT_COLUMNS = ("layer", "c_in", "c_out", "nonzero", "total", "density", "reduced_in", "reduced_out")


def report_rows(layers: Sequence[LayerDensity]) -> list[dict[str, Any]]:
    """One dict per layer with the report's columns."""
    return [
        {
            "layer": d.name,
            "c_in": d.c_in,
            "c_out": d.c_out,
            "nonzero": d.nonzero,
            "total": d.total,
            "density": d.density,
            "reduced_in": d.reduced_in,
            "reduced_out": d.reduced_out,
        }
        for d in layers
    ]


def format_report(layers: Sequence[LayerDensity]) -> str:
    """A fixed-width text table of the report plus an overall line."""
    width = max(len("layer"), *(len(d.name) for d in layers))
    lines = [f"{'layer':<{width}}  {'c_in':>5} {'c_out':>5}  {'density':>8}  {'in_':>5} {'out_':>5}"]
    for d in layers:
        lines.append(
            f"{d.name:<{width}}  {d.c_in:>5} {d.c_out:>5}  {d.density:>8.4f}  {d.reduced_in:>5} {d.reduced_out:>5}"
        )
    nonzero, total = sum(d.nonzero for d in layers), sum(d.total for d in layers)
    lines.append(
        f"{'all convolutions':<{width}}  {'':>5} {'':>5}  {nonzero / total:>8.4f}  "
        f"({nonzero:,} of {total:,} weights nonzero)"
    )
    return "\n".join(lines)


def report_csv_text(layers: Sequence[LayerDensity]) -> str:
    """The report as CSV text (header = REPORT_COLUMNS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report_rows(layers):
        writer.writerow({**row, "density": f"{row['density']:.8f}"})
    return buffer.getvalue()


def read_report_csv(path: str | Path) -> list[LayerDensity]:
    """Read a CSV written by ``sparsity_report.py``; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CompressionError(f"{path}: sparsity report not found") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"layer", "c_in", "c_out", "nonzero", "total"} - set(reader.fieldnames or ())
    if missing:
        raise CompressionError(f"{path}: not a sparsity report (missing columns {', '.join(sorted(missing))})")
    layers = []
    for line, row in enumerate(reader, start=2):
        try:
            layer = LayerDensity(
                row["layer"], int(row["c_in"]), int(row["c_out"]), int(row["nonzero"]), int(row["total"])
            )
        except (TypeError, ValueError):
            raise CompressionError(f"{path}:{line}: bad numbers in row {row}") from None
        if not 0 <= layer.nonzero <= layer.total or layer.total <= 0:
            raise CompressionError(f"{path}:{line}: {layer.name}: nonzero must lie in [0, total]")
        layers.append(layer)
    if not layers:
        raise CompressionError(f"{path}: sparsity report has no rows")
    return layers


def format_published_table(layers: Sequence[LayerDensity]) -> str:
    """The published report's header and one row per convolution weight (see the module docstring)."""
    header = "".join(
        f"{title:>{width}}" for title, width in zip(PUBLISHED_COLUMNS, _PUBLISHED_HEADER_WIDTHS, strict=True)
    )
    lines = [header]
    for d in layers:
        reduced_in, reduced_out = published_reduced(d.density, d.c_in), published_reduced(d.density, d.c_out)
        lines.append(
            f"{d.name + '.weight':>{_PUBLISHED_NAME_WIDTH}}   {d.density:.3f}  {d.c_in:3d}  {d.c_out:3d}  "
            f"{reduced_in:3d}  {reduced_out:3d}"
        )
    return "\n".join(lines)


def plot_densities(layers: Sequence[LayerDensity], path: str | Path, title: str, force: bool) -> None:
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


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_sparsity_report` measured and wrote."""

    layers: list[LayerDensity]
    csv: Path | None
    png: Path | None


def write_sparsity_report(
    checkpoint: str | Path,
    csv_path: str | Path | None,
    png_path: str | Path | None,
    *,
    threshold: float = 0.0,
    force: bool = False,
    published: bool = False,
) -> ReportResult:
    """Measure ``checkpoint``'s per-layer densities, print the table (ours, or the published one with
    ``published``) and write the CSV and PNG where given. Both outputs are checked before anything is
    read or written, so a refusal (existing file without ``force``) leaves everything as it was."""
    checkpoint = Path(checkpoint)
    outputs = [Path(p) for p in (csv_path, png_path) if p is not None]
    for path in outputs:
        ensure_writable(path, force)
    ckpt = load_checkpoint(checkpoint)
    layers = conv_densities(ckpt.state_dict, threshold=threshold)
    print(format_published_table(layers) if published else format_report(layers), flush=True)
    if csv_path is not None:
        atomic_write_text(csv_path, report_csv_text(layers), force=force)
    if png_path is not None:
        plot_densities(layers, png_path, f"{checkpoint.name}: per-layer density", force)
    return ReportResult(
        layers, Path(csv_path) if csv_path is not None else None, Path(png_path) if png_path is not None else None
    )
