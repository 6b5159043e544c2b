"""LPIPS v0.1 perceptual distance (SqueezeNet as published by CDFI, AlexNet, VGG16)."""

from .backbones import BACKBONES, BackboneError, cached_weights_path, load_backbone
from .model import CONVENTIONS, LPIPS, LinearWeightsError, build_lpips, lin_weights_path

__all__ = [
    "BACKBONES",
    "CONVENTIONS",
    "LPIPS",
    "BackboneError",
    "LinearWeightsError",
    "build_lpips",
    "cached_weights_path",
    "lin_weights_path",
    "load_backbone",
]
