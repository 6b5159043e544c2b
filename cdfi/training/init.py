"""Weight initialisation of a fresh start: the published one (PyTorch's default) or He normal.

``--init he`` is part of ``--recipe small``: at PyTorch's default init the kernel heads hardly see
the input, and a small budget then never leaves the frame average (docs/training.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cdfi.training.trainer import unwrap

__all__ = ["INITS", "init_he", "initialise"]

INITS = ("published", "he")


def init_he(model: nn.Module, seed: int = 0) -> None:
    """He (Kaiming) normal initialisation of the kernel-estimation network's convolutions, zero biases.

    PyTorch's default init, which the published code keeps, shrinks the signal variance about 6x per
    conv+ReLU layer, so at the start the kernel heads see almost no spatial variation of the input
    (relative spatial std about 1e-3 at the heads) and their outputs are nearly constant. He init keeps
    the variance through the U-Net: the offsets start spatially varying (about +-0.5 px, off the
    integer kink) and respond to the input from the first step. CDFI's GridNet keeps the published
    init: its grid adds many residual paths, and He init there starts the synthesis at std ~12.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in unwrap(model).get_kernel.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                noise = torch.randn(module.weight.shape, generator=gen)
                module.weight.copy_(noise * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()


def initialise(model: nn.Module, init: str, seed: int) -> None:
    """Apply ``init`` (one of ``INITS``) to a freshly built model."""
    if init not in INITS:
        raise ValueError(f"unknown --init {init!r}; choose one of {', '.join(INITS)}")
    if init == "he":
        init_he(model, seed)
