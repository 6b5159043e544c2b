"""ImageNet feature extractors used by LPIPS v0.1, built from torchvision's architectures.

Each backbone is torchvision's ``features`` stack; LPIPS reads the activations right after fixed
layers of it (the tap points below are the published LPIPS v0.1 definition). ImageNet weights are
never downloaded here: they come from a local file or from torchvision's download cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

__all__ = ["BACKBONES", "BackboneError", "BackboneSpec", "FeatureTaps", "cached_weights_path", "load_backbone"]


class BackboneError(ValueError):
    """Raised when a backbone weight file is missing, unreadable or belongs to another network."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one LPIPS backbone: torchvision constructor, tap points, channel widths."""

    name: str
    build: Callable[[], nn.Module]
    taps: tuple[int, ...]
    channels: tuple[int, ...]
    weights_enum: str


BACKBONES: dict[str, BackboneSpec] = {
    "squeeze": BackboneSpec(
        "squeeze",
        lambda: tv_models.squeezenet1_1(weights=None),
        (1, 4, 7, 9, 10, 11, 12),
        (64, 128, 256, 384, 384, 512, 512),
        "SqueezeNet1_1_Weights.IMAGENET1K_V1",
    ),
    "alex": BackboneSpec(
        "alex",
        lambda: tv_models.alexnet(weights=None),
        (1, 4, 7, 9, 11),
        (64, 192, 384, 256, 256),
        "AlexNet_Weights.IMAGENET1K_V1",
    ),
    "vgg": BackboneSpec(
        "vgg",
        lambda: tv_models.vgg16(weights=None),
        (3, 8, 15, 22, 29),
        (64, 128, 256, 512, 512),
        "VGG16_Weights.IMAGENET1K_V1",
    ),
}


class FeatureTaps(nn.Module):
    """Runs a ``features`` stack and returns the activations after each tap layer."""

    def __init__(self, features: nn.Sequential, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.features = features[: taps[-1] + 1]
        self.taps = frozenset(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the tapped activations, shallowest first."""
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


def cached_weights_path(net: str) -> Path:
    """Where torchvision's download cache keeps the ImageNet weights of ``net`` (may not exist)."""
    url = tv_models.get_weight(BACKBONES[net].weights_enum).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _features_state(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """Extract the ``features`` part of a torchvision state dict (full model or features only)."""
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise BackboneError(f"{path}: not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    if any(k.startswith("features.") for k in state):
        return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    return state


def load_backbone(net: str, path: str | Path) -> FeatureTaps:
    """Build the ``net`` backbone and load its ImageNet weights from ``path``.

    ``path`` holds a torchvision state dict of the whole classifier (as torchvision caches it) or of
    its ``features`` stack alone. Raises ``BackboneError`` with one line naming the file otherwise.
    """
    if net not in BACKBONES:
        raise BackboneError(f"unknown LPIPS backbone {net!r}; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[net]
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: LPIPS {net} backbone weight file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: cannot read LPIPS backbone weights ({type(exc).__name__})") from exc
    with torch.device("meta"):
        features = spec.build().features
    features = features.to_empty(device="cpu")
    state = _features_state(raw, path)
    expected = features.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise BackboneError(f"{path}: not a {net} backbone (missing {len(missing)} keys, e.g. {missing[0]})")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise BackboneError(
                f"{path}: not a {net} backbone ({key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)})"
            )
    features.load_state_dict({k: state[k] for k in expected})
    return FeatureTaps(features, spec.taps)
