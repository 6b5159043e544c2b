"""OBProxSG pruning of a trained model: the library behind ``prune.py`` and ``extended_version/pruning.py``.

:func:`prune` fine-tunes any ``make_model`` network from its checkpoint on Vimeo-90K-layout triplets with
the l1 penalty ``lambda_ * ||w||_1`` minimised by OBProxSG, in the training loop of ``train.py``
(``cdfi.training.trainer.Trainer``: resumable, mixed precision, progress bar), and saves the sparse
checkpoint. What happens around the loop (the density line after every epoch, or the extended
version's run folder with its per-epoch test) is a :class:`PruneHooks` object, so both scripts share
one loop. Everything the run reads is checked before anything is written.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cdfi.compression.densities import conv_densities, model_density
from cdfi.io.atomic import ensure_writable
from cdfi.io.checkpoint import load_model, save_checkpoint
from cdfi.runtime import Runtime
from cdfi.training.losses import DEFAULT_LOSSES, VGG16_FILE, CompositeLoss, without_missing_vgg
from cdfi.training.optim import build_scheduler, check_decay_type
from cdfi.training.sampler import ResumableSampler
from cdfi.training.trainer import Trainer, TrainerOptions
from datasets.vimeo import TripletListError, VimeoTriplets
from optimizers import OBProxSG

__all__ = [
    "ADACOF_LOSS",
    "CDFI_LOSS",
    "PruneConfig",
    "PruneError",
    "PruneHooks",
    "PruneResult",
    "SampleSubset",
    "density_line",
    "prune",
    "state_path_for",
]

ADACOF_LOSS = DEFAULT_LOSSES["adacof"]
CDFI_LOSS = "1*Charb+0.01*g_Spatial"


class PruneError(ValueError):
    """A pruning configuration or input that cannot run (one-line message naming the flag)."""


class SampleSubset(Dataset):
    """A fixed seeded subset of a data set that still forwards ``set_epoch`` (epoch-dependent augmentation).

    ``count`` larger than the data set is an error, or, with ``at_most`` (the published reader, which
    slices its shuffled list), the whole set.
    """

    def __init__(self, dataset: Any, count: int | None, seed: int, at_most: bool = False) -> None:
        n = len(dataset)
        if count is not None and at_most and count > n:
            print(f"note: --num_training_samples {count}: the training set has {n}; using all of it", file=sys.stderr)
            count = n
        if count is not None and not 1 <= count <= n:
            raise PruneError(f"--num_training_samples must be between 1 and {n} (the training set size), got {count}")
        if count is None or count == n:
            self.indices = list(range(n))
        else:
            rng = np.random.default_rng(seed)
            self.indices = sorted(int(i) for i in rng.choice(n, size=count, replace=False))
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


@dataclass(frozen=True)
class PruneConfig:
    """One pruning run. ``model``/``kernel_size``/``dilation``, when given, must agree with the checkpoint.

    ``loss`` None: the model family's default (:data:`ADACOF_LOSS`, :data:`CDFI_LOSS` for CDFI);
    ``loss_fallback`` is used instead, with a note, when ``loss`` needs VGG16 weights that are not there.
    ``state_path`` holds the resumable trainer state (default: ``<out stem>.last.pth`` beside ``out``),
    written every ``steps_per_checkpoint`` steps (0: at epoch ends only). ``data_flag`` names the
    training-data flag in error messages.
    """

    checkpoint: Path
    train_dir: Path
    out: Path
    model: str | None = None
    kernel_size: int | None = None
    dilation: int | None = None
    num_training_samples: int | None = None
    samples_at_most: bool = False
    epochs: int = 10
    batch_size: int = 8
    crop: int | None = None
    drop_last: bool = True
    lr: float = 1e-2
    lambda_: float = 1e-4
    Np: int = 2
    No: int | str = "inf"
    eps: float = 1e-4
    decay_type: str = "none"
    lr_decay: int = 20
    gamma: float = 0.5
    loss: str | None = None
    loss_fallback: str | None = None
    vgg_weights: str | None = None
    workers: int = 0
    seed: int = 0
    max_steps: int | None = None
    resume: bool = False
    force: bool = False
    progress: bool = True
    state_path: Path | None = None
    steps_per_checkpoint: int = 0
    data_flag: str = "--train_dir"

    def check(self) -> None:
        """Raise :class:`PruneError` naming the first flag whose value cannot run."""
        for name in ("epochs", "batch_size", "max_steps", "num_training_samples", "crop"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PruneError(f"--{name} must be at least 1, got {value}")
        for name in ("lr", "lambda_"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise PruneError(f"--{name} must be a positive number, got {value}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise PruneError(f"--eps must be a number >= 0, got {self.eps}")
        if self.Np < 0:
            raise PruneError(f"--Np must be at least 0, got {self.Np}")
        if self.workers < 0:
            raise PruneError(f"--workers must be at least 0, got {self.workers}")
        check_decay_type(self.decay_type)
        if self.decay_type == "step" and self.lr_decay < 1:
            raise PruneError(f"--lr_decay must be a positive number of epochs, got {self.lr_decay}")


def state_path_for(config: PruneConfig) -> Path:
    """Where the resumable trainer state of ``config`` lives."""
    if config.state_path is not None:
        return config.state_path
    return config.out.with_name(f"{config.out.stem}.last{config.out.suffix}")


def density_line(trainer: Trainer) -> str:
    """``epoch E  next phase P  model density D  conv weights C`` for the model being pruned."""
    model = trainer.model
    layers = conv_densities(model.state_dict())
    conv = sum(d.nonzero for d in layers) / sum(d.total for d in layers)
    phase = getattr(trainer.optimizer, "phase", "?")
    return (
        f"epoch {trainer.epoch}  next phase {phase}  model density {model_density(model):.4f}  conv weights {conv:.4f}"
    )


class PruneHooks:
    """What a pruning run does around the training loop. This default prints :func:`density_line` after
    every epoch; ``cdfi.compression.run_folder.PublishedRun`` keeps the extended version's run folder."""

    def check(self) -> None:
        """Refuse, before anything is written, what this run's outputs cannot do (e.g. overwrite)."""

    def begin(self, trainer: Trainer) -> None:
        """Called once the trainer is ready, before the first step."""

    def on_step(self, trainer: Trainer, parts: dict[str, float]) -> None:
        """Called after every optimizer step with the loss parts."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Called after every epoch (``trainer.epoch`` already counts it)."""
        print(density_line(trainer), flush=True)

    def end(self, trainer: Trainer, out: Path) -> None:
        """Called after the sparse checkpoint ``out`` is written."""


