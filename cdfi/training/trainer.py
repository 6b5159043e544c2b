"""The training loop shared by ``train.py`` and ``prune.py``: resumable, distributed, mixed precision.

API::

    trainer = Trainer(model, optimizer, loader, loss_fn, scheduler=..., device="cpu", precision="fp32",
                      checkpoint_path="model_weights/run/checkpoints/last.pth", steps_per_checkpoint=100)
    trainer.resume()                        # continue from checkpoint_path if it exists (optional)
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
- ``extra_loss(trainer, batch, output) -> Tensor | None``: added to the loss (e.g. ``FlowWarmStart``).
- ``on_step(trainer, parts)`` after every optimizer step; ``on_epoch_end(trainer)`` after every epoch
  (``trainer.epoch`` already counts it); ``on_checkpoint(trainer)`` after ``last.pth`` is written.
  Callbacks run on every process; check ``trainer.is_main`` before writing files.
- ``trainer.extra_state``: a dict of JSON-like values saved into ``last.pth`` and restored by
  ``resume`` (``cdfi.training.monitor`` keeps the run's minutes and best PSNR there).

``last.pth`` is written with ``cdfi.io.checkpoint.save_checkpoint`` (the published ``{'epoch',
'state_dict'}`` plus metadata) and additionally holds ``optimizer``, ``scheduler``, ``scaler``,
``step``, ``epoch_step``, ``extra_state`` and ``rng`` (every RNG state as tensors), so that
``torch.load(weights_only=True)`` reads it and ``load_model`` can use it as a model checkpoint. It is
saved every ``steps_per_checkpoint`` steps, at every epoch end and when ``fit`` stops. A NaN or
infinite loss raises ``NonFiniteLossError`` before the bad step touches the weights, so ``last.pth``
keeps the last good state.

Also here: optimizer and scheduler factories of the published code, parameter groups for per-head
learning rates and the softmax temperature, He initialisation, offset initialisation off the integer
kinks, the flow warm start, motion distillation and the blurred-warp loss (issue 11).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from cdfi.inference.motion import kernel_motion
from cdfi.io.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from cdfi.runtime.precision import autocast, make_grad_scaler
from cdfi.training.losses import charbonnier, gaussian_blur
from models.adacof import pad_to_multiple

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "BlurredWarp",
    "FitResult",
    "FlowWarmStart",
    "MotionDistillation",
    "NonFiniteLossError",
    "ResumableSampler",
    "Trainer",
    "TrainingError",
    "build_optimizer",
    "build_scheduler",
    "combine_extra_losses",
    "get_rng_state",
    "init_blend",
    "init_he",
    "init_offsets",
    "parameter_groups",
    "parse_head_lr",
    "set_rng_state",
    "unwrap",
]

OPTIMIZERS = ("SGD", "ADAM", "RMSprop", "ADAMax")
HEAD_KINDS = ("Weight", "Alpha", "Beta", "Occlusion", "Blend")


class TrainingError(ValueError):
    """A training configuration that cannot run (bad optimizer name, checkpoint mismatch, ...)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the weights were left at the last good step."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# ----------------------------------------------------------------------------------------------- setup


