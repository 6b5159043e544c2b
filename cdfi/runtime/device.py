"""Device selection shared by every command: ``--device auto|cpu|cuda|cuda:N`` and the published
``--gpu_id N`` ("cuda:N when there is one, else the CPU with one line saying so")."""

from __future__ import annotations

import os
import sys

import torch


class DeviceError(ValueError):
    """A device that cannot be used here (one-line message)."""


def _check_cuda(dev: torch.device, asked: str) -> torch.device:
    if not torch.cuda.is_available():
        raise DeviceError(f"{asked}: no CUDA GPU is available; use --device cpu")
    count = torch.cuda.device_count()
    if dev.index is not None and not 0 <= dev.index < count:
        raise DeviceError(f"{asked}: no such GPU ({count} CUDA GPU(s) visible: use 0 to {count - 1}, or --device cpu)")
    return dev


def resolve_device(
    device: str | torch.device | None = "auto",
    gpu_id: int | None = None,
    *,
    local_rank: int | None = None,
    announce: bool = True,
) -> torch.device:
    """The device to run on.

    * ``device`` ``None``/``"auto"``: CUDA when available, else the CPU. ``"cpu"``, ``"cuda"`` and
      ``"cuda:N"`` are taken as asked (a CUDA device that does not exist is a ``DeviceError``).
    * ``gpu_id`` (the published flag), when ``device`` is auto: ``cuda:<gpu_id>`` when CUDA is available,
      else the CPU with one line on stderr (``announce``) saying so, as the published scripts are
      run everywhere with ``--gpu_id 0``. With ``device`` ``"cuda"`` it picks the GPU (which must exist);
      with ``"cpu"`` or ``"cuda:N"`` the device wins.
    * ``local_rank`` (under ``torchrun``): each process takes the GPU of its local rank.
    """
    if isinstance(device, torch.device):
        device = str(device)
    choice = "auto" if device is None else str(device).strip().lower()
    if gpu_id is not None and gpu_id < 0:
        raise DeviceError(f"--gpu_id {gpu_id}: must be 0 or more")
    if choice == "auto":
        if not torch.cuda.is_available():
            if gpu_id is not None and announce:
                print(f"note: --gpu_id {gpu_id}: no CUDA GPU available; running on the CPU", file=sys.stderr)
            return torch.device("cpu")
        if local_rank is not None:
            choice = f"cuda:{local_rank % torch.cuda.device_count()}"
        elif gpu_id is not None:
            choice = f"cuda:{gpu_id}"
        else:
            choice = "cuda"
    elif choice == "cuda" and gpu_id is not None:
        choice = f"cuda:{gpu_id}"
    try:
        dev = torch.device(choice)
    except (RuntimeError, TypeError):
        raise DeviceError(f"--device {device}: unknown device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceError(f"--device {device}: device type {dev.type!r} is not supported; use cpu or cuda")
    if dev.index is None and local_rank is not None and torch.cuda.is_available():
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return _check_cuda(dev, f"--device {device}" if gpu_id is None else f"--gpu_id {gpu_id}")


def set_threads(threads: int | None) -> int:
    """Use ``threads`` intra-op threads (``None``: leave torch's default); returns the count in use."""
    if threads is not None:
        if threads < 1:
            raise DeviceError(f"--threads {threads}: must be at least 1")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def local_rank_from_env() -> int | None:
    """``LOCAL_RANK`` when started by ``torchrun``, else ``None``."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None
