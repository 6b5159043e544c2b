"""Per-layer densities of a state dict: how many of each convolution's weights survived pruning.

A layer's density d is (nonzero weights) / (weights). CDFI reads it as "keep about sqrt(d) of the
input and of the output channels" (:func:`sqrt_rule`); the published report prints the plain integer
part ``int(sqrt(d) * c)`` (:func:`published_reduced`), which can be 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cdfi.compression.errors import CompressionError

__all__ = ["LayerDensity", "conv_densities", "model_density", "published_reduced", "sqrt_rule"]


@dataclass(frozen=True)
class LayerDensity:
    """Density of one convolution's weight and the channel counts the sqrt rule gives it."""

    name: str
    c_in: int
    c_out: int
    nonzero: int
    total: int

    @property
    def density(self) -> float:
        return self.nonzero / self.total if self.total else 1.0

    @property
    def reduced_in(self) -> int:
        return sqrt_rule(self.density, self.c_in)

    @property
    def reduced_out(self) -> int:
        return sqrt_rule(self.density, self.c_out)


def sqrt_rule(density: float, channels: int) -> int:
    """Integer part of sqrt(density) * channels (at least 1): CDFI's reduced channel count."""
    if not 0.0 <= density <= 1.0:
        raise CompressionError(f"density must lie in [0, 1], got {density}")
    return max(1, math.floor(math.sqrt(density) * channels + 1e-9))


def _is_conv_weight(key: str, value: Any) -> bool:
    return key.endswith(".weight") and isinstance(value, torch.Tensor) and value.dim() >= 3


def conv_densities(state_dict: Mapping[str, torch.Tensor], threshold: float = 0.0) -> list[LayerDensity]:
    """Per convolution (every weight of 3+ dims, in state-dict order): counts of |w| > threshold."""
    if threshold < 0:
        raise CompressionError(f"threshold must be >= 0, got {threshold}")
    layers = []
    for key, value in state_dict.items():
        if not _is_conv_weight(key, value):
            continue
        nonzero = int((value.detach().abs() > threshold).sum())
        layers.append(
            LayerDensity(key[: -len(".weight")], int(value.shape[1]), int(value.shape[0]), nonzero, value.numel())
        )
    if not layers:
        raise CompressionError("the state dict holds no convolution weights")
    return layers


def model_density(params: nn.Module | Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> float:
    """Fraction of nonzero entries over all parameters (a module, a state dict or tensors)."""
    if isinstance(params, nn.Module):
        tensors: Iterable[torch.Tensor] = params.parameters()
    elif isinstance(params, Mapping):
        tensors = params.values()
    else:
        tensors = params
    nonzero = total = 0
    for t in tensors:
        if t.is_floating_point():
            nonzero += int(torch.count_nonzero(t.detach()))
            total += t.numel()
    if total == 0:
        raise CompressionError("no floating-point parameters to measure")
    return nonzero / total


def published_reduced(density: float, channels: int) -> int:
    """``int(sqrt(density) * channels)``: the ``In'``/``Out'`` of the published sparsity report (may be 0)."""
    if not 0.0 <= density <= 1.0:
        raise CompressionError(f"density must lie in [0, 1], got {density}")
    return int(math.sqrt(density) * channels)