def parse_head_lr(text: str | None) -> dict[str, float]:
    """``"Alpha=2,Beta=2,Weight=0.5"`` -> {head kind: lr multiplier}; kinds are Weight, Alpha, Beta,
    Occlusion, Blend (both kernel sets), or a full head name such as ``Alpha1``."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise TrainingError(f"--head_lr entry {part!r} is not NAME=MULTIPLIER")
        if name.rstrip("12") not in HEAD_KINDS:
            raise TrainingError(f"--head_lr: unknown head {name!r}; use {', '.join(HEAD_KINDS)} (optionally 1/2)")
        try:
            out[name] = float(value)
        except ValueError:
            raise TrainingError(f"--head_lr: {value!r} is not a number (in {part!r})") from None
        if not out[name] > 0:
            raise TrainingError(f"--head_lr: multiplier of {name} must be positive, got {value}")
    return out


def _head_of(param_name: str) -> str | None:
    """``get_kernel.moduleAlpha1.7.weight`` -> ``Alpha1``; None for non-head parameters."""
    parts = param_name.split(".")
    if len(parts) >= 2 and parts[0] == "get_kernel" and parts[1].startswith("module"):
        head = parts[1].removeprefix("module")
        if head.rstrip("12") in HEAD_KINDS:
            return head
    return None


def parameter_groups(
    model: nn.Module,
    lr: float,
    head_lr: Mapping[str, float] | None = None,
    weight_temperature: float = 1.0,
    optimizer: str = "ADAMax",
) -> list[dict[str, Any]]:
    """Parameter groups with per-head learning-rate multipliers.

    ``weight_temperature`` T > 1 trains the softmax of the Weight heads as ``softmax(z / T)`` without
    changing the model: the last conv of each Weight head is scaled by 1/T once (``init_weight_temperature``)
    and its learning rate by 1/T (Adam family, which is invariant to gradient scale) or 1/T^2 (SGD),
    which is the same optimisation trajectory as dividing the logits by T, up to Adam's epsilon. The
    saved weights are ordinary weights.
    """
    head_lr = dict(head_lr or {})
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in unwrap(model).named_parameters():
        if not param.requires_grad:
            continue
        factor = 1.0
        head = _head_of(name)
        if head is not None:
            factor = head_lr.get(head, head_lr.get(head.rstrip("12"), 1.0))
            if head.startswith("Weight") and weight_temperature != 1.0 and _is_last_conv(name):
                factor /= weight_temperature ** (2 if optimizer == "SGD" else 1)
        groups.setdefault(factor, []).append(param)
    return [{"params": ps, "lr": lr * f, "lr_factor": f} for f, ps in sorted(groups.items())]


def _is_last_conv(param_name: str) -> bool:
    """The output conv of a head sits at index 7 of its ``nn.Sequential``."""
    return param_name.split(".")[2] == "7"


def init_weight_temperature(model: nn.Module, temperature: float) -> None:
    """Scale the output conv of both Weight heads by 1/T (see ``parameter_groups``)."""
    if temperature <= 0:
        raise TrainingError(f"--weight_temperature must be positive, got {temperature}")
    kernel = unwrap(model).get_kernel
    with torch.no_grad():
        for head in ("Weight1", "Weight2"):
            conv = getattr(kernel, f"module{head}")[7]
            conv.weight.div_(temperature)
            conv.bias.div_(temperature)


def init_blend(model: nn.Module, bias: float | None) -> None:
    """CDFI only: set the bias of the Blend head's output conv to ``bias`` (``None`` keeps the init).

    The output is ``blend * GridNet + (1 - blend) * AdaCoF``. At the default init ``blend`` is about
    0.5 and the untrained GridNet's synthesis makes the first frames far worse than either input
    (validation ~11 dB at step 0). With a negative bias (-4: blend ~2%) training starts from the AdaCoF
    output, which learns motion quickly under ``--recipe small``, and the GridNet is blended in as it
    becomes useful.
    """
    if bias is None:
        return
    kernel = unwrap(model).get_kernel
    if "Blend" not in kernel.head_names:
        raise TrainingError("--blend_bias applies to CDFI only (its Blend head mixes in the GridNet synthesis)")
    with torch.no_grad():
        kernel.moduleBlend[7].bias.fill_(bias)


INITS = ("published", "he")


def init_he(model: nn.Module, seed: int = 0) -> None:
    """He (Kaiming) normal initialisation of the kernel-estimation network's convolutions, zero biases.

    PyTorch's default init, which the published code keeps, shrinks the signal variance about 6x per
    conv+ReLU layer, so at the start the kernel heads see almost no spatial variation of the input
    (relative spatial std about 1e-3 at the heads) and their outputs are nearly constant. He init keeps
    the variance through the U-Net: the offsets start spatially varying (about +-0.5 px, off the
    integer kink) and respond to the input from the first step. CDFI's GridNet keeps the published
    init: its grid adds many residual paths, and He init there starts the synthesis at std ~12.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in unwrap(model).get_kernel.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                noise = torch.randn(module.weight.shape, generator=gen)
                module.weight.copy_(noise * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()


def init_offsets(model: nn.Module, magnitude: float, seed: int = 0) -> None:
    """Start every tap's offsets off the integer kink at 0: the bias of the Alpha/Beta output convs
    is set to +-``magnitude`` with a seeded random sign per channel (0 keeps the default init)."""
    if magnitude == 0:
        return
    if not 0 < abs(magnitude) < 1:
        raise TrainingError(f"--offset_init must be in (0, 1) pixels, got {magnitude}")
    gen = torch.Generator().manual_seed(seed)
    kernel = unwrap(model).get_kernel
    with torch.no_grad():
        for head in ("Alpha1", "Beta1", "Alpha2", "Beta2"):
            bias = getattr(kernel, f"module{head}")[7].bias
            sign = torch.randint(0, 2, bias.shape, generator=gen).float() * 2 - 1
            bias.copy_(sign.to(bias) * abs(magnitude))


def build_optimizer(
    name: str, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The published optimizer choices: SGD (momentum 0.9), ADAM / ADAMax (betas 0.9, 0.999, eps 1e-8),
    RMSprop (eps 1e-8)."""
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "ADAM":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "ADAMax":
        return torch.optim.Adamax(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr, eps=1e-8, weight_decay=weight_decay)
    raise TrainingError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, decay_type: str, lr_decay: int, gamma: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: ``step`` = StepLR(lr_decay, gamma) (published), ``step_20_40_...`` =
    MultiStepLR at those epochs, ``none`` = constant."""
    if decay_type == "step":
        if lr_decay < 1:
            raise TrainingError(f"--lr_decay must be a positive number of epochs, got {lr_decay}")
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay, gamma=gamma)
    if decay_type.startswith("step_"):
        try:
            milestones = [int(m) for m in decay_type.split("_")[1:]]
        except ValueError:
            raise TrainingError(f"--decay_type {decay_type!r}: expected step_E1_E2... with integer epochs") from None
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    if decay_type == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise TrainingError(f"unknown --decay_type {decay_type!r}; use step, step_E1_E2..., or none")


# ----------------------------------------------------------------------------------------------- RNG


def get_rng_state() -> dict[str, Any]:
    """Every RNG state as tensors (readable with ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_meta": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor(np_state[4], dtype=torch.float64),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``get_rng_state`` saved."""
    torch.set_rng_state(state["torch"])
    meta = state["numpy_meta"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), meta[0], meta[1], float(state["numpy_gauss"]))
    )
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ----------------------------------------------------------------------------------------------- data


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way (``skip`` indices of this rank), so a
    resumed run sees exactly the batches it had not seen. Works single-process (``num_replicas=1``)."""

    def __init__(
        self,
        dataset: Any,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


# ----------------------------------------------------------------------------------------------- warm start


class FlowWarmStart:
    """Extra loss for the first ``steps`` steps: L1 between every tap's offsets and half the OpenCV DIS
    flow, -f/2 for frame0's taps and +f/2 for frame2's (the middle pixel x came from x - f/2 in frame0
    and goes to x + f/2 in frame2). Needs batches ``(frame0, frame1, frame2, flow)`` with flow (N, 2, H, W)
    as (dx, dy) from frame0 to frame2 (``VimeoTriplets(with_flow=True)``). Alpha is vertical, Beta horizontal.
    """

    def __init__(self, model: nn.Module, steps: int, weight: float = 1.0) -> None:
        self.steps = int(steps)
        self.weight = float(weight)
        self.heads: dict[str, torch.Tensor] = {}
        unwrap(model).get_kernel.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: Any, output: dict[str, torch.Tensor]) -> None:
        self.heads = output

    def offset_error(self, flow: torch.Tensor) -> torch.Tensor:
        """Mean |offset - target| over all taps of both kernel sets, from the last forward pass."""
        h, w = flow.shape[-2:]
        dx, dy = flow[:, :1], flow[:, 1:2]
        terms = []
        for head, target in (("Alpha1", -dy / 2), ("Beta1", -dx / 2), ("Alpha2", dy / 2), ("Beta2", dx / 2)):
            offsets = self.heads[head][..., :h, :w].float()
            terms.append((offsets - target).abs().mean())
        return sum(terms) / len(terms)

    def __call__(self, trainer: Trainer, batch: tuple[torch.Tensor, ...], output: Any) -> torch.Tensor | None:
        if trainer.step >= self.steps or len(batch) < 4:
            return None
        return self.weight * self.offset_error(batch[3])


class MotionDistillation(FlowWarmStart):
    """Extra loss for the whole run: the end-point error between each kernel set's motion (its weighted
    mean sample position, ``cdfi.inference.motion.kernel_motion``) and -f/2 (frame0) or +f/2 (frame2) of the
    OpenCV DIS flow f. Unlike the warm start it constrains only where a kernel samples on average, not
    every tap, so it suits trained kernels that pick one off-centre tap; it targets their habit of moving
    about half as far as the scene (``benchmarks/motion_check.py``)."""

    def __init__(self, model: nn.Module, weight: float, eps: float = 1e-3) -> None:
        super().__init__(model, steps=2**62, weight=weight)
        net = unwrap(model)
        self.kernel_size, self.dilation, self.eps = int(net.kernel_size), int(net.dilation), float(eps)

    def offset_error(self, flow: torch.Tensor) -> torch.Tensor:
        """Mean end-point error in pixels (Charbonnier-smoothed) of both kernel sets' motion."""
        h, w = flow.shape[-2:]
        terms = []
        for (wk, ak, bk), sign in ((("Weight1", "Alpha1", "Beta1"), -0.5), (("Weight2", "Alpha2", "Beta2"), 0.5)):
            heads = [self.heads[k][..., :h, :w] for k in (wk, ak, bk)]
            motion, _ = kernel_motion(*heads, self.kernel_size, self.dilation)
            error = (motion - sign * flow.float()).pow(2).sum(1) + self.eps**2
            terms.append(error.sqrt().mean())
        return sum(terms) / len(terms)


