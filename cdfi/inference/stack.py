"""The one place that turns a loaded model into what inference calls: moved to the runtime's device and
memory format, then optionally pre-aligned, then optionally self-ensembled (in that order: the ensemble
averages whole pre-aligned passes). The ``Interpolator`` and the evaluation both build it here."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cdfi.inference.ensemble import check_ensemble_size, with_ensemble
from cdfi.inference.prealign import with_prealign
from cdfi.runtime import Runtime
from cdfi.runtime.precision import prepare_model


@dataclass(frozen=True)
class InferenceOptions:
    """What wraps the plain model: ``prealign`` (coarse-to-fine pre-alignment) and ``ensemble`` (1, 2, 4
    or 8 passes over time-reversed and mirrored inputs)."""

    prealign: bool = False
    ensemble: int = 1

    def __post_init__(self) -> None:
        check_ensemble_size(self.ensemble)

    def describe(self) -> list[str]:
        """Human-readable extras for the one line a command prints (empty for the plain model)."""
        return [f"self-ensemble of {self.ensemble}"] * (self.ensemble > 1) + ["pre-aligned"] * self.prealign


def build_inference_stack(
    model: nn.Module,
    runtime: Runtime,
    options: InferenceOptions | None = None,
    *,
    channels_last: bool | None = None,
) -> tuple[nn.Module, nn.Module]:
    """``(prepared, net)``: the model in eval mode on the runtime's device and memory format, and the
    callable to run (``prepared`` wrapped by pre-alignment and the ensemble as ``options`` ask)."""
    options = options or InferenceOptions()
    prepared = prepare_model(model.eval(), runtime.device, runtime.precision, channels_last=channels_last)
    return prepared, with_ensemble(with_prealign(prepared, options.prealign), options.ensemble)
