"""What a sprint writes besides checkpoints: the training curves (CSV and PNG) and a one-screen summary.

Every file is rewritten whole and atomically each time, so that a run killed at its time limit leaves
the last complete version of each behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdfi.io.atomic import atomic_path, atomic_write_text

__all__ = ["Curves", "format_summary", "write_report"]

FIXED_COLUMNS = ("model", "step", "seconds", "samples", "lr", "loss")
TARGETS = {"cdfi_adacof": 20.0, "compressed_adacof": 80.0}
"""Training steps per second each model should reach alone on the GPU (issue 24), at ``TARGET_SETTING``."""
TARGET_SETTING = (16, 256, "bf16")


class Curves:
    """Rows of the training curves of every model, written as one CSV and one PNG.

    A row is a log point (loss averaged over the steps since the last one) or a validation point
    (``val_psnr``); columns are the fixed ones, then each loss term, then ``val_psnr``.
    """

    def __init__(self, baselines: dict[str, float] | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.baselines = dict(baselines or {})

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def columns(self) -> list[str]:
        extra: list[str] = []
        for row in self.rows:
            extra += [k for k in row if k not in FIXED_COLUMNS and k != "val_psnr" and k not in extra]
        return [*FIXED_COLUMNS, *extra, "val_psnr"]

    def write_csv(self, path: str | Path) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        atomic_write_text(path, buffer.getvalue())

    def write_png(self, path: str | Path) -> None:
        """Loss against steps (left) and validation PSNR against steps with the baselines (right)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
        models = list(dict.fromkeys(r["model"] for r in self.rows))
        for model in models:
            mine = [r for r in self.rows if r["model"] == model]
            loss = [(r["step"], r["loss"]) for r in mine if r.get("loss") is not None]
            val = [(r["step"], r["val_psnr"]) for r in mine if r.get("val_psnr") is not None]
            if loss:
                ax_loss.plot(*zip(*loss, strict=True), label=model)
            if val:
                ax_val.plot(*zip(*val, strict=True), marker="o", label=model)
        for name, value in self.baselines.items():
            if value is not None and math.isfinite(value):
                ax_val.axhline(value, linestyle="--", linewidth=1, color="grey")
                ax_val.annotate(f"{name} {value:.2f}", (0, value), fontsize=8, va="bottom")
        ax_loss.set(xlabel="step", ylabel="training loss (mean since the last point)", yscale="log")
        ax_val.set(xlabel="step", ylabel="validation PSNR (dB)")
        for ax in (ax_loss, ax_val):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def format_summary(report: dict[str, Any]) -> str:
    """The one-screen summary of a sprint report (the dict ``run_sprint`` writes as summary.json)."""
    base = report.get("baselines", {})
    lines = [
        f"GPU training sprint: {report['device']}, {report['precision']}, batch {report['batch']}, "
        f"{report['crop']}x{report['crop']} crops",
        f"data: {report['train_triplets']:,} training triplets of {report['train_clips']} clips"
        + (f" ({report['left_out']})" if report.get("left_out") else "")
        + f", {report['val_items']} validation triplets; bundle {report['bundle_mib']:.1f} MiB",
        f"time: {report['budget_s'] / 60:.1f} min of training in a {report['limit_s'] / 60:.1f}-min limit; "
        f"set-up {report['setup_s']:.0f} s, whole run {report['wall_s']:.0f} s" + _stopped(report),
        "",
        f"{'model':<26}{'steps':>8}{'steps/s':>9}{'samples/s':>11}{'train s':>9}"
        f"{'val start':>11}{'mid':>7}{'end':>7}{'gain':>7}",
    ]
    for m in report["models"]:
        val = m.get("val", {})
        start, end = val.get("start"), val.get("end")
        gain = None if start is None or end is None else end - start
        lines.append(
            f"{m['label']:<26}{m['steps']:>8,}{_fmt(m['steps_per_s'], '.2f'):>9}{_fmt(m['samples_per_s'], '.1f'):>11}"
            f"{_fmt(m['train_s'], '.0f'):>9}{_fmt(start):>11}{_fmt(val.get('mid')):>7}{_fmt(end):>7}"
            f"{_fmt(gain, '+.2f'):>7}"
        )
    lines.append(
        f"validation split ({report['val_items']}): frame average {_fmt(base.get('overlay'))}, "
        f"DIS flow {_fmt(base.get('dis_flow'))} (computed before the call)"
    )
    if (report["batch"], report["crop"], report["precision"]) == TARGET_SETTING:
        checks = []
        for m in report["models"]:
            target = TARGETS.get(m["label"].split()[0])
            rate = m.get("steps_per_s")
            if target is not None and rate is not None:
                checks.append(f"{m['label']} {rate:.1f} {'>=' if rate >= target else '<'} {target} steps/s")
        if checks:
            lines.append("throughput targets (batch 16, 256x256, bf16): " + "; ".join(checks))
    for m in report["models"]:
        if m.get("checkpoint"):
            lines.append(f"checkpoint: {m['checkpoint']} ({m['checkpoint_mib']:.1f} MiB, fp16 weights)")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _stopped(report: dict[str, Any]) -> str:
    reason = report.get("stopped")
    return f"; stopped early: {reason}" if reason else ""


def write_report(out: Path, report: dict[str, Any], curves: Curves, *, png: bool = True) -> None:
    """summary.json, summary.txt, curves.csv and (``png``) curves.png in ``out``."""
    curves.write_csv(out / "curves.csv")
    atomic_write_text(out / "summary.json", json.dumps(_finite(report), indent=1) + "\n")
    atomic_write_text(out / "summary.txt", format_summary(report))
    if png:
        curves.write_png(out / "curves.png")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return [_finite(v) for v in obj]
    return obj
