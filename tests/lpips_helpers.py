"""Test helper: the ``lpips`` package model with a seeded random backbone, and that backbone saved
in torchvision's state-dict format so ``lpips_pytorch`` can load identical weights."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch


def reference_lpips(net: str, seed: int = 1234) -> torch.nn.Module:
    """``lpips.LPIPS`` with random backbone weights (seeded) and its shipped linear layers."""
    import lpips

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # the package still builds its backbone with torchvision's old `pretrained=`
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()


def save_backbone_as_torchvision(reference: torch.nn.Module, path: Path) -> Path:
    """Write the reference backbone as ``features.<index>...`` keys, as torchvision names them."""
    state = {}
    for key, value in reference.net.state_dict().items():
        match = re.fullmatch(r"slice\d+\.(.+)", key)
        if match is None:
            raise AssertionError(f"unexpected key in the lpips backbone: {key}")
        state[f"features.{match.group(1)}"] = value.clone()
    torch.save(state, path)
    return path
