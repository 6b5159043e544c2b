"""Parameters and seconds per interpolated frame of every variant, through the inference API that the
CLIs use (``cdfi.inference.interpolator.Interpolator``: device, precision, automatic tiling), in one table.

Frames are 256x256, 640x480 and 1920x1080 by default, on the CPU and on the GPU when there is one. Each
configuration is warmed up once, then timed ``--repeats`` times (the median is kept); the warp share
is the time spent inside the AdaCoF warp calls. Models have seeded random weights: speed does not
depend on the weight values (offsets stay small, as in a trained model on slow motion).

    python benchmarks/speed.py                                  # all five variants, CPU (+ GPU)
    python benchmarks/speed.py --variants compressed_adacof_F_5_D_1 --sizes 640x480 --precision bf16
    python benchmarks/speed.py --devices cuda --precision fp16 --repeats 5 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.inference.cli import tile_arg
from cdfi.inference.ensemble import check_ensemble_size
from cdfi.inference.interpolator import Interpolator, pick_device
from cdfi.io.atomic import atomic_write_text, ensure_writable
from cdfi.runtime.precision import PRECISIONS, resolve_precision
from models import make_model, variant_name

VARIANTS = {
    variant_name(name, k, d): (name, k, d)
    for name, k, d in (
        ("adacof", 5, 1),
        ("compressed_adacof", 5, 1),
        ("adacof", 11, 2),
        ("compressed_adacof", 11, 2),
        ("cdfi_adacof", 11, 2),
    )
}
DEFAULT_SIZES = "256x256,640x480,1920x1080"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"640x480,1920x1080"`` -> [(640, 480), (1920, 1080)] (width x height)."""
    sizes = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
        if min(w, h) < 17:
            raise argparse.ArgumentTypeError(f"size {item!r}: both sides need at least 17 px")
        sizes.append((w, h))
    return sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_warp(model: torch.nn.Module, device: torch.device, spent: list[float]) -> None:
    """Shadow ``model.warp`` and ``model.warp_many`` with versions that add their wall time to ``spent``."""

    def timed(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            _sync(device)
            start = time.perf_counter()
            out = original(*args)
            _sync(device)
            spent.append(time.perf_counter() - start)
            return out

        return wrapper

    model.warp = timed(model.warp)  # type: ignore[method-assign]
    model.warp_many = timed(model.warp_many)  # type: ignore[method-assign]


def parse_mode(text: str) -> tuple[int, bool]:
    """``plain``, ``prealign``, ``ensembleN`` or ``prealign+ensembleN`` as (ensemble size, prealign)."""
    ensemble, prealign = 1, False
    for part in text.strip().split("+"):
        if part == "prealign":
            prealign = True
        elif part.startswith("ensemble") and part[8:].isdigit():
            ensemble = int(part[8:])
        elif part != "plain":
            raise ValueError(f"unknown mode {text!r}: use plain, prealign, ensembleN or prealign+ensembleN")
    return ensemble, prealign


def bench(
    variant: str,
    device: torch.device,
    precision: str,
    size: tuple[int, int],
    repeats: int,
    tile: int | str | None,
    mode: str = "plain",
) -> dict[str, Any]:
    """Time one configuration; returns a row of the table."""
    name, k, d = VARIANTS[variant]
    torch.manual_seed(0)
    model = make_model(name, k, d)
    params = sum(p.numel() for p in model.parameters())
    ensemble, prealign = parse_mode(mode)
    interp = Interpolator(model, device=device, precision=precision, tile=tile, ensemble=ensemble, prealign=prealign)
    spent: list[float] = []
    _timed_warp(interp.model, device, spent)
    w, h = size
    g = torch.Generator().manual_seed(1)
    frame0 = torch.rand(3, h, w, generator=g)
    frame1 = (frame0 + 0.05 * torch.rand(3, h, w, generator=g)).clamp(0, 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, warps = [], []
    for i in range(repeats + 1):
        spent.clear()
        _sync(device)
        start = time.perf_counter()
        interp.interpolate(frame0, frame1)
        _sync(device)
        if i:  # the first run is the warm-up
            times.append(time.perf_counter() - start)
            warps.append(sum(spent))
    seconds = statistics.median(times)
    row = {
        "variant": variant,
        "mode": mode,
        "params": params,
        "device": str(device),
        "precision": interp.precision,
        "size": f"{w}x{h}",
        "seconds": seconds,
        "fps": 1.0 / seconds,
        "warp_share": statistics.median(warps) / seconds if seconds else 0.0,
        "tile": interp.tile_size(h, w),
    }
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def device_label(device: torch.device) -> str:
    """The GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    """Print the table (and write --json); returns the exit status."""
    p = argparse.ArgumentParser(description="Seconds per interpolated frame of each variant, CPU and GPU.")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated among {', '.join(VARIANTS)} (default: all)"
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"comma-separated WIDTHxHEIGHT (default {DEFAULT_SIZES})",
    )
    p.add_argument("--devices", default=None, help="cpu,cuda or one of them (default: cpu, plus cuda if present)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", *PRECISIONS),
        help="fp32, bf16 (CPUs with native bf16, recent GPUs), fp16 (GPU), "
        "auto (default: bf16 on CPUs with native bf16, fp32 elsewhere)",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed runs per configuration after a warm-up (default 1)")
    p.add_argument(
        "--tile", type=tile_arg, default="auto", help="auto (tile only when memory requires), 0 (never) or a size"
    )
    p.add_argument(
        "--modes",
        default="plain",
        help="comma-separated among plain, prealign, ensembleN, prealign+ensembleN; rows after the first show "
        "their time relative to it (default plain)",
    )
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite --json if it exists")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        print(
            f"error: unknown variant(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}",
            file=sys.stderr,
        )
        return 1
    tile: int | str | None = args.tile
    names = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        if args.json:
            ensure_writable(args.json, args.force)
        devices = [pick_device(n.strip()) for n in names]
        precisions = {dev: resolve_precision(args.precision, dev) for dev in devices}
        for mode in modes:
            ensemble, _ = parse_mode(mode)
            check_ensemble_size(ensemble)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = []
    print("| variant | mode | params | device | precision | size | s/frame | frames/s | warp share | tile |")
    print("|---|---|---:|---|---|---|---:|---:|---:|---|")
    for dev in devices:
        for variant in variants:
            for size in args.sizes:
                first = None
                for mode in modes:
                    row = bench(variant, dev, precisions[dev], size, args.repeats, tile, mode)
                    rows.append(row)
                    first = first or row["seconds"]
                    tile_text = f"{row['tile']} px" if row["tile"] else "-"
                    ratio = f" ({row['seconds'] / first:.2f}x)" if mode != modes[0] else ""
                    print(
                        f"| {variant} | {mode} | {row['params']:,} | {dev.type} | {row['precision']} | {row['size']} | "
                        f"{row['seconds']:.3f}{ratio} | {row['fps']:.2f} | {row['warp_share']:.0%} | {tile_text} |",
                        flush=True,
                    )
    for dev in devices:
        print(f"\n{dev.type}: {device_label(dev)}; torch {torch.__version__}", end="")
    print()
    if args.json:
        payload = {"devices": {str(d): device_label(d) for d in devices}, "rows": rows}
        try:
            atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n", force=args.force)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
