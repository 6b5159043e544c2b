"""The evaluation loop shared by ``test.py``, ``test_compressed_adacof.py`` and training's validation.

For every item: read the two inputs and the ground truth, interpolate, write the prediction as an
8-bit PNG and read it back, then score the read-back frame (PSNR/SSIM via ``cdfi.evaluation.metrics``, LPIPS
when a model is given), exactly as the published protocol does. Items that cannot be read are
reported in one line each and skipped; averages say how many items they cover.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cdfi.evaluation.layout import PROJECT, OutputLayout
from cdfi.evaluation.metrics import psnr, ssim
from cdfi.io.atomic import atomic_write_text
from cdfi.io.images import quantize, read_image, write_image
from cdfi.runtime import Runtime
from datasets.benchmark_sets import BenchmarkItem, BenchmarkSet

__all__ = [
    "ItemResult",
    "SetResult",
    "error_heatmap",
    "evaluate_items",
    "evaluate_set",
    "read_item",
    "write_results_json",
]

HEATMAP_FULL_SCALE = 0.25


@dataclass
class ItemResult:
    """Scores of one item; ``lpips`` is ``None`` when LPIPS is not available; ``output`` is the PNG."""

    name: str
    psnr: float
    ssim: float
    lpips: float | None
    output: str | None


@dataclass
class SetResult:
    """Per-item scores of one set, the items skipped with their reasons, and the total count."""

    name: str
    rows: list[ItemResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0

    def mean(self) -> dict[str, float | int | None]:
        """Averages over the scored items, with how many items they cover out of how many."""
        count = len(self.rows)
        lpips_values = [r.lpips for r in self.rows if r.lpips is not None]
        return {
            "psnr": sum(r.psnr for r in self.rows) / count if count else None,
            "ssim": sum(r.ssim for r in self.rows) / count if count else None,
            "lpips": sum(lpips_values) / count if count and len(lpips_values) == count else None,
            "items": count,
            "of": self.total,
        }

    def summary(self) -> str:
        """One line: the averages and the item count they cover."""
        m = self.mean()
        if not m["items"]:
            return f"{self.name}: no item could be scored (0 of {self.total})"
        return (
            f"{self.name}: mean over {m['items']} of {self.total} items: PSNR {m['psnr']:.2f}  "
            f"SSIM {m['ssim']:.4f}  LPIPS {_fmt_lpips(m['lpips'])}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (non-finite numbers become ``null``)."""
        return _finite(
            {
                "items": [asdict(r) for r in self.rows],
                "skipped": [{"name": n, "reason": why} for n, why in self.skipped],
                "mean": self.mean(),
            }
        )


