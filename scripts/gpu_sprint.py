"""GPU training sprint: fine-tune both shipped models for a fixed wall-clock budget on one device.

    python scripts/gpu_sprint.py --data build/sprint --out $OUT                      # on the GPU machine
    python scripts/gpu_sprint.py --data build/sprint --out run --device cpu --budget_min 1 --batch 2 --crop 64
    python scripts/gpu_sprint.py --measure --out $OUT                              # steps/s of each model alone

Trains each checkpoint (default: the two shipped files) in turn for its share of ``--budget_min`` on the
bundle of ``scripts/pack_sprint_data.py``, with the data on the device, bf16 autocast and channels_last,
and writes to ``--out``: one checkpoint per model (fp16 weights, ``<variant>_sprint.pth``), curves.csv,
curves.png, summary.txt (one screen) and summary.json, rewritten every ``--save_every_s`` seconds and
on SIGTERM, so a run stopped at the call's limit leaves its last ones. Bad input (no device, too little
device memory for the batch, a budget that cannot fit ``--limit_min``, a damaged bundle) is one line and
exit 2 before any work; a run stopped by a signal exits 128 + the signal number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import run_cli

STARTED = time.monotonic()
"""The call's clock: taken before torch is imported (``main`` imports it), which takes seconds on a fresh machine."""

CHECKPOINTS = ("checkpoints/cdfi_adacof_ours.pth", "checkpoints/compressed_adacof_F_5_D_1_ours.pth")


def say(line: str) -> None:
    """Print a progress line; a closed output (a pipe whose reader was killed with the call) is ignored,
    so that it cannot stop the last checkpoint from being written."""
    with contextlib.suppress(OSError):
        print(line, flush=True)


def _parse_losses(items: Sequence[str]) -> dict[str, str]:
    from cdfi.training.sprint.run import SprintError

    out = {}
    for item in items:
        family, sep, spec = item.partition("=")
        if not sep or not spec:
            raise SprintError(f"--loss {item!r}: expected FAMILY=LOSS, e.g. cdfi_adacof=1*Charb+1*Warp")
        out[family] = spec
    return out


def _parse_shares(text: str) -> list[float]:
    from cdfi.training.sprint.run import SprintError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SprintError(f"--shares {text!r}: expected comma-separated numbers, e.g. 2,1") from None


def options(args: argparse.Namespace) -> Any:
    """The parsed flags as ``SprintOptions`` (minutes turned into seconds)."""
    from cdfi.training.sprint.run import SprintOptions

    return SprintOptions(
        data=args.data,
        out=args.out,
        checkpoints=[Path(p) for p in args.checkpoints],
        shares=_parse_shares(args.shares),
        budget_s=args.budget_min * 60,
        limit_s=args.limit_min * 60,
        reserve_s=args.reserve_min * 60,
        tail_s=args.tail_s,
        batch=args.batch,
        crop=args.crop,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        final_lr=args.final_lr,
        motion_crop=args.motion_crop,
        log_every=args.log_every,
        save_every_s=args.save_every_s,
        mid_validation=not args.no_mid_validation,
        val_limit=args.val_limit,
        compile=args.compile,
        seed=args.seed,
        losses=_parse_losses(args.loss),
        decode_threads=args.decode_threads,
        force=args.force,
    )


def work(args: argparse.Namespace) -> int:
    """Check everything that needs no device first, then run the sprint or the measurement."""
    from cdfi.io.atomic import atomic_write_text
    from cdfi.runtime import resolve_runtime
    from cdfi.training.sprint.loop import StopFlag
    from cdfi.training.sprint.run import SprintError, check_options, measure, run_sprint

    if args.measure:
        if args.out is not None and args.out.is_file():
            raise SprintError(f"{args.out}: is a file, not a folder")
        runtime = resolve_runtime(args)
        rows = measure(
            [Path(p) for p in args.checkpoints],
            runtime,
            batch=args.batch,
            crop=args.crop,
            warmup=args.measure_warmup,
            steps=args.measure_steps,
            data=args.data if args.data is not None and args.data.exists() else None,
            compile_mode=args.compile,
            log=say,
        )
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out / "measure.json", json.dumps(rows, indent=1) + "\n")
        return 0
    if args.out is None or args.data is None:
        raise SprintError("--data and --out are needed (or --measure)")
    opts = options(args)
    check_options(opts)  # the budget against the limit: before the device is even looked at
    runtime = resolve_runtime(args)
    stop = StopFlag()
    signals: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        stop.set(f"signal {signal.Signals(signum).name}")
        for sig, previous in signals.items():
            signal.signal(sig, previous)  # a second signal acts at once

    for sig in (signal.SIGTERM, signal.SIGINT):
        signals[sig] = signal.signal(sig, handler)
    report = run_sprint(opts, runtime, started=STARTED, stop=stop, log=say)
    say((args.out / "summary.txt").read_text().rstrip("\n"))
    if stop.reason:
        name = stop.reason.split()[-1]
        return 128 + int(getattr(signal, name, signal.SIGTERM))
    return 0 if report["models"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    from cdfi.runtime import add_runtime_arguments
    from cdfi.training.sprint.run import COMPILE_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="bundle folder (scripts/pack_sprint_data.py)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (empty, or --force)")
    parser.add_argument("--checkpoints", nargs="+", default=list(CHECKPOINTS), help="checkpoints to train, in order")
    parser.add_argument("--shares", default="2,1", help="budget weights of the checkpoints (default 2,1)")
    parser.add_argument("--budget_min", type=float, default=9.0, help="minutes of training in all (default 9)")
    parser.add_argument("--limit_min", type=float, default=12.0, help="the call's time limit (default 12)")
    parser.add_argument(
        "--reserve_min", type=float, default=2.0, help="minutes kept for set-up, validation and writing (default 2)"
    )
    parser.add_argument("--tail_s", type=float, default=40.0, help="seconds before the limit training must end by")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (Adamax; default 2e-4)")
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--final_lr", type=float, default=0.05, help="learning rate at the end, times --lr")
    parser.add_argument("--motion_crop", type=float, default=0.5, help="share of motion-aware crops (recipe: 0.5)")
    parser.add_argument("--loss", action="append", default=[], metavar="FAMILY=LOSS", help="override a loss string")
    parser.add_argument("--log_every", type=int, default=50, help="steps between loss read-backs (default 50)")
    parser.add_argument("--save_every_s", type=float, default=60.0, help="seconds between checkpoint writes")
    parser.add_argument("--no_mid_validation", action="store_true", help="validate only at the start and end")
    parser.add_argument("--val_limit", type=int, default=None, help="validate on the first N triplets only (CPU runs)")
    parser.add_argument(
        "--compile", default="off", choices=COMPILE_MODES, help="torch.compile mode (reduce-overhead: CUDA graphs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode_threads", type=int, default=8)
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--measure", action="store_true", help="only time training steps of each model alone")
    parser.add_argument("--measure_steps", type=int, default=100)
    parser.add_argument("--measure_warmup", type=int, default=20)
    add_runtime_arguments(parser, precision_default="bf16")
    parser.set_defaults(device="cuda")
    args = parser.parse_args(argv)
    return run_cli(work, args, status=lambda code: code, on_interrupt="interrupted")


if __name__ == "__main__":
    sys.exit(main())
