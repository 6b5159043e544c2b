"""The one place that reads and writes model checkpoints.

Published checkpoints are ``{'epoch': int, 'state_dict': OrderedDict}``. Ours add metadata keys that
published code ignores: ``model``, ``kernel_size``, ``dilation``, ``sampling`` and, for widths that
are not published, ``arch``. A bare state dict is accepted too. Loading is always ``strict=True``; a
checkpoint of another variant gives a one-line error naming both variants.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdfi.fileio import atomic_path
from models import DEFAULT_SIZES, PUBLISHED_VARIANTS, WarpingModel, make_model, variant_name
from models.arch import published_arch

# Published checkpoints carry no metadata; their dilation follows from the kernel size.
PUBLISHED_DILATION = {5: 1, 11: 2}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights plus whatever metadata it carries."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    epoch: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_published_format(self) -> bool:
        """True when the file has no metadata of ours (made by the published code)."""
        return "model" not in self.meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint file in the published format, ours, or as a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt files
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {k: v for k, v in obj.items() if k not in ("state_dict", "epoch")}
        epoch = obj.get("epoch")
        return Checkpoint(path, dict(obj["state_dict"]), int(epoch) if epoch is not None else None, meta)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Checkpoint(path, dict(obj))
    raise CheckpointError(f"{path}: holds no state_dict (expected {{'epoch', 'state_dict'}} or a bare state dict)")


def describe_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[str, int | None]:
    """Best guess of (family, kernel size) from the weights alone."""
    if any(k.startswith("context_synthesis.") for k in state_dict):
        family = "cdfi_adacof"
    else:
        first = state_dict.get("get_kernel.moduleConv1.0.weight")
        if first is None:
            return "unknown", None
        full = published_arch("adacof", 5, 1)["encoder"][0][0]
        family = "adacof" if first.shape[0] == full else "compressed_adacof"
    head = state_dict.get("get_kernel.moduleWeight1.7.weight")
    taps = head.shape[0] if head is not None else None
    kernel_size = math.isqrt(taps) if taps and math.isqrt(taps) ** 2 == taps else None
    return family, kernel_size


def checkpoint_variant(ckpt: Checkpoint) -> tuple[str, int, int]:
    """(model, kernel size, dilation) of a checkpoint, from metadata or, for published files, weights."""
    if not ckpt.is_published_format:
        m = ckpt.meta
        return str(m["model"]), int(m["kernel_size"]), int(m["dilation"])
    family, k = describe_state_dict(ckpt.state_dict)
    if family == "unknown" or k is None:
        raise CheckpointError(f"{ckpt.path}: the weights match no CDFI/AdaCoF variant")
    d = PUBLISHED_DILATION.get(k)
    if d is None:
        raise CheckpointError(f"{ckpt.path}: kernel size {k} has no published dilation; pass --dilation")
    return family, k, d


def _label(name: str, k: int | None, d: int | None) -> str:
    return f"{name} F{k}/D{d}" if k is not None else name


def load_weights(model: nn.Module, ckpt: Checkpoint) -> None:
    """``load_state_dict(strict=True)``, with a one-line error when the variant is not the model's."""
    expected = model.state_dict()
    got = ckpt.state_dict
    same = expected.keys() == got.keys() and all(expected[k].shape == got[k].shape for k in expected)
    if not same:
        name = getattr(model, "model_name", type(model).__name__)
        want = _label(name, getattr(model, "kernel_size", None), getattr(model, "dilation", None))
        if ckpt.is_published_format:
            fam, k = describe_state_dict(got)
            have = _label(fam, k, PUBLISHED_DILATION.get(k) if k else None)
        else:
            have = _label(ckpt.meta["model"], ckpt.meta.get("kernel_size"), ckpt.meta.get("dilation"))
            if "arch" in ckpt.meta:
                have += " (custom widths)"
        raise CheckpointError(f"{ckpt.path}: checkpoint holds {have} weights, but the model is {want}")
    model.load_state_dict(got, strict=True)