def _fmt_lpips(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _finite(obj: Any) -> Any:
    """Replace inf/nan (e.g. PSNR of identical images) by ``None`` so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def error_heatmap(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over channels as an 'inferno' colour map (3, H, W); full scale = 0.25."""
    from matplotlib import colormaps

    error = (pred - gt).abs().mean(dim=0).div(HEATMAP_FULL_SCALE).clamp(0, 1)
    rgb = colormaps["inferno"](error.cpu().numpy())[..., :3]
    return torch.from_numpy(rgb).permute(2, 0, 1).float()


def _write_grid(path: Path, frame0: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor, frame2: torch.Tensor) -> None:
    """Input A, prediction, ground truth, input C and the error heat map, side by side."""
    write_image(path, torch.cat([frame0, pred, gt, frame2, error_heatmap(pred, gt)], dim=2))


def read_item(item: BenchmarkItem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The triplet ``(frame0, frame2, gt)`` as the model sees it: read, then mirrored as the item says
    (``hflip``: left-right, ``vflip``: top-bottom; all three frames alike). Raises ValueError naming
    the file or the size mismatch."""
    frame0, frame2, gt = read_image(item.frame0), read_image(item.frame2), read_image(item.gt)
    sizes = {"frame0": frame0.shape[1:], "frame2": frame2.shape[1:], "gt": gt.shape[1:]}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{k} {s[1]}x{s[0]}" for k, s in sizes.items())
        raise ValueError(f"size mismatch ({listed})")
    dims = [2] * item.hflip + [1] * item.vflip
    if dims:
        frame0, frame2, gt = (torch.flip(t, dims) for t in (frame0, frame2, gt))
    return frame0, frame2, gt


def evaluate_items(
    model: nn.Module,
    items: Sequence[BenchmarkItem],
    out_dir: str | Path | None,
    *,
    name: str = "eval",
    device: torch.device | str = "cpu",
    lpips_model: nn.Module | None = None,
    save_grid: bool = False,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
    progress: bool = True,
    print_rows: bool = True,
    layout: OutputLayout = PROJECT,
    runtime: Runtime | None = None,
) -> SetResult:
    """Interpolate and score ``items``; predictions go where ``layout`` says under ``out_dir``
    (this project's: ``out_dir/<item.name>/<item.output_name>``), rows are printed in its format.

    With ``out_dir=None`` nothing is written and the prediction is quantised in memory to the same
    8-bit values a PNG would hold (for cheap per-epoch validation). The model's train/eval mode is
    restored afterwards. ``runtime`` gives the device and precision; without it, ``device`` and
    ``autocast`` (a context factory for reduced precision; default: fp32) do.
    """
    if runtime is not None:
        device = runtime.device
        autocast = autocast or runtime.autocast
    device = torch.device(device)
    result = SetResult(name, total=len(items))
    was_training = model.training
    model.eval()
    if print_rows:
        for line in layout.header(name):
            tqdm.write(line, file=sys.stdout)
    bar = tqdm(items, desc=name, unit="item", file=sys.stderr, disable=not progress, leave=False)
    try:
        for index, item in enumerate(bar):
            try:
                frame0, frame2, gt = read_item(item)
                with torch.no_grad(), autocast() if autocast else contextlib.nullcontext():
                    out = model(frame0[None].to(device), frame2[None].to(device))
                pred = out["frame1"] if isinstance(out, dict) else out
                pred = pred[0].float().cpu()
            except ValueError as exc:
                result.skipped.append((item.name, str(exc)))
                tqdm.write(f"skipped {name}/{item.name}: {exc}", file=sys.stderr)
                continue
            output = None
            if out_dir is not None:
                output = layout.output_path(Path(out_dir), name, item, index)
                write_image(output, pred)
                pred = read_image(output)
                if save_grid:
                    _write_grid(layout.grid_path(output), frame0, pred, gt, frame2)
            else:
                pred = quantize(pred)
            lpips_value = None
            if lpips_model is not None:
                with torch.no_grad():
                    lpips_value = float(lpips_model(pred[None].to(device), gt[None].to(device)).item())
            row = ItemResult(item.name, psnr(gt, pred), ssim(gt, pred), lpips_value, str(output) if output else None)
            result.rows.append(row)
            if print_rows:
                tqdm.write(layout.row(name, index, row), file=sys.stdout)
    finally:
        bar.close()
        model.train(was_training)
    return result


def evaluate_set(
    model: nn.Module,
    bench: BenchmarkSet,
    out_root: str | Path | None,
    *,
    limit: int | None = None,
    layout: OutputLayout = PROJECT,
    **kwargs: Any,
) -> SetResult:
    """``evaluate_items`` on a benchmark set (first ``limit`` items), writing to the set's folder of
    ``layout`` under ``out_root`` (this project's: ``out_root/<bench.folder>``)."""
    items = bench.items[:limit] if limit is not None else bench.items
    out_dir = layout.set_dir(out_root, bench.key, bench.folder) if out_root is not None else None
    return evaluate_items(model, items, out_dir, name=bench.key, layout=layout, **kwargs)


def write_results_json(
    path: str | Path, results: Iterable[SetResult], meta: dict[str, Any] | None = None, force: bool = True
) -> Path:
    """Write ``{"meta": ..., "sets": {name: {items, skipped, mean}}}`` atomically."""
    payload = {"meta": _finite(meta or {}), "sets": {r.name: r.to_dict() for r in results}}
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n", force)
    return Path(path)