class BlurredWarp:
    """Extra loss for the whole run: the ``Warp`` term again on Gaussian-blurred frames, at each of
    ``sigmas`` (pixels): both inputs blurred and warped with the model's own kernels, against the blurred
    ground truth (Charbonnier, averaged over the sigmas and the two sides).

    Through bilinear sampling an offset's gradient only sees the image within a pixel of where it
    samples, so a motion more than a few pixels away is never found from the loss alone; on a frame
    blurred by sigma the gradient points the right way from about sigma further. This is a loss-side
    coarse-to-fine (``tests/test_training.py`` shows one offset recovering a 14-px shift from zero with
    sigmas 2, 4 and 8 but not without them). Not part of the published recipe.
    """

    def __init__(self, model: nn.Module, weight: float, sigmas: tuple[float, ...] = (2.0, 4.0, 8.0)) -> None:
        if not sigmas or any(s <= 0 for s in sigmas):
            raise TrainingError(f"blurred-warp sigmas must be positive, got {sigmas}")
        self.weight, self.sigmas = float(weight), tuple(float(s) for s in sigmas)
        self.net = unwrap(model)
        self.heads: dict[str, torch.Tensor] = {}
        self.net.get_kernel.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: Any, output: dict[str, torch.Tensor]) -> None:
        self.heads = output

    def error(self, frame0: torch.Tensor, frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        """Mean blurred-warp Charbonnier distance for the kernels of the last forward pass."""
        h, w = frame0.shape[-2:]
        k = {name: t.float() for name, t in self.heads.items()}
        terms = []
        for sigma in self.sigmas:
            target = gaussian_blur(frame1.float(), sigma)
            for frame, side in ((frame0, "1"), (frame2, "2")):
                padded = self.net.pad_frame(pad_to_multiple(gaussian_blur(frame.float(), sigma)))
                warped = self.net.warp(padded, k[f"Weight{side}"], k[f"Alpha{side}"], k[f"Beta{side}"])
                terms.append(charbonnier(warped[..., :h, :w], target))
        return sum(terms) / len(terms)

    def __call__(self, trainer: Trainer, batch: tuple[torch.Tensor, ...], output: Any) -> torch.Tensor:
        return self.weight * self.error(*batch[:3])


def combine_extra_losses(
    losses: list[Callable[[Trainer, tuple[torch.Tensor, ...], Any], torch.Tensor | None]],
) -> Callable[[Trainer, tuple[torch.Tensor, ...], Any], torch.Tensor | None] | None:
    """One ``extra_loss`` that adds up several (``None`` when there are none)."""
    if len(losses) <= 1:
        return losses[0] if losses else None

    def total(trainer: Trainer, batch: tuple[torch.Tensor, ...], output: Any) -> torch.Tensor | None:
        values = [v for v in (loss(trainer, batch, output) for loss in losses) if v is not None]
        return sum(values) if values else None

    return total


# ----------------------------------------------------------------------------------------------- trainer


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
        *,
        scheduler: Any = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        checkpoint_path: str | Path | None = None,
        steps_per_checkpoint: int = 0,
        grad_clip: float | None = None,
        extra_loss: Callable[[Trainer, tuple[torch.Tensor, ...], Any], torch.Tensor | None] | None = None,
        on_step: Callable[[Trainer, dict[str, float]], None] | None = None,
        on_epoch_end: Callable[[Trainer], None] | None = None,
        on_checkpoint: Callable[[Trainer], None] | None = None,
        progress: bool = True,
        warmup_steps: int = 0,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loader = loader
        self.loss_fn = loss_fn
        self.scheduler = scheduler
        self.device = torch.device(device)
        self.precision = precision
        self.scaler = make_grad_scaler(self.device, precision)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.steps_per_checkpoint = int(steps_per_checkpoint)
        self.grad_clip = grad_clip
        self.extra_loss = extra_loss
        self.on_step = on_step
        self.on_epoch_end = on_epoch_end
        self.on_checkpoint = on_checkpoint
        self.progress = progress
        self.warmup_steps = int(warmup_steps)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.is_main = not self.distributed or dist.get_rank() == 0
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self.extra_state: dict[str, Any] = {}
        self.started = time.monotonic()
        self._saved_at: tuple[int, int] | None = None

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
        with autocast(self.device, self.precision):
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
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        # Linear warm-up: a fresh Adam-family state moves every weight by about lr in its first steps,
        # which knocks a trained model back for hundreds of steps; scaling lr by (step + 1) / N avoids it.
        factor = min(1.0, (self.step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        try:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            self.epoch_step += 1
            parts = {"loss": float(total.detach()), **parts}
            if self.on_step is not None:
                self.on_step(self, parts)
        finally:
            for group, lr in zip(self.optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr
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
            disable=not (self.progress and self.is_main),
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
                    if self.steps_per_checkpoint and self.step % self.steps_per_checkpoint == 0:
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
