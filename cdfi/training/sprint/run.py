"""The whole sprint: checks up front, data onto the device, each model trained in its slot, results out.

Order of work, so that bad input fails in one line before anything is spent:

1. the budget against the call's limit (pure arithmetic), the device, the output folder, the bundle
   (manifest and every file's sha256), the checkpoints and loss strings;
2. the models onto the device and one dry training step each at the requested batch and crop, which
   measures the memory a step needs; with the frame bank's size this must fit the free memory;
3. the bundle decoded (OpenCV threads) and moved into one uint8 tensor on the device;
4. each model trained for its share of the budget (``train_slot``), validated mid-way and at the end;
   its checkpoint (fp16 weights), the curves and the summary are rewritten every ``save_every_s``
   seconds and at the end, so a run killed at the call's limit leaves its last ones.

The slots are cut from what is left when training starts: if set-up took longer than planned, both
shrink so that the run still ends ``tail_s`` before the call's limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdfi.io.checkpoint import load_model
from cdfi.io.download import sha256_file
from cdfi.runtime import Runtime
from cdfi.runtime.precision import prepare_model
from cdfi.training.sprint.bundle import Bundle, read_bundle, unpack_bundle
from cdfi.training.sprint.device_data import DeviceSampler, FrameBank, ValidationSet, validation_psnr
from cdfi.training.sprint.loop import (
    SPRINT_LOSSES,
    Schedule,
    SlotResult,
    SprintLoss,
    StopFlag,
    save_sprint_checkpoint,
    train_slot,
)
from cdfi.training.sprint.report import Curves, write_report
from models import variant_name

__all__ = ["SprintError", "SprintOptions", "check_options", "measure", "run_sprint", "synthetic_bank"]

GIB = 2**30
MIB = 2**20
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


class SprintError(ValueError):
    """A sprint that cannot run as asked (one-line message, exit 2)."""


@dataclass
class SprintOptions:
    """Everything a sprint run needs besides the runtime (see scripts/gpu_sprint.py for each flag)."""

    data: Path
    out: Path
    checkpoints: list[Path]
    shares: list[float]
    budget_s: float = 540.0
    limit_s: float = 720.0
    reserve_s: float = 120.0
    tail_s: float = 40.0
    batch: int = 16
    crop: int = 256
    lr: float = 2e-4
    warmup_steps: int = 100
    final_lr: float = 0.05
    motion_crop: float = 0.5
    log_every: int = 50
    save_every_s: float = 60.0
    mid_validation: bool = True
    val_limit: int | None = None
    compile: str = "off"
    seed: int = 0
    losses: dict[str, str] = field(default_factory=dict)
    decode_threads: int = 8
    memory_margin_gib: float = 2.0
    force: bool = False


def check_options(o: SprintOptions) -> None:
    """Refuse, before any work, options that cannot run: a budget that does not fit the call's limit,
    shares that do not match the checkpoints, sizes out of range."""
    if o.budget_s <= 0:
        raise SprintError(f"--budget_min must be positive, got {o.budget_s / 60:g}")
    if o.budget_s + o.reserve_s > o.limit_s:
        raise SprintError(
            f"--budget_min {o.budget_s / 60:g} plus {o.reserve_s / 60:g} min of set-up, validation and writing "
            f"(--reserve_min) does not fit the call's --limit_min {o.limit_s / 60:g}; lower the budget"
        )
    if not o.checkpoints:
        raise SprintError("no checkpoints to train")
    if len(o.shares) != len(o.checkpoints) or any(s <= 0 for s in o.shares):
        raise SprintError(f"--shares needs one positive weight per checkpoint ({len(o.checkpoints)}), got {o.shares}")
    if o.batch < 1 or o.crop < 32 or o.crop % 32:
        raise SprintError(f"--batch must be positive and --crop a positive multiple of 32, got {o.batch}, {o.crop}")
    if o.lr <= 0 or not 0 <= o.final_lr <= 1:
        raise SprintError(f"--lr must be positive and --final_lr in [0, 1], got {o.lr}, {o.final_lr}")
    if not 0 <= o.motion_crop <= 1:
        raise SprintError(f"--motion_crop must be in [0, 1], got {o.motion_crop}")
    if o.val_limit is not None and o.val_limit < 1:
        raise SprintError(f"--val_limit must be at least 1, got {o.val_limit}")
    if o.log_every < 1 or o.save_every_s <= 0:
        raise SprintError("--log_every and --save_every_s must be positive")
    if o.compile not in COMPILE_MODES:
        raise SprintError(f"--compile {o.compile!r}: choose one of {', '.join(COMPILE_MODES)}")
    for name in o.losses:
        if name not in SPRINT_LOSSES:
            raise SprintError(f"--loss {name}=...: unknown model family; use {', '.join(SPRINT_LOSSES)}")
    for path in o.checkpoints:
        if not Path(path).is_file():
            raise SprintError(f"{path}: checkpoint not found")


@dataclass
class _Plan:
    """One model to train: its checkpoint, the model on the device, loss and output name."""

    checkpoint: Path
    model: Any
    label: str
    loss: SprintLoss
    out_name: str
    share: float
    start: list[float] | None = None
    peak_bytes: int = 0


def _label(model: Any) -> str:
    return f"{model.model_name} F{model.kernel_size}/D{model.dilation}"


def _plans(o: SprintOptions, bundle: Bundle, runtime: Runtime) -> list[_Plan]:
    plans = []
    known = bundle.manifest.get("start", {})
    for path, share in zip(o.checkpoints, o.shares, strict=True):
        model = load_model(path)
        spec = o.losses.get(model.model_name, SPRINT_LOSSES[model.model_name])
        name = variant_name(model.model_name, model.kernel_size, model.dilation) + "_sprint.pth"
        sha = sha256_file(path)
        start = next((v["items"] for v in known.values() if v.get("sha256") == sha), None)
        model = prepare_model(model, runtime.device, runtime.precision, channels_last=True).train()
        plans.append(_Plan(Path(path), model, _label(model), SprintLoss(spec), name, share, start))
    if len({p.out_name for p in plans}) != len(plans):
        raise SprintError("two checkpoints of the same variant: their outputs would overwrite each other")
    return plans


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _random_frames(shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """Three random channels_last batches: the dry step's input."""
    return [torch.rand(shape, device=device).contiguous(memory_format=torch.channels_last) for _ in range(3)]


