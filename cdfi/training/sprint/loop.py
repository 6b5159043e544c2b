"""The sprint's training loop: one model for a fixed wall-clock slot, with no host work per step.

Each step draws its batch on the device (``DeviceSampler``), runs the model under the runtime's autocast
(bf16 on the GPU) in channels_last, and steps Adamax. Nothing in the step reads a value back to the
host: the loss terms are summed on the device and read every ``log_every`` steps, which is also when a
non-finite loss is caught (the weights of the last good log point are then restored and the slot
ends). The learning rate follows the clock: a linear warm-up over the first steps, then a cosine from
``lr`` down to ``final`` times ``lr`` at the end of the slot, so a slot of any length ends annealed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdfi.io.atomic import atomic_path
from cdfi.io.checkpoint import checkpoint_metadata
from cdfi.runtime import Runtime
from cdfi.training.losses import LossSpecError, charbonnier, parse_loss
from cdfi.training.sprint.device_data import DeviceSampler, ValidationSet, validation_psnr

__all__ = [
    "SPRINT_LOSSES",
    "Schedule",
    "SlotResult",
    "SprintLoss",
    "StopFlag",
    "half_state_dict",
    "save_sprint_checkpoint",
    "train_slot",
]

SPRINT_LOSSES = {
    "cdfi_adacof": "1*Charb+0.01*g_Spatial+1*Warp+1*Context",
    "compressed_adacof": "1*Charb+0.01*g_Spatial+0.005*g_Occlusion+1*Warp",
    "adacof": "1*Charb+0.01*g_Spatial+0.005*g_Occlusion+1*Warp",
}
"""The loss strings the shipped files were trained with (checkpoints/MODEL_CARD.md)."""

FP16_MAX = 65000.0


class SprintLoss:
    """A published-style loss string evaluated without host synchronisation.

    ``CompositeLoss`` reads every term back to the host (``float(value)``) for logging; here the terms
    stay on the device as one tensor. Terms: ``Charb``, ``L1``, ``MSE``, ``Warp``, ``Context`` and the
    model's ``g_*`` regularisers, with the same definitions as ``cdfi.training.losses``; ``VGG`` is not
    offered (no ImageNet weights travel to the GPU machine).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        terms = parse_loss(spec)
        if any(t.name == "VGG" for t in terms):
            raise LossSpecError(f"loss {spec!r}: the sprint has no VGG term (no ImageNet weights travel with it)")
        self.names = [t.name for t in terms]
        self.weights = [t.weight for t in terms]

    def check(self, outputs: dict[str, torch.Tensor], model_name: str) -> None:
        """Fail with one line when a term needs an output the model does not give."""
        for name in self.names:
            need = {"Warp": "warp0", "Context": "context"}.get(name, name if name.startswith("g_") else None)
            if need is not None and need not in outputs:
                raise LossSpecError(f"loss term {name} needs {need!r}, which {model_name} does not give in training")

    def _term(self, name: str, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        frame = outputs["frame1"].float()
        if name == "Charb":
            return charbonnier(frame, target)
        if name == "L1":
            return (frame - target).abs().mean()
        if name == "MSE":
            return (frame - target).square().mean()
        if name == "Warp":
            return (charbonnier(outputs["warp0"].float(), target) + charbonnier(outputs["warp2"].float(), target)) / 2
        if name == "Context":
            return charbonnier(outputs["context"].float(), target)
        return outputs[name].float()

    def __call__(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted total, the unweighted terms as one detached tensor in ``names`` order)."""
        target = target.float()
        values = [self._term(name, outputs, target) for name in self.names]
        total = sum((w * v for w, v in zip(self.weights, values, strict=True)), values[0].new_zeros(()))
        return total, torch.stack(values).detach()


@dataclass(frozen=True)
class Schedule:
    """Learning rate: linear warm-up over ``warmup_steps``, then a cosine over the slot's wall-clock time
    from ``lr`` to ``final * lr``."""

    lr: float
    warmup_steps: int = 100
    final: float = 0.05

    def at(self, step: int, fraction: float) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        fraction = min(max(fraction, 0.0), 1.0)
        return self.lr * warm * (self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * fraction)))


class StopFlag:
    """Set from a signal handler; the loop checks it between steps."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason


def half_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights on the CPU with floating-point tensors in fp16 (those that fp16 cannot hold
    stay fp32): half the file size, and ``load_model`` loads them into an fp32 model as they are."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    floats = [k for k, v in state.items() if v.is_floating_point() and v.numel()]
    peaks = torch.stack([state[k].abs().max().float() for k in floats]).tolist() if floats else []
    fits = {k for k, peak in zip(floats, peaks, strict=True) if peak < FP16_MAX}
    return {k: v.to("cpu", torch.float16) if k in fits else v.to("cpu").clone() for k, v in state.items()}


def save_sprint_checkpoint(
    path: str | Path, model: nn.Module, *, step: int, extra: dict[str, Any] | None = None
) -> int:
    """Write the published ``{'epoch', 'state_dict'}`` format with our metadata and fp16 weights,
    atomically; returns the file size."""
    payload: dict[str, Any] = {"epoch": 0, "state_dict": half_state_dict(model)}
    payload.update(checkpoint_metadata(model))  # type: ignore[arg-type]
    payload.update({"step": int(step), "weights_dtype": "float16"})
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path).stat().st_size


