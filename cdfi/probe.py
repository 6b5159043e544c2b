"""Probes for checking inference paths: a small seeded model whose outputs depend strongly on the input,
and the bundled example pair at any size.

PyTorch's default initialisation gives near-zero offsets and near-uniform kernels, so any two ways of
running such a model agree trivially. Kaiming-normal weights with zero biases keep the signal alive
through the U-Net: offsets of a few pixels, varied kernels and occlusion maps, and a wide effective
receptive field, which is what a tiling or precision check needs to be able to fail. Used by the tests
and by ``benchmarks/inference_check.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cdfi.io.paths import REPO_ROOT
from models import make_model


def lively_model(seed: int = 0, offset_scale: float = 2.0) -> nn.Module:
    """compressed AdaCoF F5/D1 with seeded Kaiming weights; offsets scaled by ``offset_scale``."""
    torch.manual_seed(seed)
    model = make_model("compressed_adacof", 5, 1)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            nn.init.zeros_(mod.bias)
    for head in ("Alpha1", "Beta1", "Alpha2", "Beta2"):
        getattr(model.get_kernel, f"module{head}")[7].weight.data *= offset_scale
    return model.eval()


def example_frames(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled example pair resized (area) to height x width."""
    frames = []
    for name in ("0.png", "1.png"):
        array = np.asarray(Image.open(REPO_ROOT / "examples" / name).convert("RGB"), dtype=np.float32) / 255.0
        t = torch.from_numpy(array).permute(2, 0, 1)[None]
        frames.append(F.interpolate(t, size=(height, width), mode="area")[0])
    return frames[0], frames[1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [0, 1]."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))
