"""Compare the validation curves of several training runs (ablations) in one figure and one table.

    python benchmarks/compare_runs.py model_weights/base model_weights/he_warp --out ablation.png
    python benchmarks/compare_runs.py "published init=runs/base" "He + Warp=runs/he_warp" --out a.png

Each argument is a run folder written by ``train.py --val_dir`` (its ``val.csv``), optionally prefixed by
``LABEL=``. The figure shows validation PSNR against steps and against wall-clock minutes, with the
frame average (overlay) and the DIS-flow baseline of the same split; the table gives every run's PSNR
at each validated step and its gain over the overlay.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import run_cli
from cdfi.io.atomic import atomic_path


class RunFolderError(ValueError):
    """A run folder without a readable val.csv."""


def read_val(run: Path) -> list[dict[str, float]]:
    """The rows of ``<run>/val.csv`` as floats."""
    path = run / "val.csv"
    if not path.is_file():
        raise RunFolderError(f"{path}: not found (train with --val_dir to write it)")
    with path.open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]
    if not rows:
        raise RunFolderError(f"{path}: no validation rows yet")
    return rows


def parse_run(text: str) -> tuple[str, Path]:
    """``LABEL=PATH`` or ``PATH`` (labelled by its folder name); the label may itself contain ``=``."""
    label, sep, path = text.rpartition("=")
    return (label, Path(path)) if sep else (Path(text).name, Path(text))


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table: PSNR per run at every validated step, and the gain over the overlay at the last."""
    steps = sorted({int(r["step"]) for rows in runs.values() for r in rows})
    head = "| run | " + " | ".join(f"step {s}" for s in steps) + " | last - overlay |"
    lines = [head, "|" + "---|" * (len(steps) + 2)]
    for label, rows in runs.items():
        by_step = {int(r["step"]): r["psnr"] for r in rows}
        cells = [f"{by_step[s]:.2f}" if s in by_step else "" for s in steps]
        gain = rows[-1]["psnr"] - rows[-1]["overlay"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {gain:+.2f} dB |")
    first = next(iter(runs.values()))[0]
    lines.append(f"\noverlay (A+C)/2 {first['overlay']:.2f} dB, DIS flow {first['dis_flow']:.2f} dB on the same split")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict[str, float]]], out: Path) -> None:
    """PSNR against steps and wall-clock minutes, one line per run, baselines dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    first = next(iter(runs.values()))[0]
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "minutes", "wall-clock minutes")):
        for name, rows in runs.items():
            ax.plot([r[key] for r in rows], [r["psnr"] for r in rows], "o-", label=name)
        ax.axhline(first["overlay"], color="gray", ls="--", label="overlay (A+C)/2")
        ax.axhline(first["dis_flow"], color="black", ls=":", label="DIS flow")
        ax.set(xlabel=label, ylabel="validation PSNR (dB)")
        lows = [r["psnr"] for rows in runs.values() for r in rows if r["step"] > 0]
        ax.set_ylim(min([first["overlay"] - 1, *lows]), first["dis_flow"] + 0.5)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def compare(args: argparse.Namespace) -> None:
    """Read every run's val.csv (all before any output), print the table, draw the figure."""
    runs = {label: read_val(path) for label, path in map(parse_run, args.runs)}
    print(table(runs))
    if args.out:
        plot(runs, args.out)
        print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 bad input, 1 failure, 130 interrupted)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (with val.csv), optionally LABEL=FOLDER")
    p.add_argument("--out", type=Path, help="write the figure here (PNG)")
    return run_cli(compare, p.parse_args(argv), prog="compare_runs")


if __name__ == "__main__":
    sys.exit(main())
