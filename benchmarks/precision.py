"""End-to-end CPU speed of every family in fp32 and bf16 (with and without channels_last), in one run.

Inference: one 640x480 forward pass per configuration, end to end and with the AdaCoF warp replaced by
a zero-cost stand-in (a view of the padded input: the "conv-only floor"); the warp share is
(end-to-end - floor) / end-to-end. Training: samples per second of a full step (forward, Charbonnier +
0.01 g_Spatial loss, backward, Adamax step) on random 256x256 crops, batch 4. All configurations are
timed interleaved, repeated, and the minimum is kept, so ratios within one run are fair even on a busy
machine. Models have seeded random weights (speed does not depend on the weights).

    python benchmarks/precision.py                       # everything (several minutes on 2 cores)
    python benchmarks/precision.py --models compressed_adacof --skip-train
    python benchmarks/precision.py --compile             # also try torch.compile on bf16 + channels_last
    python benchmarks/precision.py --allocator-ab        # also time with glibc's default allocator
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.runtime.precision import (
    autocast,
    compile_model,
    prepare_model,
    resolve_precision,
    to_memory_format,
    tune_cpu_allocator,
)
from models import list_models, make_model
from models.adacof import WarpingModel

LABELS = {"cdfi_adacof": "CDFI F11/D2", "compressed_adacof": "compressed AdaCoF F5/D1", "adacof": "AdaCoF F5/D1"}


@dataclass(frozen=True)
class Config:
    """One way of running a model."""

    precision: str
    channels_last: bool
    compiled: bool = False

    @property
    def label(self) -> str:
        text = self.precision + (" +CL" if self.channels_last else "")
        return text + (" +compile" if self.compiled else "")


Tensor = torch.Tensor


def _stand_in_eval(self: WarpingModel, x: Tensor, w: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Zero-cost warp: the centre of the padded input, a view."""
    p = self.kernel_pad
    return x[..., p : p + w.shape[-2], p : p + w.shape[-1]]