def load_model(
    path: str | Path,
    name: str | None = None,
    kernel_size: int | None = None,
    dilation: int | None = None,
    sampling: str | None = None,
    map_location: str | torch.device = "cpu",
) -> WarpingModel:
    """Build the checkpoint's variant and load its weights (eval mode).

    Any of ``name``/``kernel_size``/``dilation`` that is given must agree with the checkpoint.
    ``sampling`` defaults to the rule the checkpoint was trained with (published files: ``trunc``).
    """
    ckpt = load_checkpoint(path, map_location)
    have = checkpoint_variant(ckpt)
    family = name or have[0]
    sizes = have[1:] if family == have[0] else DEFAULT_SIZES[family]
    want = (family, kernel_size or sizes[0], dilation or sizes[1])
    if want != have:
        raise CheckpointError(
            f"{ckpt.path}: checkpoint holds {_label(*have)} weights, but {_label(*want)} was asked for"
        )
    trained_with = str(ckpt.meta.get("sampling", "trunc"))
    if sampling is None:
        sampling = trained_with
    elif sampling != trained_with:
        warnings.warn(
            f"{ckpt.path} was trained with sampling={trained_with!r}; using {sampling!r} changes its results"
            + (" (they will differ from the paper)" if ckpt.is_published_format else ""),
            stacklevel=2,
        )
    model = make_model(have[0], have[1], have[2], arch=ckpt.meta.get("arch"), sampling=sampling)
    load_weights(model, ckpt)
    return model.eval()


def average_weights(paths: list[str | Path]) -> WarpingModel:
    """A model whose floating-point weights are the mean of those in ``paths`` (a "model soup").

    Every file must hold the same variant (family, kernel size, dilation, widths) trained with the same
    sampling rule: averaging is meant for checkpoints of one run or of runs from one starting point.
    """
    if len(paths) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    first = load_model(paths[0])
    identity = (checkpoint_metadata(first), first.sampling)
    total = {k: v.double() if v.is_floating_point() else v for k, v in first.state_dict().items()}
    for path in paths[1:]:
        other = load_model(path)
        if (checkpoint_metadata(other), other.sampling) != identity:
            raise CheckpointError(
                f"{path}: holds {variant_name(other.model_name, other.kernel_size, other.dilation)} "
                f"(sampling={other.sampling!r}) but {paths[0]} holds "
                f"{variant_name(first.model_name, first.kernel_size, first.dilation)} (sampling={first.sampling!r}); "
                "only checkpoints of one variant and sampling rule can be averaged"
            )
        for key, value in other.state_dict().items():
            if value.is_floating_point():
                total[key] += value.double()
    first.load_state_dict(
        {k: (v / len(paths)).to(first.state_dict()[k].dtype) if v.is_floating_point() else v for k, v in total.items()}
    )
    return first


def checkpoint_metadata(model: WarpingModel) -> dict[str, Any]:
    """Metadata that identifies a model's variant; ``arch`` only when its widths are not published."""
    meta: dict[str, Any] = {
        "model": model.model_name,
        "kernel_size": model.kernel_size,
        "dilation": model.dilation,
        "sampling": model.sampling,
    }
    published = (model.kernel_size, model.dilation) in PUBLISHED_VARIANTS[model.model_name]
    if not published or model.arch != published_arch(model.model_name, model.kernel_size, model.dilation):
        meta["arch"] = model.arch
    return meta


def save_checkpoint(
    path: str | Path,
    model: WarpingModel,
    epoch: int,
    extra: dict[str, Any] | None = None,
    force: bool = True,
) -> Path:
    """Save in the published format plus our metadata, atomically."""
    payload: dict[str, Any] = {"epoch": int(epoch), "state_dict": model.state_dict()}
    payload.update(checkpoint_metadata(model))
    payload.update(extra or {})
    with atomic_path(path, force) as tmp:
        torch.save(payload, tmp)
    return Path(path)


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "average_weights",
    "checkpoint_metadata",
    "checkpoint_variant",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_checkpoint",
    "variant_name",
]
