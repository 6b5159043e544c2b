"""From a ``TrainConfig`` and a ``Runtime`` to a ready ``Trainer``: processes, model (fresh,
``--init_from``, ``--grow_from`` or to be resumed), loss, data, optimizer, evaluation sets and the run
folder.

Every check runs before the run folder is touched, so a bad configuration fails with a one-line
``TrainSetupError`` (or another ``ValueError``) and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from cdfi.flow import MissingOpenCVError, require_cv2
from cdfi.io.atomic import atomic_write_text
from cdfi.io.checkpoint import checkpoint_variant, load_checkpoint, load_model, load_weights
from cdfi.io.paths import resolve_data_root
from cdfi.runtime import Runtime
from cdfi.runtime.precision import prepare_model
from cdfi.training.config import EvalConfig, TrainConfig, config_to_dict
from cdfi.training.grow import grow
from cdfi.training.init import initialise
from cdfi.training.losses import BlurredWarp, CompositeLoss, combine_extra_losses
from cdfi.training.optim import build_optimizer, build_scheduler
from cdfi.training.sampler import ResumableSampler
from cdfi.training.trainer import Trainer, TrainerOptions, unwrap
from datasets.benchmark_sets import BenchmarkItem, vimeo_test_items
from datasets.vimeo import VimeoTriplets, read_triplet_list
from models import DEFAULT_SAMPLING, make_model

__all__ = [
    "TrainSetupError",
    "TrainingRun",
    "middlebury_items",
    "resolve_resume",
    "setup_run",
    "validation_items",
    "world_info",
]


class TrainSetupError(ValueError):
    """A configuration that cannot start training here."""


@dataclass
class TrainingRun:
    """A run ready to train: ``trainer`` (not yet resumed) and what the run's records need."""

    config: TrainConfig
    trainer: Trainer
    criterion: CompositeLoss
    resume_path: Path | None
    world: int
    rank: int
    middlebury: list[BenchmarkItem]
    validation: list[BenchmarkItem]

    @property
    def run_dir(self) -> Path:
        """The run folder (``TrainConfig.run_dir``)."""
        return self.config.run_dir

    @property
    def is_main(self) -> bool:
        """The process that writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        """``<run_dir>/checkpoints``: last.pth, best.pth (and model_epoch_NNN.pth with --published_loop)."""
        return self.run_dir / "checkpoints"

    def close(self) -> None:
        """Leave the process group of a distributed run."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def setup_run(config: TrainConfig, runtime: Runtime, resume: str | None = None, force: bool = False) -> TrainingRun:
    """Build everything ``config`` describes on ``runtime`` and prepare the run folder (``args.json``).

    ``resume``: ``None`` for a fresh start, ``""`` for the run's ``checkpoints/last.pth`` (a fresh
    start when there is none), or a checkpoint path. Under torchrun this joins the process group."""
    world, rank = world_info()
    opt, data, model_cfg = config.optimisation, config.data, config.model
    if opt.batch_size % world:
        raise TrainSetupError(f"--batch_size {opt.batch_size} is not divisible by the {world} processes")
    torch.backends.cudnn.benchmark = config.run.use_cudnn
    torch.manual_seed(opt.seed)
    model = make_model(
        model_cfg.model,
        model_cfg.kernel_size,
        model_cfg.dilation,
        arch=model_cfg.arch,
        sampling=model_cfg.sampling,
        legacy_grad=model_cfg.legacy_grad,
    )
    resume_path = resolve_resume(config, resume, force)
    criterion = CompositeLoss(opt.loss, opt.vgg_weights)
    with torch.no_grad():
        probe = model.train()(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    criterion.check_model_outputs(tuple(probe), model_cfg.model)
    dataset = VimeoTriplets(
        data.data_dir,
        "train",
        crop=data.crop,
        augment=data.augment,
        seed=opt.seed,
        motion_crop=data.motion_crop,
        motion_candidates=data.motion_candidates,
        synthetic=config.experimental.synthetic,
        synthetic_shift=config.experimental.synthetic_shift,
        count=data.num_training_samples,
    )
    keep_last_batch = data.keep_last_batch
    if len(dataset) < opt.batch_size and not keep_last_batch:
        if world > 1:
            raise TrainSetupError(
                f"{data.data_dir}: {len(dataset)} training triplets, fewer than one batch of {opt.batch_size}"
            )
        print(
            f"note: {data.data_dir}: {len(dataset)} training triplets, fewer than one batch of {opt.batch_size}; "
            "training on them as one partial batch per epoch (as the published loader does)",
            file=sys.stderr,
        )
        keep_last_batch = True
    mb_items, val_items = middlebury_items(config.evaluation), validation_items(config.evaluation)
    if config.run.published_loop and not mb_items:
        raise TrainSetupError(
            "--published_loop keeps the best Middlebury epoch; pass --test_input/--test_gt (or --data_root)"
        )
    if resume_path is None:
        _init_weights(model, config)

    if world > 1:
        dist.init_process_group("nccl" if runtime.is_cuda else "gloo")
    if rank == 0:
        _prepare_run_dir(config, resume_path)
    model = prepare_model(model, runtime.device, runtime.precision)
    criterion = criterion.to(runtime.device)
    train_model: nn.Module = model
    if world > 1:
        # The models' only buffers are constants (the RGB mean): synced once at init, never per forward
        # (forward_sync_buffers replaces the deprecated broadcast_buffers, which warned on every process).
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.is_cuda else None, forward_sync_buffers=False
        )
    optimizer = build_optimizer(opt.optimizer, model.parameters(), opt.lr, opt.weight_decay)
    scheduler = build_scheduler(optimizer, opt.decay_type, opt.lr_decay, opt.gamma)
    drop_last = not keep_last_batch
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=opt.seed, drop_last=drop_last)
    loader = DataLoader(
        dataset,
        batch_size=opt.batch_size // world,
        sampler=sampler,
        num_workers=data.workers,
        drop_last=drop_last,
        pin_memory=runtime.is_cuda,
        persistent_workers=data.workers > 0,
    )
    extras = []
    if config.experimental.blur_warp:
        extras.append(BlurredWarp(model, config.experimental.blur_warp, config.experimental.blur_sigmas))
    options = TrainerOptions(
        checkpoint_path=config.run_dir / "checkpoints" / "last.pth",
        steps_per_checkpoint=config.run.steps_per_checkpoint,
        grad_clip=config.experimental.grad_clip,
        progress=not config.run.quiet,
    )
    trainer = Trainer(
        train_model,
        optimizer,
        loader,
        criterion,
        runtime,
        options,
        scheduler=scheduler,
        extra_loss=combine_extra_losses(extras),
    )
    return TrainingRun(config, trainer, criterion, resume_path, world, rank, mb_items, val_items)


