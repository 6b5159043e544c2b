"""The one place that reads and writes model checkpoints.

Published checkpoints are ``{'epoch': int, 'state_dict': OrderedDict}``. Ours add metadata keys that
published code ignores: ``model``, ``kernel_size``, ``dilation``, ``sampling`` and, for widths that
are not published, ``arch``. A bare state dict is accepted too. Loading is always ``strict=True``; a
checkpoint of another variant gives a one-line error naming both variants.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdfi.io.atomic import atomic_path
from cdfi.io.paths import missing_checkpoint
from models import DEFAULT_SIZES, PUBLISHED_VARIANTS, WarpingModel, list_models, make_model, variant_name
from models.arch import published_arch

# Published checkpoints carry no metadata; their dilation follows from the kernel size.
PUBLISHED_DILATION = {5: 1, 11: 2}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model."""


class VariantMismatchError(CheckpointError):
    """A checkpoint of another variant than the one asked for; ``have`` is the checkpoint's
    (model, kernel size, dilation), so that a CLI can say which flag values would fit."""

    def __init__(self, message: str, have: tuple[str, int, int]) -> None:
        super().__init__(message)
        self.have = have


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


def _unreadable_reason(path: Path, exc: BaseException) -> str:
    """A short reason why ``torch.load`` failed, instead of PyTorch's multi-line advice."""
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    if isinstance(exc, OSError) and not isinstance(exc, pickle.UnpicklingError):
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if not head:
        return "empty file, not a PyTorch checkpoint"
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return f"holds a Python object ({unsafe.group(1)}) that safe loading (weights_only) refuses"
    if head == b"PK\x03\x04":  # torch.save's zip format
        detail = re.search(r"failed reading zip archive: ([^.]+)", text)
        return "damaged or truncated PyTorch checkpoint" + (f" ({detail.group(1)})" if detail else "")
    if isinstance(exc, EOFError):
        return "not a PyTorch checkpoint or truncated (unexpected end of file)"
    return "not a PyTorch checkpoint (unpickling failed)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint file in the published format, ours, or as a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(missing_checkpoint(path))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt files
        raise CheckpointError(f"{path}: {_unreadable_reason(path, exc)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {k: v for k, v in obj.items() if k not in ("state_dict", "epoch")}
        epoch = obj.get("epoch")
        try:
            epoch = int(epoch) if epoch is not None else None
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: its 'epoch' entry is {epoch!r}, not an integer") from None
        return Checkpoint(path, dict(obj["state_dict"]), epoch, meta)
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


def _meta_int(ckpt: Checkpoint, key: str) -> int | None:
    value = ckpt.meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
        raise CheckpointError(f"{ckpt.path}: metadata {key}={value!r} is not a positive integer")
    return int(value)


def checkpoint_variant(ckpt: Checkpoint, assume_dilation: int | None = None) -> tuple[str, int, int]:
    """(model, kernel size, dilation) of a checkpoint, from metadata or, for published files, weights.

    Metadata without ``kernel_size`` (or ``dilation``) is completed from the weights as for published
    files; ``load_weights`` then verifies every shape. The weights do not show the dilation: a file
    without metadata gets ``assume_dilation`` when given (AdaCoF-pytorch's F11 file is D1, its
    config.txt says so), else the published one of its kernel size.
    """
    family, inferred_k = describe_state_dict(ckpt.state_dict)
    if not ckpt.is_published_format:
        name = ckpt.meta["model"]
        if name not in list_models():
            raise CheckpointError(
                f"{ckpt.path}: metadata names unknown model {name!r}; known: {', '.join(list_models())}"
            )
        k = _meta_int(ckpt, "kernel_size") or inferred_k
        if k is None:
            raise CheckpointError(f"{ckpt.path}: metadata has no kernel_size and the weights do not show one")
        d = _meta_int(ckpt, "dilation") or PUBLISHED_DILATION.get(k)
        if d is None:
            raise CheckpointError(f"{ckpt.path}: metadata has no dilation and kernel size {k} has no published one")
        return str(name), k, d
    k = inferred_k
    if family == "unknown" or k is None:
        raise CheckpointError(f"{ckpt.path}: the weights match no CDFI/AdaCoF variant")
    d = assume_dilation or PUBLISHED_DILATION.get(k)
    if d is None:
        raise CheckpointError(f"{ckpt.path}: kernel size {k} has no published dilation; pass --dilation")
    return family, k, d


def requested_variant(
    ckpt: Checkpoint,
    name: str | None = None,
    kernel_size: int | None = None,
    dilation: int | None = None,
    assume_dilation: int | None = None,
) -> tuple[str, int, int]:
    """The checkpoint's variant, after checking that any of ``name``/``kernel_size``/``dilation`` given agree.

    A family given without sizes means that family's default sizes unless it is the checkpoint's own.
    Raises ``VariantMismatchError`` naming both variants when they disagree. ``assume_dilation``: see
    ``checkpoint_variant``.
    """
    have = checkpoint_variant(ckpt, assume_dilation)
    family = name or have[0]
    sizes = have[1:] if family == have[0] else DEFAULT_SIZES[family]
    want = (family, kernel_size or sizes[0], dilation or sizes[1])
    if want != have:
        raise VariantMismatchError(
            f"{ckpt.path}: checkpoint holds {_label(*have)} weights, but {_label(*want)} was asked for", have
        )
    return have


def _label(name: str, k: int | None, d: int | None) -> str:
    return f"{name} F{k}/D{d}" if k is not None else name


def _first_difference(expected: dict[str, torch.Tensor], got: dict[str, Any]) -> str | None:
    """The first missing key, unexpected key or shape mismatch between two state dicts (None: they fit)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    for kind, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            return f"{kind} key {keys[0]}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
    for key, want in expected.items():
        value = got[key]
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        if value.shape != want.shape:
            return f"{key} has shape {tuple(value.shape)} in the checkpoint but {tuple(want.shape)} in the model"
    return None


def load_weights(model: nn.Module, ckpt: Checkpoint) -> None:
    """``load_state_dict(strict=True)``, with a one-line error when the weights do not fit the model.

    When the checkpoint is of another variant the message names both; otherwise it names the first
    missing or unexpected key, or the first shape mismatch with both shapes.
    """
    expected = model.state_dict()
    got = ckpt.state_dict
    problem = _first_difference(expected, got)
    if problem is not None:
        name = getattr(model, "model_name", type(model).__name__)
        want = _label(name, getattr(model, "kernel_size", None), getattr(model, "dilation", None))
        if ckpt.is_published_format:
            fam, k = describe_state_dict(got)
            have = _label(fam, k, PUBLISHED_DILATION.get(k) if k else None)
        else:
            fam = str(ckpt.meta["model"])
            have = _label(fam, ckpt.meta.get("kernel_size"), ckpt.meta.get("dilation"))
        if fam != "unknown" and have != want:
            if "arch" in ckpt.meta:
                have += " (custom widths)"
            raise CheckpointError(f"{ckpt.path}: checkpoint holds {have} weights, but the model is {want}")
        raise CheckpointError(f"{ckpt.path}: weights do not fit {want}: {problem}")
    model.load_state_dict(got, strict=True)


def load_model(
    path: str | Path,
    name: str | None = None,
    kernel_size: int | None = None,
    dilation: int | None = None,
    sampling: str | None = None,
    map_location: str | torch.device = "cpu",
    assume_dilation: int | None = None,
) -> WarpingModel:
    """Build the checkpoint's variant and load its weights (eval mode).

    Any of ``name``/``kernel_size``/``dilation`` that is given must agree with the checkpoint.
    ``sampling`` defaults to the rule the checkpoint was trained with (published files: ``trunc``).
    ``assume_dilation`` is the dilation of a file without metadata, e.g. from AdaCoF-pytorch's
    config.txt (``cdfi.io.adacof_config.model_options_from_config``); without it such a file gets
    the published dilation of its kernel size.
    """
    ckpt = load_checkpoint(path, map_location)
    have = requested_variant(ckpt, name, kernel_size, dilation, assume_dilation)
    trained_with = str(ckpt.meta.get("sampling", "trunc"))
    if sampling is None:
        sampling = trained_with
    elif sampling != trained_with:
        warnings.warn(
            f"{ckpt.path} was trained with sampling={trained_with!r}; using {sampling!r} changes its results"
            + (" (they will differ from the paper)" if ckpt.is_published_format else ""),
            stacklevel=2,
        )
    try:
        model = make_model(have[0], have[1], have[2], arch=ckpt.meta.get("arch"), sampling=sampling)
    except (ValueError, TypeError, KeyError) as exc:
        what = "architecture spec" if "arch" in ckpt.meta else "metadata"
        raise CheckpointError(f"{ckpt.path}: its {what} cannot be built ({exc})") from None
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
    "VariantMismatchError",
    "average_weights",
    "checkpoint_metadata",
    "checkpoint_variant",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "requested_variant",
    "save_checkpoint",
    "variant_name",
]