def _dry_step(plan: _Plan, o: SprintOptions, runtime: Runtime) -> int:
    """One forward and backward pass on random frames of the requested batch and crop; returns the peak
    device memory it took (0 on the CPU). Checks the loss terms against the model's outputs."""
    dev = runtime.device
    if runtime.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    frames = _random_frames((o.batch, 3, o.crop, o.crop), dev)
    try:
        with runtime.autocast():
            outputs = plan.model(frames[0], frames[2])
            plan.loss.check(outputs, plan.label)
            total, _ = plan.loss(outputs, frames[1])
        total.backward()
        del outputs, total
        plan.model.zero_grad(set_to_none=True)
        if runtime.is_cuda:
            torch.cuda.synchronize(dev)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        plan.model.zero_grad(set_to_none=True)
        free, size = _memory(runtime)
        raise SprintError(
            f"{_device_name(runtime)}: not enough memory for {plan.label} at batch {o.batch} of {o.crop}x{o.crop} "
            f"crops ({size / GIB:.1f} GiB, {free / GIB:.1f} GiB free); lower --batch or --crop"
        ) from None
    if not runtime.is_cuda:
        return 0
    peak = torch.cuda.max_memory_allocated(dev)
    torch.cuda.empty_cache()
    return int(peak)


def _memory(runtime: Runtime) -> tuple[int, int]:
    if not runtime.is_cuda:
        return 0, 0
    free, total = torch.cuda.mem_get_info(runtime.device)
    return int(free), int(total)


def _device_name(runtime: Runtime) -> str:
    if runtime.is_cuda:
        return f"{runtime.device} ({torch.cuda.get_device_name(runtime.device)})"
    return str(runtime.device)


def check_memory(plans: Sequence[_Plan], bank_bytes: int, o: SprintOptions, runtime: Runtime) -> None:
    """Refuse when the frame bank plus the largest training step's memory does not fit the free memory."""
    if not runtime.is_cuda:
        return
    free, total = _memory(runtime)
    step = max(p.peak_bytes for p in plans)
    need = bank_bytes + step + int(o.memory_margin_gib * GIB)
    if need > free:
        raise SprintError(
            f"{_device_name(runtime)}: {free / GIB:.1f} GiB free of {total / GIB:.1f}, but the frame bank "
            f"({bank_bytes / GIB:.1f} GiB) and a training step at batch {o.batch} ({step / GIB:.1f} GiB) "
            f"need {need / GIB:.1f} GiB with the margin; lower --batch or pack fewer clips"
        )


