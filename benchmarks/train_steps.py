"""Training throughput: optimizer steps per second of ``cdfi.training.trainer.Trainer.train_step``.

    python benchmarks/train_steps.py --models compressed_adacof,cdfi_adacof --crops 128,256 \\
        --batches 4,8 --precisions fp32,bf16 --data db/offline

Each configuration builds the published variant, prepares it as ``train.py`` does
(``cdfi.runtime.precision.prepare_model``), and times ``--steps`` full steps (forward, loss
``1*Charb+0.01*g_Spatial``, backward, Adamax) after ``--warmup`` steps, on crops of real triplets from
``--data`` (a triplet folder) or on random frames. Data loading is not timed: ``train.py`` overlaps it
with ``--workers``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from cdfi.io.atomic import atomic_write_text, ensure_writable
from cdfi.runtime import Runtime, resolve_device
from cdfi.runtime.precision import prepare_model, resolve_precision
from cdfi.training.losses import CompositeLoss
from cdfi.training.optim import build_optimizer
from cdfi.training.trainer import Trainer, TrainerOptions
from datasets.vimeo import VimeoTriplets
from models import list_models, make_model


def _batches(data: str | None, crop: int, batch: int, count: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    if data is None:
        gen = torch.Generator().manual_seed(seed)
        return [tuple(torch.rand(batch, 3, crop, crop, generator=gen) for _ in range(3)) for _ in range(count)]
    dataset = VimeoTriplets(data, crop=crop, seed=seed, check_sizes=False)
    out = []
    for b in range(count):
        items = [dataset[(b * batch + i) % len(dataset)] for i in range(batch)]
        out.append(tuple(torch.stack([it[k] for it in items]) for k in range(3)))
    return out


def measure(
    model_name: str,
    crop: int,
    batch: int,
    precision: str,
    device: torch.device,
    steps: int,
    warmup: int,
    data: str | None,
) -> dict:
    """Steps per second of one configuration."""
    torch.manual_seed(0)
    model = prepare_model(make_model(model_name), device, precision)
    optimizer = build_optimizer("ADAMax", model.parameters(), 1e-3)
    loss = CompositeLoss("1*Charb+0.01*g_Spatial")
    trainer = Trainer(model, optimizer, [], loss, Runtime(device, precision), TrainerOptions(progress=False))
    batches = _batches(data, crop, batch, warmup + steps, seed=0)
    for b in batches[:warmup]:
        trainer.train_step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches[warmup:]:
        trainer.train_step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "model": model_name,
        "crop": crop,
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "samples_per_s": steps * batch / seconds,
    }


def _int_list(text: str) -> list[int]:
    """``"128,256"`` -> [128, 256] (argparse type; positive integers)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Print steps per second per configuration (and write --out); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=_name_list,
        default="compressed_adacof,cdfi_adacof",
        help="comma-separated model families (default compressed_adacof,cdfi_adacof)",
    )
    p.add_argument(
        "--crops", type=_int_list, default="128,256", help="comma-separated square crop sizes in px (default 128,256)"
    )
    p.add_argument("--batches", type=_int_list, default="4,8", help="comma-separated batch sizes (default 4,8)")
    p.add_argument(
        "--precisions", type=_name_list, default="fp32,bf16", help="comma-separated precisions (default fp32,bf16)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default 2)")
    p.add_argument("--data", help="triplet folder to crop real frames from (default: random frames)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in list_models()]
    if unknown or not args.models:
        p.error(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(list_models())}")
    if args.steps < 1 or args.warmup < 0:
        p.error(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if min(args.crops) < 17:
        p.error(f"--crops must be at least 17 px, got {min(args.crops)}")
    try:
        if args.out:
            ensure_writable(args.out, args.force)
        device = resolve_device(args.device)
        precisions = [resolve_precision(name, device) for name in args.precisions]
        if args.data is not None:  # reads the list file and checks that the largest crop fits the frames
            VimeoTriplets(args.data, crop=max(args.crops), seed=0, check_sizes=False)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for model_name in args.models:
        for crop in args.crops:
            for batch in args.batches:
                for precision in precisions:
                    row = measure(model_name, crop, batch, precision, device, args.steps, args.warmup, args.data)
                    rows.append(row)
                    print(
                        f"{model_name:18s} crop {crop:4d} batch {batch:2d} {precision:5s} {device}: "
                        f"{row['steps_per_s']:.3f} steps/s ({row['samples_per_s']:.2f} samples/s)",
                        flush=True,
                    )
    if args.out:
        try:
            atomic_write_text(args.out, json.dumps(rows, indent=1) + "\n", force=args.force)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
