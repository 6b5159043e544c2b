"""From ``train.py``'s parsed arguments to a ready ``Trainer``: checks, processes and device, model
(fresh, ``--init_from`` or to be resumed), loss, data, optimizer, evaluation sets and the run folder.

Every check runs before the run folder is touched, so a bad command line fails with a one-line
``TrainSetupError`` (or another ``ValueError``) and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from cdfi.io.atomic import atomic_write_text
from cdfi.io.checkpoint import checkpoint_variant, load_checkpoint, load_model, load_weights
from cdfi.io.paths import resolve_data_root
from cdfi.runtime.precision import prepare_model, resolve_precision
from cdfi.training.grow import grow
from cdfi.training.losses import DEFAULT_LOSSES, CompositeLoss
from cdfi.training.trainer import (
    BlurredWarp,
    FlowWarmStart,
    MotionDistillation,
    ResumableSampler,
    Trainer,
    build_optimizer,
    build_scheduler,
    combine_extra_losses,
    init_blend,
    init_he,
    init_offsets,
    init_weight_temperature,
    parameter_groups,
    parse_head_lr,
    unwrap,
)
from datasets.benchmark_sets import BenchmarkItem, vimeo_test_items
from datasets.vimeo import VimeoTriplets, read_triplet_list
from models import make_model, variant_name
from models.adacof import MIN_FRAME_SIZE

__all__ = [
    "IDENTITY_ARGS",
    "RECIPES",
    "SMALL_LOSSES",
    "SMALL_RECIPE",
    "TrainSetupError",
    "TrainingRun",
    "apply_recipe",
    "check_args",
    "middlebury_items",
    "resolve_resume",
    "setup_run",
    "validation_items",
]

RECIPES = ("published", "small")
# Defaults of --recipe small (docs/small_budget_training.md); the published recipe's are in PUBLISHED_DEFAULTS.
PUBLISHED_DEFAULTS: dict[str, Any] = {
    "sampling": "trunc",
    "init": "published",
    "motion_crop": 0.0,
    "decay_type": "step",
}
SMALL_RECIPE: dict[str, Any] = {
    "sampling": "floor",
    "init": "he",
    "motion_crop": 0.5,
    "decay_type": "none",
    "crop": 128,
}
# The small recipe's losses: the published terms plus Warp; CDFI's VGG term is left out (no ImageNet
# weights offline, and a small budget first needs PSNR).
SMALL_LOSSES = {
    "cdfi_adacof": "1*Charb+0.01*g_Spatial+1*Warp",
    "adacof": DEFAULT_LOSSES["adacof"] + "+1*Warp",
    "compressed_adacof": DEFAULT_LOSSES["compressed_adacof"] + "+1*Warp",
}

# Arguments that fix what a run is; a resumed run must agree on them.
IDENTITY_ARGS = ("model", "kernel_size", "dilation", "sampling")


class TrainSetupError(ValueError):
    """A command line that cannot start training."""


@dataclass
class TrainingRun:
    """A run ready to train: ``trainer`` (not yet resumed) and what the run's records need."""

    trainer: Trainer
    criterion: CompositeLoss
    run_dir: Path
    resume_path: Path | None
    world: int
    rank: int
    middlebury: list[BenchmarkItem]
    validation: list[BenchmarkItem]

    @property
    def is_main(self) -> bool:
        """The process that writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        """``<run_dir>/checkpoints``: last.pth and best.pth."""
        return self.run_dir / "checkpoints"

    def close(self) -> None:
        """Leave the process group of a distributed run."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def setup_run(args: argparse.Namespace) -> TrainingRun:
    """Check ``args``, build everything and prepare the run folder (``args.json``); under torchrun this
    joins the process group. Fills in the recipe's defaults, ``args.kernel_size`` and ``args.dilation``."""
    apply_recipe(args)
    check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    world, rank, local_rank = world_info()
    device = select_device(args.device, local_rank)
    precision = args.precision
    if args.amp and precision == "fp32":
        precision = "fp16" if device.type == "cuda" else "bf16"
    precision = resolve_precision(precision, device)
    if args.batch_size % world:
        raise TrainSetupError(f"--batch_size {args.batch_size} is not divisible by the {world} processes")
    head_lr = parse_head_lr(args.head_lr)
    torch.manual_seed(args.seed)
    model = make_model(
        args.model,
        args.kernel_size,
        args.dilation,
        arch=args.arch,
        sampling=args.sampling,
        legacy_grad=args.legacy_grad,
    )
    args.kernel_size, args.dilation = model.kernel_size, model.dilation
    uid = args.uid or variant_name(args.model, model.kernel_size, model.dilation)
    run_dir = Path(args.out_root) / uid
    resume_path = resolve_resume(args, run_dir)
    criterion = CompositeLoss(args.loss, args.vgg_weights)
    with torch.no_grad():
        probe = model.train()(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    criterion.check_model_outputs(tuple(probe), f"{args.model}")
    dataset = VimeoTriplets(
        args.data_dir,
        "train",
        crop=args.crop,
        augment=not args.no_augment,
        seed=args.seed,
        motion_crop=args.motion_crop,
        motion_candidates=args.motion_candidates,
        synthetic=args.synthetic,
        synthetic_shift=args.synthetic_shift,
        color_augment=args.color_augment,
        scale_augment=args.scale_augment,
        scale_range=parse_scale_range(args.scale_range),
        with_flow=args.flow_warmstart > 0 or args.flow_distill > 0,
    )
    if len(dataset) < args.batch_size:
        raise TrainSetupError(
            f"{args.data_dir}: {len(dataset)} training triplets, fewer than one batch of {args.batch_size}"
        )
    mb_items, val_items = middlebury_items(args), validation_items(args)
    _init_weights(model, args, fresh=resume_path is None)

    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank == 0:
        _prepare_run_dir(run_dir, {**vars(args), "uid": uid, "precision": precision, "world_size": world}, resume_path)
    model = prepare_model(model, device, precision)
    criterion = criterion.to(device)
    train_model: nn.Module = model
    if world > 1:
        # The models' only buffers are constants (the RGB mean), so there is nothing to broadcast.
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    optimizer = build_optimizer(
        args.optimizer,
        parameter_groups(model, args.lr, head_lr, args.weight_temperature, args.optimizer),
        args.lr,
        args.weight_decay,
    )
    scheduler = build_scheduler(optimizer, args.decay_type, args.lr_decay, args.gamma)
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size // world,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    extras = []
    if args.flow_warmstart:
        extras.append(FlowWarmStart(model, args.flow_warmstart, args.flow_warmstart_weight))
    if args.flow_distill:
        extras.append(MotionDistillation(model, args.flow_distill))
    if args.blur_warp:
        extras.append(BlurredWarp(model, args.blur_warp, parse_sigmas(args.blur_sigmas)))
    trainer = Trainer(
        train_model,
        optimizer,
        loader,
        criterion,
        scheduler=scheduler,
        device=device,
        precision=precision,
        checkpoint_path=run_dir / "checkpoints" / "last.pth",
        steps_per_checkpoint=args.steps_per_checkpoint,
        grad_clip=args.grad_clip,
        extra_loss=combine_extra_losses(extras),
        progress=not args.quiet,
        warmup_steps=args.warmup_steps,
    )
    return TrainingRun(trainer, criterion, run_dir, resume_path, world, rank, mb_items, val_items)


# ----------------------------------------------------------------------------------------------- checks


def apply_recipe(args: argparse.Namespace) -> None:
    """Fill the options left unset (``None``) from ``args.recipe``: the published recipe's defaults, or
    the small-budget ones. Options given on the command line are kept."""
    recipe = getattr(args, "recipe", "published")
    if recipe not in RECIPES:
        raise TrainSetupError(f"unknown --recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
    defaults = SMALL_RECIPE if recipe == "small" else PUBLISHED_DEFAULTS
    for name, value in {**PUBLISHED_DEFAULTS, **defaults}.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.loss is None:
        args.loss = (SMALL_LOSSES if recipe == "small" else DEFAULT_LOSSES)[args.model]


def check_args(args: argparse.Namespace) -> None:
    """The range checks argparse cannot express."""
    for name in ("batch_size", "epochs", "steps_per_checkpoint", "log_every", "val_every", "motion_candidates"):
        if getattr(args, name) < (0 if name == "steps_per_checkpoint" else 1):
            raise TrainSetupError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.crop is not None and args.crop < 1:
        raise TrainSetupError(f"--crop must be positive, got {args.crop}")
    if args.workers < 0:
        raise TrainSetupError(f"--workers must be >= 0, got {args.workers}")
    if args.blend_bias is not None and args.model != "cdfi_adacof":
        raise TrainSetupError("--blend_bias applies to --model cdfi_adacof only (the Blend head is CDFI's)")
    if args.flow_distill and args.flow_warmstart:
        raise TrainSetupError("--flow_distill and --flow_warmstart are two flow losses; pass one")
    if args.grow_from and args.init_from:
        raise TrainSetupError("--grow_from and --init_from both give the starting weights; pass one")
    if args.grow_from and args.weight_temperature != 1.0:
        raise TrainSetupError("--weight_temperature rescales a fresh Weight head; --grow_from copies trained ones")
    if args.warmup_steps < 0:
        raise TrainSetupError(f"--warmup_steps must be >= 0, got {args.warmup_steps}")
    if args.flow_warmstart < 0 or args.flow_distill < 0 or args.synthetic_shift <= 0:
        raise TrainSetupError("--flow_warmstart and --flow_distill must be >= 0 and --synthetic_shift positive")
    if args.blur_warp < 0:
        raise TrainSetupError(f"--blur_warp must be >= 0, got {args.blur_warp}")
    parse_sigmas(args.blur_sigmas)
    parse_scale_range(args.scale_range)
    if not 0 <= args.scale_augment <= 1:
        raise TrainSetupError(f"--scale_augment is a probability in [0, 1], got {args.scale_augment}")
    if args.max_steps is not None and args.max_steps < 1:
        raise TrainSetupError(f"--max_steps must be positive, got {args.max_steps}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise TrainSetupError(f"--max_minutes must be positive, got {args.max_minutes}")
    if args.crop is not None and args.crop < MIN_FRAME_SIZE:
        raise TrainSetupError(
            f"--crop {args.crop} is too small: the networks need frames of at least {MIN_FRAME_SIZE} px"
        )
    if args.threads is not None and args.threads < 1:
        raise TrainSetupError(f"--threads must be positive, got {args.threads}")


def parse_sigmas(text: str) -> tuple[float, ...]:
    """``--blur_sigmas`` ("2,4,8") as positive floats."""
    try:
        sigmas = tuple(float(v) for v in text.split(","))
    except ValueError:
        sigmas = ()
    if not sigmas or not all(math.isfinite(v) and v > 0 for v in sigmas):
        raise TrainSetupError(f"--blur_sigmas must be positive numbers separated by commas, got {text!r}")
    return sigmas


def parse_scale_range(text: str) -> tuple[float, float]:
    """``--scale_range`` ("0.5,1") as two positive factors, low first."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise TrainSetupError(f"--scale_range must be two positive factors LO,HI with LO <= HI, got {text!r}")
    return lo, hi


def resolve_resume(args: argparse.Namespace, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (after the --uid/--force checks)."""
    last = run_dir / "checkpoints" / "last.pth"
    if args.resume is not None:
        path = Path(args.resume) if args.resume else last
        if args.resume and not path.is_file():
            raise TrainSetupError(f"--resume {path}: checkpoint not found")
        if path.is_file():
            ckpt = load_checkpoint(path)
            if "optimizer" not in ckpt.meta:
                raise TrainSetupError(f"--resume {path}: not a training checkpoint (use --init_from for weights)")
            have = dict(zip(("model", "kernel_size", "dilation"), checkpoint_variant(ckpt), strict=True))
            have["sampling"] = ckpt.meta.get("sampling", "trunc")
            for key in IDENTITY_ARGS:
                if have[key] != getattr(args, key):
                    raise TrainSetupError(
                        f"--resume {path}: the run has {key}={have[key]!r}, not {getattr(args, key)!r}; "
                        "use the run's settings or a new --uid"
                    )
            return path
        return None
    if run_dir.exists() and any(run_dir.iterdir()) and not args.force:
        raise TrainSetupError(f"{run_dir}: run folder exists (pass --resume to continue or --force to start afresh)")
    return None


# ----------------------------------------------------------------------------------------------- evaluation sets


def middlebury_items(args: argparse.Namespace) -> list[BenchmarkItem]:
    """Middlebury items from --test_input/--test_gt (explicit folders must exist; the default may be
    absent, then per-epoch evaluation is skipped with a note)."""
    if args.test_every <= 0:
        return []
    root = resolve_data_root(args.data_root) / "middlebury_others"
    inp = Path(args.test_input) if args.test_input else root / "input"
    gt = Path(args.test_gt) if args.test_gt else root / "gt"
    explicit = bool(args.test_input or args.test_gt)
    if not inp.is_dir() or not gt.is_dir():
        missing = inp if not inp.is_dir() else gt
        if explicit:
            raise TrainSetupError(f"{missing}: Middlebury folder not found (--test_input/--test_gt)")
        print(
            f"note: {missing} not found; no per-epoch Middlebury evaluation (pass --test_input/--test_gt)",
            file=sys.stderr,
        )
        return []
    items = [
        BenchmarkItem(d.name, d / "frame10.png", d / "frame11.png", gt / d.name / "frame10i11.png", "frame10i11.png")
        for d in sorted(inp.iterdir())
        if d.is_dir()
    ]
    if not items:
        raise TrainSetupError(f"{inp}: holds no Middlebury sequence folders")
    return items


def validation_items(args: argparse.Namespace) -> list[BenchmarkItem]:
    """The held-out split of --val_dir (its tri_testlist.txt), at most --val_limit evenly spaced triplets."""
    if not args.val_dir:
        return []
    read_triplet_list(args.val_dir, "test")  # a missing or empty split is an error before training
    items = vimeo_test_items(args.val_dir)
    if args.val_limit and len(items) > args.val_limit:
        step = len(items) / args.val_limit
        items = [items[int(i * step)] for i in range(args.val_limit)]
    return items


# ----------------------------------------------------------------------------------------------- helpers


def world_info() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def select_device(choice: str, local_rank: int) -> torch.device:
    """--device auto/cpu/cuda; under torchrun each process takes the GPU of its local rank."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainSetupError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _init_weights(model: nn.Module, args: argparse.Namespace, fresh: bool) -> None:
    """--init_from weights (warning on a sampling-rule mismatch), or the --init/--offset_init/
    --weight_temperature/--blend_bias initialisation of a fresh start; a resumed run's weights come from last.pth."""
    if args.init_from:
        init = load_checkpoint(args.init_from)
        load_weights(model, init)
        trained = str(init.meta.get("sampling", "trunc"))
        if trained != args.sampling:
            note = " (a published checkpoint: results will differ from the paper)" if init.is_published_format else ""
            warnings.warn(
                f"{args.init_from} was trained with sampling={trained!r}, training with {args.sampling!r}{note}",
                stacklevel=1,
            )
    elif fresh:
        if args.init == "he":
            init_he(model, args.seed)
        init_offsets(model, args.offset_init, args.seed)
        init_blend(model, args.blend_bias)
        if args.weight_temperature != 1.0:
            init_weight_temperature(model, args.weight_temperature)
        if args.grow_from:
            _grow(model, args)


def _grow(model: nn.Module, args: argparse.Namespace) -> None:
    """--grow_from: copy a trained AdaCoF-family checkpoint into the fresh model (``cdfi.training.grow``)."""
    source = load_model(args.grow_from)
    if source.sampling != args.sampling:
        warnings.warn(
            f"{args.grow_from} was trained with sampling={source.sampling!r}, training with {args.sampling!r}",
            stacklevel=1,
        )
    blend = {} if args.blend_bias is None else {"blend_bias": args.blend_bias}
    report = grow(source, unwrap(model), seed=args.seed, **blend)
    narrowed = ", ".join(f"{k} {a}->{b}" for k, (a, b) in report.narrowed.items())
    print(
        f"grown from {args.grow_from}: its AdaCoF output is kept"
        + (f" (narrowed channels: {narrowed})" if narrowed else " exactly"),
        file=sys.stderr,
    )


def _prepare_run_dir(run_dir: Path, saved_args: dict[str, Any], resume_path: Path | None) -> None:
    """Create ``checkpoints/`` and write ``args.json``; a fresh start (--force) first deletes the
    checkpoints of an earlier run in the folder, so none of them can survive into this one."""
    if resume_path is None:
        for name in ("last.pth", "best.pth"):
            (run_dir / "checkpoints" / name).unlink(missing_ok=True)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "args.json", json.dumps(saved_args, indent=2) + "\n")
