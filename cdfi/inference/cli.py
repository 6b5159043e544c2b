"""Command-line pieces shared by ``interpolate_twoframe.py`` and ``interpolate_video.py``: the model flags
(the published ``--checkpoint``, ``--kernel_size``, ``--dilation``, AdaCoF-pytorch's ``--model`` and
``--config``), the runtime flags of ``cdfi.runtime``, tiling, self-ensemble and pre-alignment; building
an ``Interpolator`` from them; and the two-frame command's work.

Every check that needs no model runs first, so bad input fails in one line (exit 2 under
``cdfi.cli.run_cli``) before the checkpoint is read and with nothing written.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cdfi.cli import UsageError
from cdfi.inference.ensemble import add_ensemble_argument
from cdfi.inference.frames import check_pair
from cdfi.inference.interpolator import Interpolator
from cdfi.inference.prealign import add_prealign_argument
from cdfi.inference.stack import InferenceOptions
from cdfi.inference.tiling import DEFAULT_OVERLAP
from cdfi.io.adacof_config import sizes_agreeing_with_config
from cdfi.io.atomic import ensure_writable
from cdfi.io.checkpoint import VariantMismatchError
from cdfi.io.images import IMAGE_SUFFIXES, read_image, write_image
from cdfi.io.paths import CHECKPOINT_DIR, resolve_checkpoint
from cdfi.runtime import add_runtime_arguments, resolve_runtime
from models import list_models

DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "CDFI_adacof.pth"
"""The published default; ``resolve_checkpoint`` falls back to this project's shipped file."""

ADACOF_CHECKPOINT = "ckpt.pth"
"""The checkpoint AdaCoF-pytorch keeps beside its ``config.txt``: the default with ``--config``."""

MODEL_ALIASES = {"adacofnet": "adacof"}
"""AdaCoF-pytorch's ``--model`` values and the model family they name here."""


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


