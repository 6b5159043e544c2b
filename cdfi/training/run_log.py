"""The records a training run writes beside its checkpoints: ``log.txt``, ``loss.csv``, ``eval.csv``,
``val.csv`` and ``curves.png``.

The CSVs are append-only and survive a resume: reopening one drops the rows past the resumed step, so
steps trained after the last checkpoint of a stopped run are not counted twice. Only the main process
of a run writes them.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from cdfi.io.atomic import atomic_path

__all__ = ["EVAL_FIELDS", "VAL_FIELDS", "CsvLog", "RunLog", "loss_fields", "plot_curves"]

EVAL_FIELDS = ["epoch", "step", "minutes", "psnr", "ssim"]
VAL_FIELDS = ["step", "epoch", "minutes", "cpu_minutes", "psnr", "overlay", "dis_flow"]


def loss_fields(terms: Sequence[str]) -> list[str]:
    """Columns of ``loss.csv``: the step, the total and every loss term, then the extra (warm-start) loss."""
    return ["step", "epoch", "minutes", "lr", "loss", *terms, "extra"]


class CsvLog:
    """An append-only CSV; on resume, rows past the resumed step are dropped first."""

    def __init__(self, path: Path, fields: list[str], keep_until_step: int | None) -> None:
        self.path = path
        self.fields = fields
        rows: list[dict[str, str]] = []
        if keep_until_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r.get("step") or 0)) <= keep_until_step]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row (keys outside the columns are ignored, missing ones left empty)."""
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)

    def rows(self) -> list[dict[str, str]]:
        """Every row written so far, as strings."""
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


class RunLog:
    """``log.txt`` (timestamped lines) and the three CSVs of a run folder; ``plot`` redraws ``curves.png``.

    ``keep_until_step`` is the step a resumed run continues from (None: a fresh start, the CSVs are
    emptied). Use as a context manager, or call ``close``.
    """

    def __init__(self, run_dir: str | Path, loss_terms: Sequence[str], keep_until_step: int | None) -> None:
        self.run_dir = Path(run_dir)
        self.loss = CsvLog(self.run_dir / "loss.csv", loss_fields(loss_terms), keep_until_step)
        self.evals = CsvLog(self.run_dir / "eval.csv", EVAL_FIELDS, keep_until_step)
        self.val = CsvLog(self.run_dir / "val.csv", VAL_FIELDS, keep_until_step)
        self._text = (self.run_dir / "log.txt").open("a")

    def line(self, text: str) -> None:
        """Append ``<date> <time> text`` to ``log.txt`` and flush it (a crash keeps what was logged)."""
        self._text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        self._text.flush()

    def plot(self) -> None:
        """Redraw ``curves.png`` from the CSVs."""
        plot_curves(self.run_dir, self.loss, self.evals, self.val)

    def close(self) -> None:
        """Close ``log.txt``."""
        self._text.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def plot_curves(run_dir: Path, loss: CsvLog, evals: CsvLog, val: CsvLog) -> None:
    """``curves.png``: training loss, Middlebury PSNR per epoch, validation PSNR vs steps and minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def column(rows: list[dict[str, str]], key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    rows = loss.rows()
    ax = axes[0][0]
    if rows:
        steps, values = column(rows, "step"), column(rows, "loss")
        ax.plot(steps, values, lw=0.5, alpha=0.4, label="per step")
        k = max(1, len(values) // 50)
        smooth = [
            sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))
        ]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {k}")
        ax.set_yscale("log")
        ax.legend()
    ax.set(title="training loss", xlabel="step")
    rows = evals.rows()
    ax = axes[0][1]
    if rows:
        ax.plot(column(rows, "epoch"), column(rows, "psnr"), "o-")
    ax.set(title="Middlebury PSNR (dB)", xlabel="epoch")
    rows = val.rows()
    for ax, key, label in ((axes[1][0], "step", "step"), (axes[1][1], "minutes", "wall-clock minutes")):
        if rows:
            x = column(rows, key)
            ax.plot(x, column(rows, "psnr"), "o-", label="model")
            ax.plot(x, column(rows, "overlay"), "--", label="overlay (A+C)/2")
            ax.plot(x, column(rows, "dis_flow"), ":", label="DIS flow")
            ax.legend()
        ax.set(title="validation PSNR (dB)", xlabel=label)
    fig.tight_layout()
    with atomic_path(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
