"""Optimizer and learning-rate schedule factories with the published choices and names.

The names and hyper-parameters are those of the published ``utility.make_optimizer`` /
``make_scheduler`` (``--optimizer``, ``--decay_type``, ``--lr_decay``, ``--gamma``), so a published
command line builds the same optimizer here.
"""

from __future__ import annotations

from typing import Any

import torch

from cdfi.training.trainer import TrainingError

__all__ = ["OPTIMIZERS", "build_optimizer", "build_scheduler", "check_decay_type"]

OPTIMIZERS = ("SGD", "ADAM", "RMSprop", "ADAMax")


def build_optimizer(
    name: str, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The published optimizer choices: SGD (momentum 0.9), ADAM / ADAMax (betas 0.9, 0.999, eps 1e-8),
    RMSprop (eps 1e-8)."""
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "ADAM":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "ADAMax":
        return torch.optim.Adamax(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr, eps=1e-8, weight_decay=weight_decay)
    raise TrainingError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def check_decay_type(decay_type: str) -> list[int] | None:
    """Validate ``--decay_type``: ``step``, ``step_E1_E2...`` (returns the milestone epochs) or ``none``."""
    if decay_type in ("step", "none"):
        return None
    if decay_type.startswith("step_"):
        try:
            milestones = [int(m) for m in decay_type.split("_")[1:]]
        except ValueError:
            raise TrainingError(f"--decay_type {decay_type!r}: expected step_E1_E2... with integer epochs") from None
        return milestones
    raise TrainingError(f"unknown --decay_type {decay_type!r}; use step, step_E1_E2..., or none")


def build_scheduler(
    optimizer: torch.optim.Optimizer, decay_type: str, lr_decay: int, gamma: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: ``step`` = StepLR(lr_decay, gamma) (published), ``step_20_40_...`` =
    MultiStepLR at those epochs (published), ``none`` = constant."""
    milestones = check_decay_type(decay_type)
    if decay_type == "step":
        if lr_decay < 1:
            raise TrainingError(f"--lr_decay must be a positive number of epochs, got {lr_decay}")
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay, gamma=gamma)
    if milestones is not None:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