def _data_on_device(
    bundle: Bundle, o: SprintOptions, runtime: Runtime, notes: list[str]
) -> tuple[DeviceSampler, ValidationSet, dict[str, Any]]:
    """Decode the bundle into a frame bank and validation set on the device (clips smaller than the crop
    are left out of training)."""
    unpacked = unpack_bundle(bundle, threads=o.decode_threads)
    notes += unpacked.notes
    keep, left_out, rows = [], [], []
    base = 0
    for entry, frames, starts in zip(bundle.clips, unpacked.train, unpacked.triplets, strict=True):
        if entry["height"] < o.crop or entry["width"] < o.crop:
            left_out.append(f"{entry['name']} {entry['width']}x{entry['height']}")
            continue
        keep.append(frames)
        rows += [(base + s, base + s + 1, base + s + 2) for s in starts]
        base += frames.shape[0]
    if not rows:
        raise SprintError(f"no training triplet has frames of at least {o.crop}x{o.crop}")
    bank = FrameBank.from_clips(keep, runtime.device)
    keep.clear()
    unpacked.train.clear()  # the host copies: the bank holds the frames now
    triplets = torch.tensor(rows, dtype=torch.int64, device=runtime.device)
    sampler = DeviceSampler(bank, triplets, o.batch, o.crop, motion_crop=o.motion_crop, seed=o.seed)
    split = unpacked.validation
    limit = o.val_limit or len(split.items)
    val = ValidationSet.from_arrays(split.clips, split.items[:limit], split.names[:limit], runtime.device)
    facts = {
        "train_triplets": len(rows),
        "train_clips": len(bundle.clips) - len(left_out),
        "left_out": (", ".join(left_out) + f" left out: smaller than the {o.crop}x{o.crop} crop") if left_out else "",
        "bank_gib": bank.nbytes / GIB,
    }
    return sampler, val, facts


def _compiled(model: Any, mode: str) -> Callable[..., Any] | None:
    if mode == "off":
        return None
    return torch.compile(model, mode=None if mode == "default" else mode)