@dataclass
class SlotResult:
    """What one model's slot did."""

    label: str
    steps: int = 0
    train_s: float = 0.0
    steps_per_s: float | None = None
    samples_per_s: float | None = None
    val: dict[str, float] = field(default_factory=dict)
    val_step: dict[str, int] = field(default_factory=dict)
    weights_step: int = 0
    stopped: str | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_slot(
    model: nn.Module,
    *,
    label: str,
    loss: SprintLoss,
    sampler: DeviceSampler,
    val: ValidationSet,
    runtime: Runtime,
    schedule: Schedule,
    slot_s: float,
    on_log: Callable[[dict[str, Any]], None],
    on_save: Callable[[int], None],
    stop: StopFlag,
    log_every: int = 50,
    save_every_s: float = 60.0,
    mid_validation: bool = True,
    step_fn: Callable[..., Any] | None = None,
    result: SlotResult | None = None,
) -> SlotResult:
    """Train ``model`` (already on the device, in train mode) for ``slot_s`` seconds of wall clock.

    ``on_log`` gets each log or validation row; ``on_save(step)`` writes the checkpoint and curves and
    is called every ``save_every_s`` seconds. Validation runs once at half the slot (``mid_validation``)
    inside the slot's time; the caller validates the end. ``step_fn`` replaces ``model`` in the forward
    pass (a ``torch.compile``'d model). Returns the slot's result; ``result.stopped`` says why it ended
    early (a signal, a non-finite loss).
    """
    device = runtime.device
    result = result or SlotResult(label)
    forward = step_fn or model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adamax(params, lr=schedule.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    acc = torch.zeros(len(loss.names), device=device)
    good = [p.detach().clone() for p in params]
    batch = sampler.batch
    step = good_step = 0
    t0 = time.monotonic()
    last_save = t0
    steady: tuple[int, float] | None = None
    mid_done = not mid_validation
    lr = schedule.at(0, 0.0)
    while True:
        elapsed = time.monotonic() - t0
        fraction = elapsed / slot_s if slot_s > 0 else 1.0
        if fraction >= 1.0 or stop.reason:
            result.stopped = result.stopped or stop.reason
            break
        if not mid_done and fraction >= 0.5:
            mid_done = True
            psnr = float(validation_psnr(model, val).mean())
            result.val["mid"], result.val_step["mid"] = psnr, step
            on_log({"model": label, "step": step, "seconds": time.monotonic() - t0, "val_psnr": psnr})
        lr = schedule.at(step, fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        frame0, frame1, frame2 = sampler.next()
        with runtime.autocast():
            outputs = forward(frame0, frame2)
            total, parts = loss(outputs, frame1)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        acc += parts
        step += 1
        if step % log_every == 0:
            means = (acc / log_every).tolist()
            acc.zero_()
            now = time.monotonic()
            if not all(math.isfinite(v) for v in means):
                with torch.no_grad():
                    for p, g in zip(params, good, strict=True):
                        p.copy_(g)
                result.weights_step = good_step
                result.stopped = f"non-finite loss by step {step}; weights of step {good_step} kept"
                break
            with torch.no_grad():
                for p, g in zip(params, good, strict=True):
                    g.copy_(p)
            good_step = step
            if steady is None:
                steady = (step, now)
            row = {"model": label, "step": step, "seconds": now - t0, "samples": step * batch, "lr": lr}
            row["loss"] = sum(w * v for w, v in zip(loss.weights, means, strict=True))
            row.update(dict(zip(loss.names, means, strict=True)))
            on_log(row)
        if time.monotonic() - last_save >= save_every_s:
            result.weights_step = step
            on_save(step)
            last_save = time.monotonic()
    _sync(device)
    end = time.monotonic()
    result.steps, result.train_s = step, end - t0
    if not (result.stopped or "").startswith("non-finite"):
        result.weights_step = step
    if steady is not None and step > steady[0] and end > steady[1]:
        result.steps_per_s = (step - steady[0]) / (end - steady[1])
    elif step > 0 and result.train_s > 0:
        result.steps_per_s = step / result.train_s
    if result.steps_per_s is not None:
        result.samples_per_s = result.steps_per_s * batch
    return result
