"""The training loop shared by ``train.py`` and ``prune.py``: resumable, distributed, mixed precision.

API::

    trainer = Trainer(model, optimizer, loader, loss_fn, runtime,
                      TrainerOptions(checkpoint_path="model_weights/run/checkpoints/last.pth",
                                     steps_per_checkpoint=100),
                      scheduler=scheduler)
    trainer.resume()                        # continue from the checkpoint if it exists (optional)
    result = trainer.fit(epochs=100, max_steps=None, max_minutes=None)
    result.reason                           # "done", "max_steps" or "max_minutes"

- ``model``: a CDFI/AdaCoF model (``models.make_model``), optionally wrapped in
  ``DistributedDataParallel``; called as ``model(frame0, frame2)`` in train mode, it returns the dict
  ``{'frame1', 'g_Spatial', ...}``.
- ``optimizer``: any ``torch.optim.Optimizer`` (``prune.py`` passes ``OBProxSG``); ``scheduler`` is
  stepped once per epoch (the published StepLR is per epoch).
- ``loader``: yields ``(frame0, frame1, frame2, *extra)`` batches, ``frame1`` the ground truth. When
  its sampler is a ``ResumableSampler`` a resumed run skips the batches already seen in the current
  epoch without loading them; ``set_epoch`` is called on the sampler and on the data set (if they have
  it) at every epoch start, so data order and augmentation are a function of (seed, epoch).
- ``loss_fn(output, target) -> (total, parts)``: e.g. ``cdfi.training.losses.CompositeLoss``.
- ``runtime``: the device and precision (``cdfi.runtime.Runtime``; default: the CPU in fp32).
- ``extra_loss(trainer, batch, output) -> Tensor | None``: added to the loss (e.g. ``BlurredWarp``).
- Callbacks, set as attributes: ``on_step(trainer, parts)`` after every optimizer step;
  ``on_epoch_end(trainer)`` after every epoch (``trainer.epoch`` already counts it);
  ``on_checkpoint(trainer)`` after ``last.pth`` is written. They run on every process; check
  ``trainer.is_main`` before writing files.
- ``trainer.extra_state``: a dict of JSON-like values saved into ``last.pth`` and restored by
  ``resume`` (``cdfi.training.monitor`` keeps the run's minutes and best PSNR there).

``last.pth`` is written with ``cdfi.io.checkpoint.save_checkpoint`` (the published ``{'epoch',
'state_dict'}`` plus metadata) and additionally holds ``optimizer``, ``scheduler``, ``scaler``,
``step``, ``epoch_step``, ``extra_state`` and ``rng`` (every RNG state as tensors), so that
``torch.load(weights_only=True)`` reads it and ``load_model`` can use it as a model checkpoint. It is
saved every ``steps_per_checkpoint`` steps, at every epoch end and when ``fit`` stops. A NaN or
infinite loss raises ``NonFiniteLossError`` before the bad step touches the weights, so ``last.pth``
keeps the last good state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from cdfi.io.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from cdfi.runtime import Runtime
from cdfi.runtime.precision import make_grad_scaler
from cdfi.training.rng import get_rng_state, set_rng_state
from cdfi.training.sampler import ResumableSampler

__all__ = [
    "ExtraLoss",
    "FitResult",
    "NonFiniteLossError",
    "Trainer",
    "TrainerOptions",
    "TrainingError",
    "format_parts",
    "unwrap",
]

ExtraLoss = Callable[["Trainer", tuple[torch.Tensor, ...], Any], "torch.Tensor | None"]


class TrainingError(ValueError):
    """A training configuration that cannot run (bad optimizer name, checkpoint mismatch, ...)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the weights were left at the last good step."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@dataclass(frozen=True)
class TrainerOptions:
    """How a ``Trainer`` checkpoints, clips and reports: everything but the parts it trains."""

    checkpoint_path: Path | str | None = None
    steps_per_checkpoint: int = 0
    grad_clip: float | None = None
    progress: bool = True