# ----------------------------------------------------------------------------------------------- run folder


def resolve_resume(config: TrainConfig, resume: str | None, force: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (after the run-folder/--force checks).

    The checkpoint must be a training checkpoint of the same variant and sampling rule."""
    run_dir = config.run_dir
    last = run_dir / "checkpoints" / "last.pth"
    if resume is not None:
        path = Path(resume) if resume else last
        if resume and not path.is_file():
            raise TrainSetupError(f"--resume {path}: checkpoint not found")
        if not path.is_file():
            return None
        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt.meta:
            raise TrainSetupError(f"--resume {path}: not a training checkpoint (use --init_from for weights)")
        have = dict(zip(("model", "kernel_size", "dilation"), checkpoint_variant(ckpt), strict=True))
        have["sampling"] = ckpt.meta.get("sampling", DEFAULT_SAMPLING)
        for key, value in have.items():
            want = getattr(config.model, key)
            if value != want:
                raise TrainSetupError(
                    f"--resume {path}: the run has {key}={value!r}, not {want!r}; use the run's settings or a new --uid"
                )
        return path
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise TrainSetupError(f"{run_dir}: run folder exists (pass --resume to continue or --force to start afresh)")
    return None


def _prepare_run_dir(config: TrainConfig, resume_path: Path | None) -> None:
    """Create ``checkpoints/`` and write ``args.json`` (the config); a fresh start (--force) first deletes
    the checkpoints of an earlier run in the folder, so none of them can survive into this one."""
    run_dir = config.run_dir
    if resume_path is None:
        checkpoints = run_dir / "checkpoints"
        for path in [checkpoints / "last.pth", checkpoints / "best.pth", *checkpoints.glob("model_epoch_*.pth")]:
            path.unlink(missing_ok=True)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "args.json", json.dumps(config_to_dict(config), indent=2) + "\n")


# ----------------------------------------------------------------------------------------------- evaluation sets


def middlebury_items(evaluation: EvalConfig) -> list[BenchmarkItem]:
    """Middlebury items from --test_input/--test_gt (explicit folders must exist; the default may be
    absent, then per-epoch evaluation is skipped with a note)."""
    if evaluation.test_every <= 0:
        return []
    root = resolve_data_root(evaluation.data_root) / "middlebury_others"
    inp = Path(evaluation.test_input) if evaluation.test_input else root / "input"
    gt = Path(evaluation.test_gt) if evaluation.test_gt else root / "gt"
    explicit = bool(evaluation.test_input or evaluation.test_gt)
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


def validation_items(evaluation: EvalConfig) -> list[BenchmarkItem]:
    """The held-out split of --val_dir (its tri_testlist.txt), at most --val_limit evenly spaced triplets.
    The validation rows score the DIS-flow baseline too, so OpenCV must be there."""
    if not evaluation.val_dir:
        return []
    read_triplet_list(evaluation.val_dir, "test")  # a missing or empty split is an error before training
    try:
        require_cv2()
    except MissingOpenCVError as exc:
        raise TrainSetupError(f"--val_dir: {exc}") from None
    items = vimeo_test_items(evaluation.val_dir)
    if evaluation.val_limit and len(items) > evaluation.val_limit:
        step = len(items) / evaluation.val_limit
        items = [items[int(i * step)] for i in range(evaluation.val_limit)]
    return items


# ----------------------------------------------------------------------------------------------- helpers


def world_info() -> tuple[int, int]:
    """(world size, rank) from torchrun's environment."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def _init_weights(model: nn.Module, config: TrainConfig) -> None:
    """The starting weights of a fresh run: ``--init_from`` (warning on a sampling-rule mismatch), or
    ``--init`` and then ``--grow_from``; a resumed run's come from its checkpoint."""
    model_cfg = config.model
    if model_cfg.init_from:
        init = load_checkpoint(model_cfg.init_from)
        load_weights(model, init)
        trained = str(init.meta.get("sampling", DEFAULT_SAMPLING))
        if trained != model_cfg.sampling:
            note = " (a published checkpoint: results will differ from the paper)" if init.is_published_format else ""
            warnings.warn(
                f"{model_cfg.init_from} was trained with sampling={trained!r}, training with "
                f"{model_cfg.sampling!r}{note}",
                stacklevel=1,
            )
        return
    initialise(model, model_cfg.init, config.optimisation.seed)
    if model_cfg.grow_from:
        source = load_model(model_cfg.grow_from)
        if source.sampling != model_cfg.sampling:
            warnings.warn(
                f"{model_cfg.grow_from} was trained with sampling={source.sampling!r}, training with "
                f"{model_cfg.sampling!r}",
                stacklevel=1,
            )
        report = grow(source, unwrap(model), seed=config.optimisation.seed)
        narrowed = ", ".join(f"{k} {a}->{b}" for k, (a, b) in report.narrowed.items())
        print(
            f"grown from {model_cfg.grow_from}: its AdaCoF output is kept"
            + (f" (narrowed channels: {narrowed})" if narrowed else " exactly"),
            file=sys.stderr,
        )
