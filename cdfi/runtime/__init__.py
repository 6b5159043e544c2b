"""Where and how a model runs: device, precision and thread count, resolved once for every command.

Every script adds the same flags with ``add_runtime_arguments`` and turns them into one typed
``Runtime`` with ``resolve_runtime``; the ``Interpolator``, the evaluation, the trainer and the pruner
take that value rather than loose strings.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from cdfi.runtime.device import DeviceError, local_rank_from_env, resolve_device, set_threads
from cdfi.runtime.precision import PRECISIONS, PrecisionError, autocast, resolve_precision

PRECISION_CHOICES = ("auto", *PRECISIONS)
PRECISION_HELP = (
    "numeric precision of the convolutions: fp32; bf16 on CPUs with native bf16 (AVX512-BF16/AMX) and on "
    "GPUs of compute capability 8.0+; fp16 on GPUs only; auto = bf16 on CPUs with native bf16, else fp32"
)


@dataclass(frozen=True)
class Runtime:
    """A resolved device, precision (``fp32``/``bf16``/``fp16``, never ``auto``) and thread count."""

    device: torch.device
    precision: str = "fp32"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PrecisionError(f"unresolved precision {self.precision!r}; use resolve_runtime")

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """``torch.autocast`` for this runtime's precision (a real fp32 region for fp32)."""
        with autocast(self.device, self.precision):
            yield

    def describe(self) -> str:
        """``cpu, bf16, 2 threads`` / ``cuda:0, fp32``: for the one line each command prints."""
        parts = [str(self.device), self.precision]
        if self.device.type == "cpu":
            threads = torch.get_num_threads()
            parts.append(f"{threads} thread{'s' * (threads != 1)}")
        return ", ".join(parts)


def add_runtime_arguments(
    parser: argparse.ArgumentParser,
    *,
    precision_default: str = "auto",
    gpu_id_default: int | None = None,
    group: argparse._ArgumentGroup | None = None,
) -> argparse._ArgumentGroup:
    """Add ``--device``, ``--gpu_id``, ``--precision`` and ``--threads`` (same choices and help in every
    script; only the precision default differs: the evaluation keeps fp32 to compare with the paper)."""
    g = group or parser.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")
    g.add_argument(
        "--gpu_id",
        type=int,
        default=gpu_id_default,
        help="published flag: GPU N when there is one, else the CPU with a one-line note "
        "(unset: GPU 0 when there is one, the published default)",
    )
    g.add_argument(
        "--precision",
        default=precision_default,
        choices=PRECISION_CHOICES,
        help=f"{PRECISION_HELP} (default: {precision_default})",
    )
    g.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")
    return g


def resolve_runtime(
    args: argparse.Namespace | None = None,
    *,
    device: str | torch.device | None = None,
    gpu_id: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    distributed: bool = False,
    announce: bool = True,
) -> Runtime:
    """Resolve the runtime flags once (from ``args`` or the keywords): device first, then the precision
    that device supports, then threads. Raises ``DeviceError``/``PrecisionError`` (one line each)."""
    if args is not None:
        device = getattr(args, "device", device)
        gpu_id = getattr(args, "gpu_id", gpu_id)
        precision = getattr(args, "precision", precision)
        threads = getattr(args, "threads", threads)
    local_rank = local_rank_from_env() if distributed else None
    dev = resolve_device(device, gpu_id, local_rank=local_rank, announce=announce)
    if dev.type == "cuda":
        torch.cuda.set_device(dev.index if dev.index is not None else torch.cuda.current_device())
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    resolved = resolve_precision(precision, dev)
    set_threads(threads)
    return Runtime(dev, resolved, threads)


__all__ = [
    "PRECISION_CHOICES",
    "DeviceError",
    "PrecisionError",
    "Runtime",
    "add_runtime_arguments",
    "resolve_device",
    "resolve_runtime",
]