def model_arg(text: str) -> str:
    """``--model`` values: a family of ``models.list_models()``, or AdaCoF-pytorch's ``adacofnet``."""
    return MODEL_ALIASES.get(text.strip().lower(), text.strip().lower())


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Checkpoint and variant flags (published names), the runtime flags, tiling, ensemble, pre-alignment."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file (default: checkpoints/CDFI_adacof.pth, else this project's shipped one; "
        f"with --config, {ADACOF_CHECKPOINT} beside it)",
    )
    g.add_argument(
        "--config",
        default=None,
        help="AdaCoF-pytorch's config.txt: load its checkpoint as AdaCoF with the kernel size and dilation it "
        "gives (dilation 1 when it names none)",
    )
    g.add_argument(
        "--model",
        type=model_arg,
        choices=list_models(),
        default=None,
        help="model family (AdaCoF-pytorch's adacofnet means adacof); default: detected from the checkpoint",
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
    add_runtime_arguments(parser, precision_default="auto")
    r = parser.add_argument_group("inference")
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


@dataclass(frozen=True)
class ModelRequest:
    """The variant the flags ask for (``None``: detect from the checkpoint) and the config it came from."""

    model: str | None = None
    kernel_size: int | None = None
    dilation: int | None = None
    config: Path | None = None

    @property
    def assume_dilation(self) -> int | None:
        """AdaCoF-pytorch files carry no dilation; their config.txt gives it."""
        return self.dilation if self.config is not None else None

    def flags(self) -> str:
        """The flags behind this request, as typed (for error lines)."""
        if self.config is not None:
            return f"--config {self.config}"
        given = [("--model", self.model), ("--kernel_size", self.kernel_size), ("--dilation", self.dilation)]
        return " ".join(f"{flag} {value}" for flag, value in given if value is not None)


def model_request(args: argparse.Namespace) -> ModelRequest:
    """``--model``/``--kernel_size``/``--dilation``, or ``--config`` (which must agree with any of them)."""
    for flag, value in (("--kernel_size", args.kernel_size), ("--dilation", args.dilation)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if getattr(args, "config", None) is None:
        return ModelRequest(args.model, args.kernel_size, args.dilation)
    config = Path(args.config)
    if args.model not in (None, "adacof"):
        raise UsageError(f"--config loads an AdaCoF-pytorch checkpoint (model adacof); drop --model {args.model}")
    k, d = sizes_agreeing_with_config(config, args.kernel_size, args.dilation)
    return ModelRequest("adacof", k, d, config)


def checkpoint_path(args: argparse.Namespace) -> Path:
    """The checkpoint to load: ``--checkpoint`` (must exist), with ``--config`` the ``ckpt.pth`` beside
    it, else the published default with its fallback."""
    if args.checkpoint:
        return resolve_checkpoint(args.checkpoint, explicit=True)
    if getattr(args, "config", None) is not None:
        return resolve_checkpoint(Path(args.config).parent / ADACOF_CHECKPOINT, explicit=True)
    return resolve_checkpoint(DEFAULT_CHECKPOINT)


def _mismatch(request: ModelRequest, exc: VariantMismatchError) -> UsageError:
    """The variant flags that do not fit the checkpoint, and the values that would."""
    model, k, d = exc.have
    if request.config is not None:
        return UsageError(f"--config {request.config}: {exc}; use that checkpoint's own config.txt")
    fits = {"--model": model, "--kernel_size": k, "--dilation": d}
    given = {"--model": request.model, "--kernel_size": request.kernel_size, "--dilation": request.dilation}
    use = " ".join(f"{flag} {fits[flag]}" for flag, value in given.items() if value is not None)
    return UsageError(f"{request.flags()}: {exc}; use {use} or leave the flags out (the variant is detected)")


def build_interpolator(args: argparse.Namespace, checkpoint: Path, batch_size: int = 1) -> Interpolator:
    """Check the model flags and resolve the runtime once (before loading anything), then load the model
    once; prints one line naming the model, the checkpoint and where it runs."""
    request = model_request(args)
    runtime = resolve_runtime(args)
    options = InferenceOptions(prealign=args.prealign, ensemble=args.ensemble)
    try:
        interp = Interpolator.from_checkpoint(
            checkpoint,
            request.model,
            request.kernel_size,
            request.dilation,
            runtime=runtime,
            options=options,
            tile=args.tile,
            overlap=args.tile_overlap,
            batch_size=batch_size,
            assume_dilation=request.assume_dilation,
        )
    except VariantMismatchError as exc:
        raise _mismatch(request, exc) from None
    count = torch.get_num_threads()
    threads = f", {count} thread{'s' * (count != 1)}" if runtime.device.type == "cpu" else ""
    print(f"model {interp.variant} from {checkpoint} on {interp.describe()}{threads}", file=sys.stderr)
    return interp


def interpolate_two_frames(args: argparse.Namespace) -> Path:
    """The work of ``interpolate_twoframe.py``: check everything cheap first (the output and that its folder
    is writable, both frames, the model flags, the checkpoint), then load the model and write the middle
    frame of ``--first_frame`` and ``--second_frame`` atomically to ``--output_frame``."""
    out = Path(args.output_frame)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{out}: unsupported image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    ensure_writable(out, args.force)
    frame0, frame1 = read_image(args.first_frame), read_image(args.second_frame)
    try:
        check_pair(frame0, frame1)
    except ValueError as exc:
        raise UsageError(f"{args.first_frame}, {args.second_frame}: {exc}") from None
    model_request(args)
    interp = build_interpolator(args, checkpoint_path(args))
    start = time.perf_counter()
    middle = interp.interpolate(frame0, frame1)
    seconds = time.perf_counter() - start
    write_image(out, middle, force=args.force)
    h, w = middle.shape[-2:]
    print(f"wrote {out.resolve()} ({w}x{h}, {seconds:.2f} s)")
    return out


__all__ = [
    "ADACOF_CHECKPOINT",
    "DEFAULT_CHECKPOINT",
    "ModelRequest",
    "add_model_arguments",
    "build_interpolator",
    "checkpoint_path",
    "interpolate_two_frames",
    "model_arg",
    "model_request",
    "tile_arg",
]