def _stand_in_train(self: WarpingModel, x: Tensor, w: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Near-zero-cost warp that still sends gradients to the kernel heads (one tap's worth of work)."""
    return _stand_in_eval(self, x, w, a, b) * (w[:, :1] + a[:, :1] + b[:, :1]).float()


@contextlib.contextmanager
def warp_replaced(stand_in: Callable | None) -> Iterator[None]:
    """Temporarily replace ``WarpingModel.warp`` and ``warp_many`` (every family's warps) by ``stand_in``
    applied per tensor; None = real warp."""
    if stand_in is None:
        yield
        return
    original, original_many = WarpingModel.warp, WarpingModel.warp_many

    def many(self: WarpingModel, tensors: list[Tensor], w: Tensor, a: Tensor, b: Tensor) -> list[Tensor]:
        return [stand_in(self, t, w, a, b) for t in tensors]

    WarpingModel.warp, WarpingModel.warp_many = stand_in, many
    try:
        yield
    finally:
        WarpingModel.warp, WarpingModel.warp_many = original, original_many


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter
_threads = 1


def _timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes: wall time, or (``--clock cpu``) process CPU time over the thread count,
    which other processes on a busy machine inflate much less."""
    start = _clock()
    fn()
    return (_clock() - start) / _threads


def _size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480) (argparse type; both sides at least 17 px)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if min(w, h) < 17:
        raise argparse.ArgumentTypeError(f"size {text!r}: both sides need at least 17 px")
    return w, h


class InferenceCase:
    """One family at one frame size; a model per configuration (channels_last differs)."""

    def __init__(self, name: str, width: int, height: int, configs: list[Config]) -> None:
        torch.manual_seed(0)
        base = make_model(name).eval()
        self.frames = (torch.rand(1, 3, height, width), torch.rand(1, 3, height, width))
        self.runners: dict[Config, Callable[[], object]] = {}
        for cfg in configs:
            model = make_model(name).eval()
            model.load_state_dict(base.state_dict())
            prepare_model(model, "cpu", cfg.precision, channels_last=cfg.channels_last)
            fwd = compile_model(model) if cfg.compiled else model
            frames = tuple(to_memory_format(f, cfg.channels_last) for f in self.frames)
            self.runners[cfg] = self._runner(fwd, cfg.precision, frames)

    @staticmethod
    def _runner(model: Callable, precision: str, frames: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), autocast("cpu", precision):
                return model(*frames)

        return run

    def time(self, cfg: Config, floor: bool) -> float:
        with warp_replaced(_stand_in_eval if floor else None):
            return _timed(self.runners[cfg])


class TrainingCase:
    """One family, random crops, a full optimisation step per call."""

    def __init__(self, name: str, crop: int, batch: int, configs: list[Config]) -> None:
        torch.manual_seed(0)
        base = make_model(name)
        f0 = torch.rand(batch, 3, crop, crop)
        self.batch = (f0, (f0 + 0.1 * torch.rand_like(f0)).clamp(0, 1), torch.rand_like(f0))
        self.steps: dict[Config, Callable[[], object]] = {}
        for cfg in configs:
            model = make_model(name).train()
            model.load_state_dict(base.state_dict())
            prepare_model(model, "cpu", cfg.precision, channels_last=cfg.channels_last)
            fwd = compile_model(model, inference=False) if cfg.compiled else model
            opt = torch.optim.Adamax(model.parameters(), lr=1e-4)
            batch = tuple(to_memory_format(t, cfg.channels_last) for t in self.batch)
            self.steps[cfg] = self._step(fwd, opt, cfg.precision, batch)

    @staticmethod
    def _step(
        model: Callable, opt: torch.optim.Optimizer, precision: str, batch: tuple[torch.Tensor, ...]
    ) -> Callable[[], object]:
        f0, f2, gt = batch

        def step() -> object:
            opt.zero_grad(set_to_none=True)
            with autocast("cpu", precision):
                out = model(f0, f2)
                loss = torch.sqrt((out["frame1"].float() - gt) ** 2 + 1e-6).mean() + 0.01 * out["g_Spatial"]
            loss.backward()
            opt.step()
            return loss

        return step

    def time(self, cfg: Config, floor: bool) -> float:
        with warp_replaced(_stand_in_train if floor else None):
            return _timed(self.steps[cfg])


def measure(case: InferenceCase | TrainingCase, configs: list[Config], repeats: int, floor: bool) -> dict:
    """Warm up every configuration once, then time them interleaved ``repeats`` times; keep the minimum."""

    def kinds(cfg: Config) -> tuple[bool, ...]:
        # A compiled model would recompile for the stand-in warp; its floor is not measured.
        return (False, True) if floor and not cfg.compiled else (False,)

    for cfg in configs:
        for kind in kinds(cfg):
            case.time(cfg, kind)
    best: dict[tuple[Config, bool], float] = {}
    for _ in range(repeats):
        for cfg in configs:
            for kind in kinds(cfg):
                t = case.time(cfg, kind)
                best[cfg, kind] = min(best.get((cfg, kind), float("inf")), t)
    return best


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    """Print the inference and training tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["cdfi_adacof", "compressed_adacof", "adacof"], choices=list_models()
    )
    parser.add_argument("--size", type=_size, default=(640, 480), help="inference frame size WxH (640x480)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved inference runs; the minimum is kept (3)")
    parser.add_argument("--crop", type=int, default=256, help="training crop size (256)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size (4)")
    parser.add_argument(
        "--train-repeats", type=int, default=2, help="interleaved training runs; the minimum is kept (2)"
    )
    parser.add_argument("--skip-inference", action="store_true", help="only the training table")
    parser.add_argument("--skip-train", action="store_true", help="only the inference table")
    parser.add_argument("--train-floor", action="store_true", help="also time training with the stand-in warp")
    parser.add_argument("--all-configs", action="store_true", help="also time bf16 without channels_last")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of bf16 + channels_last")
    parser.add_argument(
        "--allocator-ab",
        action="store_true",
        help="first time bf16 +CL inference with glibc's default allocator settings",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or process CPU time divided by the thread count (steadier when others share the CPU)",
    )
    args = parser.parse_args(argv)
    for option in ("repeats", "train_repeats", "batch"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.crop < 17:
        parser.error(f"--crop must be at least 17 px, got {args.crop}")
    global _clock, _threads
    _clock = CLOCKS[args.clock]
    _threads = torch.get_num_threads() if args.clock == "cpu" else 1
    if resolve_precision("bf16", "cpu") != "bf16":
        print("this CPU has no native bf16; the bf16 figures below are fp32", file=sys.stderr)

    configs = [Config("fp32", False), Config("fp32", True), Config("bf16", True)]
    if args.all_configs:
        configs.insert(2, Config("bf16", False))
    if args.compile:
        configs.append(Config("bf16", True, compiled=True))
    train_configs = [Config("fp32", False), Config("bf16", True)]
    if args.all_configs:
        train_configs.insert(1, Config("fp32", True))
    if args.compile:
        train_configs.append(Config("bf16", True, compiled=True))
    w, h = args.size
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; {args.clock} clock, minimum of {args.repeats} interleaved runs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    if args.allocator_ab and not args.skip_inference:
        bf = Config("bf16", True)
        print(f"\nAllocator A/B, {w}x{h} forward, bf16 +CL, end to end")
        print(_row(["model", "glibc default", "tuned", "ratio"]))
        print(_row(["---"] * 4))
        for name in args.models:
            tune_cpu_allocator(False)
            case = InferenceCase(name, w, h, [bf])
            default = measure(case, [bf], args.repeats, floor=False)[bf, False]
            tune_cpu_allocator(True)
            tuned = measure(case, [bf], args.repeats, floor=False)[bf, False]
            print(_row([LABELS[name], f"{default:.3f} s", f"{tuned:.3f} s", f"{default / tuned:.2f}x"]), flush=True)
            del case
    tune_cpu_allocator(True)

    if not args.skip_inference:
        print(f"\nInference, one {w}x{h} forward pass: end to end [conv-only floor, warp share]")
        print(_row(["model", *[c.label for c in configs], "bf16 +CL vs fp32"]))
        print(_row(["---"] * (len(configs) + 2)))
        for name in args.models:
            case = InferenceCase(name, w, h, configs)
            best = measure(case, configs, args.repeats, floor=True)
            cells = []
            for cfg in configs:
                e2e, floor = best[cfg, False], best.get((cfg, True))
                if floor is None:
                    cells.append(f"{e2e:.3f} s")
                else:
                    cells.append(f"{e2e:.3f} s [{floor:.3f} s, {max(e2e - floor, 0) / e2e:.0%}]")
            ratio = best[configs[0], False] / best[Config("bf16", True), False]
            print(_row([LABELS[name], *cells, f"{ratio:.2f}x"]), flush=True)
            del case

    if not args.skip_train:
        print(
            f"\nTraining, {args.crop}x{args.crop} crops, batch {args.batch}: samples/s"
            + (" [with stand-in warp]" if args.train_floor else "")
        )
        print(_row(["model", *[c.label for c in train_configs], "bf16 +CL vs fp32"]))
        print(_row(["---"] * (len(train_configs) + 2)))
        for name in args.models:
            case = TrainingCase(name, args.crop, args.batch, train_configs)
            best = measure(case, train_configs, args.train_repeats, floor=args.train_floor)
            cells = []
            for cfg in train_configs:
                text = f"{args.batch / best[cfg, False]:.2f}"
                if (cfg, True) in best:
                    text += f" [{args.batch / best[cfg, True]:.2f}]"
                cells.append(text)
            ratio = best[train_configs[0], False] / best[Config("bf16", True), False]
            print(_row([LABELS[name], *cells, f"{ratio:.2f}x"]), flush=True)
            del case
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
