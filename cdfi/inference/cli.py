"""Command-line pieces shared by ``interpolate_twoframe.py`` and ``interpolate_video.py``: model,
device, precision, tiling, self-ensemble and pre-alignment flags, and building an ``Interpolator`` from them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdfi.inference.ensemble import add_ensemble_argument
from cdfi.inference.interpolator import DEFAULT_OVERLAP, Interpolator, pick_device
from cdfi.inference.prealign import add_prealign_argument
from cdfi.io.paths import CHECKPOINT_DIR, resolve_checkpoint
from cdfi.runtime.precision import add_precision_argument, resolve_precision
from models import list_models

DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "CDFI_adacof.pth"
"""The published default; ``resolve_checkpoint`` falls back to this project's shipped file."""


def tile_arg(text: str) -> int | str | None:
    """``--tile`` values: ``auto``, ``0``/``off`` (never tile) or a size in pixels (>= 64)."""
    low = text.strip().lower()
    if low == "auto":
        return "auto"
    if low in ("0", "off", "none"):
        return None
    try:
        size = int(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, 0 or a size in pixels, got {text!r}") from None
    if size < 64:
        raise argparse.ArgumentTypeError(f"tile size must be at least 64 px, got {size}")
    return size


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Checkpoint and variant flags (published names), device, precision and tiling."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file (default: checkpoints/CDFI_adacof.pth, else this project's shipped one)",
    )
    g.add_argument(
        "--model", choices=list_models(), default=None, help="model family; default: detected from the checkpoint"
    )
    g.add_argument(
        "--kernel_size",
        type=int,
        default=None,
        help="kernel size F; default: detected from the checkpoint (CDFI_adacof.pth holds 11)",
    )
    g.add_argument(
        "--dilation",
        type=int,
        default=None,
        help="dilation D; default: detected from the checkpoint (CDFI_adacof.pth holds 2)",
    )
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    r.add_argument("--gpu_id", type=int, default=None, help="published flag: same as --device cuda:N")
    add_precision_argument(r, default="auto")
    r.add_argument(
        "--tile",
        type=tile_arg,
        default="auto",
        help="tile size in px for large frames: auto (only when memory requires), 0 (never), or N",
    )
    r.add_argument(
        "--tile_overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"overlap of neighbouring tiles in px (default {DEFAULT_OVERLAP})",
    )
    add_ensemble_argument(r)
    add_prealign_argument(r)


def checkpoint_path(args: argparse.Namespace) -> Path:
    """The checkpoint to load: ``--checkpoint`` (must exist) or the default with its fallback."""
    if args.checkpoint:
        return resolve_checkpoint(args.checkpoint, explicit=True)
    return resolve_checkpoint(DEFAULT_CHECKPOINT)


def build_interpolator(args: argparse.Namespace, checkpoint: Path, batch_size: int = 1) -> Interpolator:
    """Validate device and precision (before loading anything), then load the model once."""
    device = pick_device(f"cuda:{args.gpu_id}" if args.gpu_id is not None else args.device)
    precision = resolve_precision(args.precision, device)
    interp = Interpolator.from_checkpoint(
        checkpoint,
        args.model,
        args.kernel_size,
        args.dilation,
        device=device,
        precision=precision,
        tile=args.tile,
        overlap=args.tile_overlap,
        batch_size=batch_size,
        ensemble=args.ensemble,
        prealign=args.prealign,
    )
    extras = [f"self-ensemble of {args.ensemble}"] * (args.ensemble > 1) + ["pre-aligned"] * args.prealign
    mode = ", ".join([precision, *extras])
    print(f"model {interp.variant} from {checkpoint} on {device} ({mode})", file=sys.stderr)
    return interp
