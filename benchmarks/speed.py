"""Parameters and seconds per interpolated frame of every variant, through the inference API that the
CLIs use (``cdfi.inference.interpolator.Interpolator``: runtime, options, automatic tiling), in one table.

Frames are 256x256, 640x480 and 1920x1080 by default, on the CPU and on the GPU when there is one
(``--devices`` lists several devices; ``--device``/``--gpu_id`` pick one, as in every script). Each
configuration is warmed up once, then timed ``--repeats`` times (the median is kept); the warp share
is the time spent inside the AdaCoF warp calls. Models have seeded random weights: speed does not
depend on the weight values (offsets stay small, as in a trained model on slow motion).

    python benchmarks/speed.py                                  # all five variants, CPU (+ GPU)
    python benchmarks/speed.py --variants compressed_adacof_F_5_D_1 --sizes 640x480 --precision bf16
    python benchmarks/speed.py --devices cuda --precision fp16 --repeats 5 --json speed.json
    python benchmarks/speed.py --device cpu --threads 1 --variants cdfi_adacof_F_11_D_2

Exit status: 0 done, 2 bad arguments (or --json in the way without --force), 1 --json cannot be written.
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

from cdfi.cli import UsageError, run_cli
from cdfi.inference.cli import tile_arg
from cdfi.inference.interpolator import Interpolator
from cdfi.inference.stack import InferenceOptions
from cdfi.io.atomic import atomic_write_text, ensure_writable
from cdfi.runtime import Runtime, add_runtime_arguments, resolve_runtime
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


def parse_mode(text: str) -> InferenceOptions:
    """``plain``, ``prealign``, ``ensembleN`` or ``prealign+ensembleN`` as inference options."""
    ensemble, prealign = 1, False
    for part in text.strip().split("+"):
        if part == "prealign":
            prealign = True
        elif part.startswith("ensemble") and part[8:].isdigit():
            ensemble = int(part[8:])
        elif part != "plain":
            raise UsageError(f"--modes: unknown mode {text!r}; use plain, prealign, ensembleN or prealign+ensembleN")
    try:
        return InferenceOptions(prealign=prealign, ensemble=ensemble)
    except ValueError as exc:
        raise UsageError(f"--modes {text}: {exc}") from None


def bench(
    variant: str,
    runtime: Runtime,
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
    interp = Interpolator(model, runtime, parse_mode(mode), tile=tile)
    device = runtime.device
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


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags, with the runtime flags every script has."""
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
    p.add_argument(
        "--devices",
        default=None,
        help="comma-separated devices for one table (e.g. cpu,cuda); default: --device when given, "
        "else cpu plus cuda if present",
    )
    add_runtime_arguments(p, precision_default="auto")
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
    return p


def runtimes(args: argparse.Namespace) -> list[Runtime]:
    """One resolved runtime per device of the table (precision and threads from the runtime flags)."""
    if args.devices:
        names = [n.strip() for n in args.devices.split(",") if n.strip()]
        return [resolve_runtime(device=n, precision=args.precision, threads=args.threads) for n in names]
    if args.device != "auto" or args.gpu_id is not None:
        return [resolve_runtime(args)]
    names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [resolve_runtime(device=n, precision=args.precision, threads=args.threads) for n in names]


def run(args: argparse.Namespace) -> None:
    """Check every flag first, then print the table (and write --json)."""
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UsageError(
            f"--variants: unknown variant(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}"
        )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        parse_mode(mode)
    if args.json:
        ensure_writable(args.json, args.force)
    runs = runtimes(args)
    rows = []
    print("| variant | mode | params | device | precision | size | s/frame | frames/s | warp share | tile |")
    print("|---|---|---:|---|---|---|---:|---:|---:|---|")
    for runtime in runs:
        for variant in variants:
            for size in args.sizes:
                first = None
                for mode in modes:
                    row = bench(variant, runtime, size, args.repeats, args.tile, mode)
                    rows.append(row)
                    first = first or row["seconds"]
                    tile_text = f"{row['tile']} px" if row["tile"] else "-"
                    ratio = f" ({row['seconds'] / first:.2f}x)" if mode != modes[0] else ""
                    print(
                        f"| {variant} | {mode} | {row['params']:,} | {runtime.device.type} | {row['precision']} | "
                        f"{row['size']} | {row['seconds']:.3f}{ratio} | {row['fps']:.2f} | {row['warp_share']:.0%} | "
                        f"{tile_text} |",
                        flush=True,
                    )
    for runtime in runs:
        print(f"\n{runtime.device.type}: {device_label(runtime.device)}; torch {torch.__version__}", end="")
    print()
    if args.json:
        payload = {"devices": {str(r.device): device_label(r.device) for r in runs}, "rows": rows}
        atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n", force=args.force)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    return run_cli(run, args, on_interrupt="interrupted" + (f"; {args.json} was not written" if args.json else ""))


if __name__ == "__main__":
    sys.exit(main())
