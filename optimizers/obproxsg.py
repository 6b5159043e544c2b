"""OBProxSG and ProxSG: stochastic optimisers for f(x) + lambda * ||x||_1.

OBProxSG (Chen et al., "Orthant Based Proximal Stochastic Gradient Method for l1-Regularized
Optimization", ECML-PKDD 2020) alternates between epochs of proximal SGD steps, which find the
sparsity pattern, and epochs of orthant steps, which keep every zero at zero and never let an entry
change sign, so the pattern found is preserved and refined. CDFI prunes AdaCoF with it.

Time is counted in epochs of ``epochSize`` calls to :meth:`step`. While ``epoch mod (Np + No) < Np``
every step is a proximal step, otherwise an orthant step (``No='inf'``: Np proximal epochs, then orthant
steps for ever). The step and epoch counters are part of :meth:`state_dict`, so a resumed run continues
in the right phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["OBProxSG", "ProxSG", "orthant_step_", "prox_step_"]

_STATE_KEY = "obproxsg"


def _positive(name: str, value: Any) -> float:
    """Return value as a float, or raise ValueError unless it is a finite number > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def _non_negative(name: str, value: Any) -> float:
    """Return value as a float, or raise ValueError unless it is a finite number >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return number


def _count(name: str, value: Any, *, minimum: int) -> int:
    """Return value as an int, or raise ValueError unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def prox_step_(param: torch.Tensor, grad: torch.Tensor, lr: float, lambda_: float) -> None:
    """Proximal SGD step in place: soft-threshold ``param - lr*grad`` by ``lr*lambda_``."""
    trial = param - lr * grad
    param.copy_(torch.sign(trial) * torch.clamp(trial.abs() - lr * lambda_, min=0.0))


def orthant_step_(param: torch.Tensor, grad: torch.Tensor, lr: float, lambda_: float, eps: float) -> None:
    """Orthant step in place: descend on the current orthant face, zero what would leave it.

    zeta = sign(param) (0 where param == 0); the pseudo-gradient ``grad + lambda_*zeta`` is used on the
    nonzero entries only; an entry of the trial point survives only where ``trial * zeta > eps``.
    """
    zeta = torch.sign(param)
    nonzero = zeta != 0
    pseudo_grad = torch.where(nonzero, grad + lambda_ * zeta, torch.zeros_like(grad))
    trial = param - lr * pseudo_grad
    param.copy_(torch.where(trial * zeta > eps, trial, torch.zeros_like(trial)))


class _L1Optimizer(Optimizer):
    """Shared parameter-group validation and closure handling for the two l1 optimisers."""

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = _positive("lr", group["lr"])
        group["lambda_"] = _non_negative("lambda_", group["lambda_"])
        if "eps" in group:
            group["eps"] = _non_negative("eps", group["eps"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; a group may override lr, lambda_ (0 exempts it) and eps."""
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def _grads(self, group: dict[str, Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise ValueError(f"{type(self).__name__} does not support sparse gradients")
            yield param, param.grad

    @staticmethod
    def _run_closure(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class ProxSG(_L1Optimizer):
    """Proximal stochastic gradient: every step soft-thresholds ``x - lr*g`` by ``lr*lambda_``."""

    def __init__(self, params: Iterable[Any], lr: float, lambda_: float) -> None:
        defaults = {"lr": _positive("lr", lr), "lambda_": _positive("lambda_", lambda_)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One proximal step on every parameter that has a gradient."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            for param, grad in self._grads(group):
                prox_step_(param, grad, group["lr"], group["lambda_"])
        return loss


class OBProxSG(_L1Optimizer):
    """Orthant-based proximal stochastic gradient (Chen et al. 2020) as used by CDFI.

    Args:
        params: parameters or parameter groups (groups may override lr, lambda_ and eps).
        lr: step size (> 0).
        lambda_: l1 weight (> 0).
        epochSize: number of :meth:`step` calls per epoch (integer > 0).
        Np: epochs of proximal steps per cycle (integer >= 0).
        No: epochs of orthant steps per cycle (integer >= 0), or ``'inf'`` (the default) for one
            proximal stage followed by orthant steps for ever.
        eps: trimming threshold of the orthant projection (>= 0).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        lambda_: float,
        epochSize: int,  # noqa: N803 - published signature
        Np: int,  # noqa: N803 - published signature
        No: int | str = "inf",  # noqa: N803 - published signature
        eps: float = 0.0,
    ) -> None:
        defaults = {
            "lr": _positive("lr", lr),
            "lambda_": _positive("lambda_", lambda_),
            "eps": _non_negative("eps", eps),
        }
        self.epochSize = _count("epochSize", epochSize, minimum=1)
        self.Np = _count("Np", Np, minimum=0)
        if isinstance(No, str):
            if No.strip().lower() != "inf":
                raise ValueError(f"No must be an integer >= 0 or 'inf', got {No!r}")
            self.No: int | None = None
        else:
            self.No = _count("No", No, minimum=0)
        if self.No is not None and self.Np + self.No == 0:
            raise ValueError("Np + No must be at least 1 epoch")
        self.step_count = 0
        super().__init__(params, defaults)

    @property
    def epoch(self) -> int:
        """Number of completed epochs (``step_count // epochSize``)."""
        return self.step_count // self.epochSize

    @property
    def phase(self) -> str:
        """``'proximal'`` or ``'orthant'``: the kind of step the next :meth:`step` call takes."""
        if self.No is None:
            return "proximal" if self.epoch < self.Np else "orthant"
        return "proximal" if self.epoch % (self.Np + self.No) < self.Np else "orthant"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One proximal or orthant step (by the epoch counter), then advance the counter."""
        loss = self._run_closure(closure)
        proximal = self.phase == "proximal"
        for group in self.param_groups:
            for param, grad in self._grads(group):
                if proximal:
                    prox_step_(param, grad, group["lr"], group["lambda_"])
                else:
                    orthant_step_(param, grad, group["lr"], group["lambda_"], group["eps"])
        self.step_count += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The torch optimizer state plus the step counter and the schedule (epochSize, Np, No)."""
        state = super().state_dict()
        state[_STATE_KEY] = {
            "step_count": self.step_count,
            "epoch": self.epoch,
            "phase": self.phase,
            "epochSize": self.epochSize,
            "Np": self.Np,
            "No": "inf" if self.No is None else self.No,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore parameter groups and counters; the schedule must match this optimizer's."""
        if _STATE_KEY not in state_dict:
            raise ValueError("optimizer state has no OBProxSG counters (was it saved by OBProxSG?)")
        saved = state_dict[_STATE_KEY]
        mine = {"epochSize": self.epochSize, "Np": self.Np, "No": "inf" if self.No is None else self.No}
        for key, value in mine.items():
            if saved.get(key) != value:
                raise ValueError(f"saved OBProxSG state has {key}={saved.get(key)!r} but this optimizer has {value!r}")
        step_count = _count("step_count", saved.get("step_count"), minimum=0)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != _STATE_KEY})
        for group in self.param_groups:
            self._validate_group(group)
        self.step_count = step_count