def run_sprint(
    o: SprintOptions,
    runtime: Runtime,
    *,
    started: float | None = None,
    stop: StopFlag | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the sprint (module docstring) and return its report, also written as summary.json/.txt.

    ``started`` is the ``time.monotonic()`` at which the call's clock started (default: now).
    """
    t0 = time.monotonic() if started is None else started
    stop = stop or StopFlag()
    check_options(o)
    if o.out.exists() and (o.out.is_file() or (any(o.out.iterdir()) and not o.force)):
        raise SprintError(f"{o.out}: exists and is not an empty folder (pass --force to write into it)")
    phases: dict[str, float] = {"start": time.monotonic() - t0}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name], mark = now - mark, now

    bundle = read_bundle(o.data)
    phase("bundle")
    plans = _plans(o, bundle, runtime)
    phase("models")
    if runtime.is_cuda:
        torch.backends.cudnn.benchmark = True
    for plan in plans:
        plan.peak_bytes = _dry_step(plan, o, runtime)
    check_memory(plans, bundle.decoded_bytes(), o, runtime)
    phase("dry_steps")
    notes: list[str] = []
    sampler, val, facts = _data_on_device(bundle, o, runtime, notes)
    phase("data")
    o.out.mkdir(parents=True, exist_ok=True)
    # Baselines over the items validated (all of them unless --val_limit).
    baselines = {k: float(np.mean(v["items"][: len(val)])) for k, v in bundle.manifest.get("baselines", {}).items()}
    curves = Curves(baselines)
    report: dict[str, Any] = {
        "device": _device_name(runtime),
        "precision": runtime.precision,
        "batch": o.batch,
        "crop": o.crop,
        "val_items": len(val),
        "bundle_mib": bundle.file_bytes() / MIB,
        "budget_s": o.budget_s,
        "limit_s": o.limit_s,
        "baselines": baselines,
        "compile": o.compile,
        "lr": o.lr,
        "models": [],
        "notes": notes,
        **facts,
    }
    setup_end = time.monotonic()
    report["setup_s"] = setup_end - t0
    report["setup_phases_s"] = phases
    available = min(o.budget_s, t0 + o.limit_s - o.tail_s - setup_end)
    if available < o.budget_s:
        notes.append(f"set-up took {setup_end - t0:.0f} s; training shortened to {available:.0f} s to fit the limit")
    total_share = sum(p.share for p in plans)
    slots = [max(0.0, available) * p.share / total_share for p in plans]
    planned = ", ".join(f"{p.label} {s:.0f} s" for p, s in zip(plans, slots, strict=True))
    parts = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    log(f"set-up {setup_end - t0:.1f} s ({parts}); training {planned}")

    def entry(plan: _Plan, res: SlotResult, written: int | None) -> dict[str, Any]:
        return {
            "label": plan.label,
            "checkpoint_in": str(plan.checkpoint),
            "loss": plan.loss.spec,
            "steps": res.steps,
            "train_s": res.train_s,
            "steps_per_s": res.steps_per_s,
            "samples_per_s": res.samples_per_s,
            "val": dict(res.val),
            "val_step": dict(res.val_step),
            "weights_step": res.weights_step,
            "stopped": res.stopped,
            "checkpoint": plan.out_name if written else None,
            "checkpoint_mib": (written or 0) / MIB,
            "peak_gib": plan.peak_bytes / GIB,
        }

    def write(png: bool = True) -> None:
        report["wall_s"] = time.monotonic() - t0
        write_report(o.out, report, curves, png=png)

    deadline = t0 + o.limit_s - o.tail_s
    for n, (plan, slot) in enumerate(zip(plans, slots, strict=True)):
        if stop.reason:
            break
        res = SlotResult(plan.label)
        if plan.start is None:
            plan.start = validation_psnr(plan.model, val).tolist()
        plan.start = plan.start[: len(val)]
        res.val["start"], res.val_step["start"] = float(np.mean(plan.start)), 0
        curves.add(model=plan.label, step=0, seconds=0.0, val_psnr=res.val["start"])
        report["models"].append(entry(plan, res, None))
        written: list[int] = []

        def save(step: int, plan: _Plan = plan, res: SlotResult = res, written: list[int] = written) -> None:
            extra = {"sprint": {"from": str(plan.checkpoint), "loss": plan.loss.spec, "batch": o.batch, "crop": o.crop}}
            written.append(save_sprint_checkpoint(o.out / plan.out_name, plan.model, step=step, extra=extra))
            res.steps = step
            report["models"][-1] = entry(plan, res, written[-1])
            write()

        # Validations between slots take time too: keep the later slots and the deadline whole.
        slot = max(0.0, min(slot, deadline - time.monotonic() - sum(slots[n + 1 :])))
        log(f"{plan.label}: training for {slot:.0f} s from {plan.checkpoint} (validation {res.val['start']:.2f} dB)")
        train_slot(
            plan.model,
            label=plan.label,
            loss=plan.loss,
            sampler=sampler,
            val=val,
            runtime=runtime,
            schedule=Schedule(o.lr, o.warmup_steps, o.final_lr),
            slot_s=slot,
            on_log=lambda row: curves.add(**row),
            on_save=save,
            stop=stop,
            log_every=o.log_every,
            save_every_s=o.save_every_s,
            mid_validation=o.mid_validation,
            step_fn=_compiled(plan.model, o.compile),
            result=res,
        )
        if not stop.reason:
            res.val["end"], res.val_step["end"] = float(validation_psnr(plan.model, val).mean()), res.weights_step
            curves.add(model=plan.label, step=res.weights_step, seconds=res.train_s, val_psnr=res.val["end"])
        extra = {"sprint": {"from": str(plan.checkpoint), "loss": plan.loss.spec, "batch": o.batch, "crop": o.crop}}
        if "end" in res.val:
            extra["val_psnr"] = round(res.val["end"], 3)
        written.append(save_sprint_checkpoint(o.out / plan.out_name, plan.model, step=res.weights_step, extra=extra))
        report["models"][-1] = entry(plan, res, written[-1])
        write(png=not stop.reason)
        rate = f"{res.steps_per_s:.2f} steps/s" if res.steps_per_s else "no rate"
        scores = ", ".join(f"{k} {v:.2f}" for k, v in res.val.items())
        log(f"{plan.label}: {res.steps} steps in {res.train_s:.0f} s ({rate}); validation {scores} dB")
    report["stopped"] = stop.reason
    write(png=not stop.reason)  # after a signal every second counts: the last periodic PNG stays
    return report


def synthetic_bank(frames: int, height: int, width: int, device: torch.device | str, seed: int = 0) -> FrameBank:
    """One clip of ``frames`` smooth random frames panning by a pixel per frame (for ``measure`` without a
    bundle, and tests): the warps and crops see texture and motion."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, height // 8 + 2, (width + frames) // 8 + 2), generator=g)
    texture = torch.nn.functional.interpolate(coarse, scale_factor=8, mode="bilinear", align_corners=False)[0]
    texture = (texture * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    clip = torch.stack([texture[:height, i : i + width] for i in range(frames)])
    return FrameBank.from_clips([clip.numpy()], device)


def measure(
    checkpoints: Sequence[Path],
    runtime: Runtime,
    *,
    batch: int = 16,
    crop: int = 256,
    warmup: int = 20,
    steps: int = 100,
    data: Path | None = None,
    compile_mode: str = "off",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Training steps per second of each model alone at ``batch`` x ``crop``: ``warmup`` steps, then
    ``steps`` timed between two synchronisations. Frames come from the bundle at ``data`` or, without
    one, a synthetic bank. Returns one row per model."""
    if compile_mode not in COMPILE_MODES:
        raise SprintError(f"--compile {compile_mode!r}: choose one of {', '.join(COMPILE_MODES)}")
    for path in checkpoints:
        if not Path(path).is_file():
            raise SprintError(f"{path}: checkpoint not found")
    if data is not None:
        bundle = read_bundle(data)
        unpacked = unpack_bundle(bundle)
        clips = [c for c in unpacked.train if c.shape[1] >= crop and c.shape[2] >= crop]
        if not clips:
            raise SprintError(f"no clip of the bundle has frames of at least {crop}x{crop}")
        bank = FrameBank.from_clips(clips, runtime.device)
        sizes = [c.shape[0] for c in clips]
    else:
        bank = synthetic_bank(24, max(crop, 288), max(crop, 288) + 32, runtime.device)
        sizes = [bank.frames]
    rows, base = [], 0
    for n in sizes:
        rows += [(base + s, base + s + 1, base + s + 2) for s in range(n - 2)]
        base += n
    sampler = DeviceSampler(bank, torch.tensor(rows, device=runtime.device), batch, crop, seed=0)
    results = []
    for path in checkpoints:
        model = prepare_model(load_model(path), runtime.device, runtime.precision, channels_last=True).train()
        loss = SprintLoss(SPRINT_LOSSES[model.model_name])
        forward = _compiled(model, compile_mode) or model
        opt = torch.optim.Adamax(model.parameters(), lr=1e-5, foreach=True)

        def step(model: Any = model, loss: SprintLoss = loss, forward: Any = forward, opt: Any = opt) -> None:
            f0, f1, f2 = sampler.next()
            with runtime.autocast():
                total, _ = loss(forward(f0, f2), f1)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        if runtime.is_cuda:
            torch.cuda.reset_peak_memory_stats(runtime.device)
        for _ in range(warmup):
            step()
        if runtime.is_cuda:
            torch.cuda.synchronize(runtime.device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        if runtime.is_cuda:
            torch.cuda.synchronize(runtime.device)
        seconds = time.perf_counter() - t
        row = {
            "model": _label(model),
            "batch": batch,
            "crop": crop,
            "precision": runtime.precision,
            "steps": steps,
            "seconds": seconds,
            "steps_per_s": steps / seconds,
            "samples_per_s": steps * batch / seconds,
            "peak_gib": torch.cuda.max_memory_allocated(runtime.device) / GIB if runtime.is_cuda else None,
        }
        log(
            f"{row['model']}: {row['steps_per_s']:.2f} steps/s, {row['samples_per_s']:.0f} samples/s "
            f"(batch {batch}, {crop}x{crop}, {runtime.precision}, {steps} steps after {warmup})"
        )
        results.append(row)
        del model, opt
    return results