@dataclass
class FitResult:
    """Why ``fit`` returned, and where it stopped."""

    reason: str
    step: int
    epoch: int
    minutes: float


class Trainer:
    """One training run (see the module docstring for the API and the checkpoint contents)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: DataLoader,
        loss_fn: Callable[[Any, torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
        runtime: Runtime | None = None,
        options: TrainerOptions | None = None,
        *,
        scheduler: Any = None,
        extra_loss: ExtraLoss | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loader = loader
        self.loss_fn = loss_fn
        self.runtime = runtime or Runtime(torch.device("cpu"))
        self.options = options or TrainerOptions()
        self.scheduler = scheduler
        self.extra_loss = extra_loss
        self.on_step: Callable[[Trainer, dict[str, float]], None] | None = None
        self.on_epoch_end: Callable[[Trainer], None] | None = None
        self.on_checkpoint: Callable[[Trainer], None] | None = None
        self.scaler = make_grad_scaler(self.device, self.runtime.precision)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.is_main = not self.distributed or dist.get_rank() == 0
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self.extra_state: dict[str, Any] = {}
        self.started = time.monotonic()
        self._saved_at: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        """The device the model trains on (``runtime.device``)."""
        return self.runtime.device

    @property
    def checkpoint_path(self) -> Path | None:
        """Where ``save`` writes ``last.pth`` (None: nowhere)."""
        path = self.options.checkpoint_path
        return Path(path) if path else None

    # -------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """Everything ``resume`` needs besides the model weights."""
        return {
            "step": self.step,
            "epoch_step": self.epoch_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "extra_state": dict(self.extra_state),
            "rng": get_rng_state(),
        }

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write ``last.pth`` atomically (main process only); returns its path."""
        path = Path(path) if path else self.checkpoint_path
        if path is None or not self.is_main:
            return None
        save_checkpoint(path, unwrap(self.model), self.epoch, extra=self.state())
        self._saved_at = (self.step, self.epoch)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self)
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load a checkpoint written by ``save``; False (and nothing changed) when it does not exist."""
        path = Path(path) if path else self.checkpoint_path
        if path is None or not path.is_file():
            return False
        ckpt = load_checkpoint(path, map_location=self.device)
        missing = [k for k in ("optimizer", "step", "rng") if k not in ckpt.meta]
        if missing:
            raise CheckpointError(f"{path}: not a training checkpoint (no {missing[0]}); use --init_from for weights")
        load_weights(unwrap(self.model), ckpt)
        try:
            self.optimizer.load_state_dict(ckpt.meta["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimizer state does not fit this optimizer ({exc})") from None
        if self.scheduler is not None and ckpt.meta.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt.meta["scheduler"])
        if self.scaler.is_enabled() and ckpt.meta.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt.meta["scaler"])
        self.epoch = int(ckpt.epoch or 0)
        self.step = int(ckpt.meta["step"])
        self.epoch_step = int(ckpt.meta.get("epoch_step", 0))
        self.extra_state = dict(ckpt.meta.get("extra_state") or {})
        set_rng_state(ckpt.meta["rng"])
        return True

    # -------------------------------------------------------------------- steps

    def minutes(self) -> float:
        """Wall-clock minutes since this trainer was created (this invocation)."""
        return (time.monotonic() - self.started) / 60

    def _all_finite(self, value: torch.Tensor) -> bool:
        finite = torch.isfinite(value.detach()).all().float().reshape(1).to(self.device)
        if self.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        """One optimizer step on a batch; returns the loss parts (plus ``loss``, the weighted total)."""
        batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
        frame0, frame1, frame2 = batch[:3]
        self.model.train()
        with self.runtime.autocast():
            output = self.model(frame0, frame2)
        total, parts = self.loss_fn(output, frame1)
        if self.extra_loss is not None:
            extra = self.extra_loss(self, batch, output)
            if extra is not None:
                total = total + extra
                parts = {**parts, "extra": float(extra.detach())}
        if not self._all_finite(total):
            if self._saved_at is not None:
                kept = f"the last good checkpoint is kept: {self.checkpoint_path} (step {self._saved_at[0]})"
            else:
                kept = "no checkpoint was written by this run"
            raise NonFiniteLossError(
                f"loss is {float(total.detach())} at step {self.step + 1} (epoch {self.epoch + 1}); training "
                f"stopped before updating the weights; {kept}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.options.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.epoch_step += 1
        parts = {"loss": float(total.detach()), **parts}
        if self.on_step is not None:
            self.on_step(self, parts)
        return parts

    def _epoch_batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """The current epoch's remaining batches (after ``epoch_step`` already-trained ones)."""
        for obj in (getattr(self.loader, "sampler", None), getattr(self.loader, "dataset", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch)
        sampler = getattr(self.loader, "sampler", None)
        skip_batches = self.epoch_step
        if isinstance(sampler, ResumableSampler):
            sampler.skip = skip_batches * (self.loader.batch_size or 1)
            skip_batches = 0
        try:
            for i, batch in enumerate(self.loader):
                if i >= skip_batches:
                    yield batch
        finally:
            if isinstance(sampler, ResumableSampler):
                sampler.skip = 0

    def fit(self, epochs: int, max_steps: int | None = None, max_minutes: float | None = None) -> FitResult:
        """Train until ``epochs`` epochs are done, or ``max_steps`` total steps, or ``max_minutes`` of
        this invocation; ``last.pth`` is saved whenever it stops (on NaN the previous one stays)."""
        per_epoch = len(self.loader)
        if per_epoch == 0:
            raise TrainingError("the data loader yields no batches (fewer samples than one batch?)")
        reason = self._budget_reason(max_steps, None) or "done"
        done = min(self.epoch * per_epoch + self.epoch_step, epochs * per_epoch)
        bar = tqdm(
            total=epochs * per_epoch,
            initial=done,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.options.progress and self.is_main),
        )
        try:
            while self.epoch < epochs and reason == "done":
                for batch in self._epoch_batches():
                    parts = self.train_step(batch)
                    bar.update(1)
                    bar.set_postfix(loss=f"{parts['loss']:.4f}", epoch=self.epoch + 1)
                    reason = self._budget_reason(max_steps, max_minutes) or "done"
                    if reason != "done":
                        break
                    every = self.options.steps_per_checkpoint
                    if every and self.step % every == 0:
                        self.save()
                if reason == "done" or self.epoch_step >= per_epoch:
                    self._end_epoch()
                    if reason == "done" and self.epoch < epochs:
                        reason = self._budget_reason(max_steps, max_minutes) or "done"
            if self._saved_at != (self.step, self.epoch):
                self.save()
        finally:
            bar.close()
        return FitResult(reason, self.step, self.epoch, self.minutes())

    def _budget_reason(self, max_steps: int | None, max_minutes: float | None) -> str | None:
        if max_steps is not None and self.step >= max_steps:
            return "max_steps"
        if max_minutes is not None:
            reached = self.minutes() >= max_minutes
            if self.distributed:  # rank 0's clock decides, so that every rank stops at the same step
                flag = torch.tensor([float(reached)], device=self.device)
                dist.broadcast(flag, 0)
                reached = bool(flag.item())
            if reached:
                return "max_minutes"
        return None

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.epoch_step = 0
        if self.scheduler is not None:
            self.scheduler.step()
        if self.on_epoch_end is not None:
            self.on_epoch_end(self)
        self.save()


def format_parts(parts: Mapping[str, float]) -> str:
    """``loss 0.1234  Charb 0.1000 ...`` for logs."""
    return "  ".join(f"{k} {v:.5g}" if math.isfinite(v) else f"{k} {v}" for k, v in parts.items())