@dataclass(frozen=True)
class PruneResult:
    """The written checkpoint, its density, why training stopped, and the per-epoch density history."""

    out: Path
    density: float
    reason: str
    epochs: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)


def _loss(config: PruneConfig, model_name: str) -> CompositeLoss:
    spec = config.loss or (CDFI_LOSS if model_name == "cdfi_adacof" else ADACOF_LOSS)
    if config.loss_fallback is not None:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        hint = f"put torchvision's {VGG16_FILE} in {cache} to keep it"
        spec = without_missing_vgg(spec, config.vgg_weights, hint, fallback=config.loss_fallback)
    return CompositeLoss(spec, vgg_weights=config.vgg_weights)


def _loader(config: PruneConfig, runtime: Runtime) -> DataLoader:
    try:
        triplets = VimeoTriplets(config.train_dir, "train", crop=config.crop, seed=config.seed)
    except TripletListError as exc:
        raise PruneError(f"{config.data_flag}: {exc}") from None
    data = SampleSubset(triplets, config.num_training_samples, config.seed, at_most=config.samples_at_most)
    sampler = ResumableSampler(data, shuffle=True, seed=config.seed, drop_last=False)
    loader = DataLoader(
        data,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        drop_last=config.drop_last,
        pin_memory=runtime.is_cuda,
    )
    if len(loader) == 0:
        raise PruneError(f"{len(data)} training samples make no batch of {config.batch_size}; lower --batch_size")
    return loader


def prune(config: PruneConfig, runtime: Runtime, hooks: PruneHooks | None = None) -> PruneResult:
    """Prune ``config.checkpoint`` with OBProxSG on ``runtime`` and write the sparse checkpoint.

    Raises ``ValueError`` for bad values or input (nothing written) and ``FileExistsError`` for outputs
    in the way without ``force``. The checkpoint holds ``density`` and the ``pruning`` hyper-parameters.
    """
    hooks = hooks or PruneHooks()
    config.check()
    last = state_path_for(config)
    if not (config.resume and last.is_file()):
        ensure_writable(config.out, config.force)
    hooks.check()
    model = load_model(config.checkpoint, config.model, config.kernel_size, config.dilation, map_location="cpu").to(
        runtime.device
    )
    loss_fn = _loss(config, model.model_name).to(runtime.device)
    loader = _loader(config, runtime)
    optimizer = OBProxSG(
        model.parameters(),
        lr=config.lr,
        lambda_=config.lambda_,
        epochSize=len(loader),
        Np=config.Np,
        No=config.No,
        eps=config.eps,
    )
    scheduler = build_scheduler(optimizer, config.decay_type, config.lr_decay, config.gamma)
    history: list[dict[str, float]] = []

    def on_epoch_end(trainer: Trainer) -> None:
        history.append({"epoch": trainer.epoch, "density": model_density(trainer.model)})
        trainer.extra_state["density_history"] = list(history)
        hooks.on_epoch_end(trainer)

    options = TrainerOptions(
        checkpoint_path=last, steps_per_checkpoint=config.steps_per_checkpoint, progress=config.progress
    )
    trainer = Trainer(model, optimizer, loader, loss_fn, runtime, options, scheduler=scheduler)
    trainer.on_step = hooks.on_step
    trainer.on_epoch_end = on_epoch_end
    if config.resume and trainer.resume():
        history[:] = trainer.extra_state.get("density_history", [])
        print(f"resumed from {last} at epoch {trainer.epoch}, step {trainer.step}", file=sys.stderr)
    print(
        f"pruning {model.model_name} F{model.kernel_size}/D{model.dilation} on {len(loader.dataset)} samples, "
        f"{len(loader)} steps/epoch, {runtime.describe()}; start density {model_density(model):.4f}",
        flush=True,
    )
    hooks.begin(trainer)
    result = trainer.fit(config.epochs, max_steps=config.max_steps)
    density = model_density(model)
    save_checkpoint(
        config.out,
        model,
        trainer.epoch,
        extra={
            "density": density,
            "pruning": {
                "lr": config.lr,
                "lambda_": config.lambda_,
                "Np": config.Np,
                "No": config.No,
                "eps": config.eps,
            },
        },
        force=True,
    )
    hooks.end(trainer, config.out)
    return PruneResult(config.out, density, result.reason, trainer.epoch, trainer.step, list(history))
