"""LPIPS v0.1 (Zhang et al., CVPR 2018) with SqueezeNet, AlexNet and VGG16 backbones.

Distance = sum over tap layers of the spatial mean of a learned, non-negative 1x1 weighting of the
squared difference of channel-normalised activations. The learned weights ("lin" layers) are read
from the files shipped inside the PyPI package ``lpips``; the backbone's ImageNet weights from a local
file (see ``backbones``). Two input conventions:

- ``"published"`` (default): [0, 1] images go straight into the [-1, 1]-designed input scaling, as the
  published CDFI evaluation did; needed to compare with the paper's LPIPS numbers.
- ``"standard"``: [0, 1] images are mapped to [-1, 1] first, as LPIPS was designed.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

import torch
from torch import nn

from .backbones import BACKBONES, BackboneError, FeatureTaps, cached_weights_path, load_backbone

__all__ = ["CONVENTIONS", "LPIPS", "LinearWeightsError", "build_lpips", "lin_weights_path"]

CONVENTIONS = ("published", "standard")
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


class LinearWeightsError(ValueError):
    """Raised when the LPIPS linear-layer weights cannot be found or do not fit the backbone."""


def lin_weights_path(net: str) -> Path:
    """Path of the v0.1 linear-layer weights for ``net`` inside the installed ``lpips`` package."""
    try:
        root = importlib.resources.files("lpips")
    except ModuleNotFoundError as exc:
        raise LinearWeightsError("the PyPI package 'lpips' (LPIPS linear-layer weights) is not installed") from exc
    return Path(str(root / "weights" / "v0.1" / f"{net}.pth"))


def _load_lin_weights(net: str, path: Path) -> list[torch.Tensor]:
    """Read the per-layer (1, C, 1, 1) weights, in tap order, and check them against the backbone."""
    channels = BACKBONES[net].channels
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise LinearWeightsError(f"{path}: LPIPS linear-layer weights not found") from exc
    except Exception as exc:
        raise LinearWeightsError(f"{path}: cannot read LPIPS linear-layer weights ({type(exc).__name__})") from exc
    weights = []
    for index, width in enumerate(channels):
        key = f"lin{index}.model.1.weight"
        tensor = state.get(key) if isinstance(state, dict) else None
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (1, width, 1, 1):
            raise LinearWeightsError(f"{path}: no {key} of shape (1, {width}, 1, 1) for the {net} backbone")
        weights.append(tensor.float())
    return weights


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between image batches in [0, 1]; returns one value per image (N,)."""

    def __init__(
        self, backbone: FeatureTaps, net: str, lin_weights: list[torch.Tensor], convention: str = "published"
    ) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown LPIPS convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
        self.net = net
        self.convention = convention
        self.backbone = backbone
        self.lins = nn.ModuleList()
        for weight in lin_weights:
            conv = nn.Conv2d(weight.shape[1], 1, kernel_size=1, bias=False)
            conv.weight.data.copy_(weight)
            self.lins.append(conv)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised backbone activations of a [0, 1] batch."""
        if self.convention == "standard":
            x = x * 2 - 1
        feats = self.backbone((x - self.shift) / self.scale)
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS) for f in feats]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance between ``x`` and ``y``, both (N, 3, H, W) in [0, 1]; shape (N,)."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (N, 3, H, W) batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self._features(x), self._features(y), self.lins, strict=True):
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


def build_lpips(
    net: str = "squeeze", backbone_path: str | Path | None = None, convention: str = "published"
) -> LPIPS | None:
    """Build LPIPS v0.1, or return ``None`` (LPIPS "n/a") when weights are not available.

    An explicit ``backbone_path`` must be a valid weight file (``BackboneError`` otherwise). Without
    one, torchvision's download cache is tried; if the weights are not there (nothing is downloaded)
    or the ``lpips`` package is missing, one warning line goes to stderr and ``None`` is returned.
    """
    if net not in BACKBONES:
        raise BackboneError(f"unknown LPIPS backbone {net!r}; choose one of {', '.join(BACKBONES)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown LPIPS convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    try:
        lin_weights = _load_lin_weights(net, lin_weights_path(net))
    except LinearWeightsError as exc:
        if backbone_path is not None:
            raise
        _warn(f"LPIPS n/a: {exc}")
        return None
    if backbone_path is None:
        cached = cached_weights_path(net)
        if not cached.is_file():
            _warn(
                f"LPIPS n/a: no ImageNet weights for the {net} backbone (pass --lpips_backbone PATH "
                f"or place {cached.name} in {cached.parent})"
            )
            return None
        backbone_path = cached
    return LPIPS(load_backbone(net, backbone_path), net, lin_weights, convention)


def _warn(message: str) -> None:
    """Print one warning line to stderr (not via ``warnings``, which may be filtered or repeated)."""
    print(f"warning: {message}", file=sys.stderr)
