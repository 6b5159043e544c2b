"""Training losses configured by the published loss string, e.g. ``1*Charb+0.01*g_Spatial+0.005*VGG``.

Terms (weight ``*`` name, joined by ``+``):

- ``Charb``: Charbonnier distance to ground truth, ``mean(sqrt((out - gt)^2 + eps^2))`` with eps 1e-3;
- ``L1`` / ``MSE``: mean absolute / squared error;
- ``VGG``: MSE between frozen ImageNet VGG16 features of output and ground truth, taken after the first
  22 modules of ``torchvision.models.vgg16().features`` as the reference specifies (that slice ends with
  the conv4_3 convolution; the ReLU that makes it "relu4_3" is module 22 and is not included); the
  [0, 1] frames go in as they are, without ImageNet mean/std normalisation, as in the published
  training code, so that ``0.005*VGG`` weighs what it weighed there;
- ``Warp``: Charbonnier distance of each warped input frame (``warp0``, ``warp2`` of the model's
  training dict, before occlusion blending) to ground truth, averaged over the two. Not part of the
  published recipe: it gives each side's offsets a first-order motion signal, which the blended output
  lacks at the frame average (there both sides' errors cancel to first order; issue 11);
- ``Context``: Charbonnier distance of CDFI's GridNet synthesis (``context``, before the Blend head
  mixes it with the AdaCoF output) to ground truth. Not published either: once the Blend head has
  learnt to ignore an untrained GridNet, the output loss no longer reaches the GridNet, and this term
  keeps it learning until its synthesis is worth blending in;
- ``g_<name>``: a regulariser returned by the model in training mode (``g_Spatial``; the AdaCoF
  family also returns ``g_Occlusion``), taken as is.

VGG16 weights cannot be downloaded here, so they come from ``vgg_weights`` (a torchvision-format file,
a full ``vgg16`` state dict or only its ``features.*`` entries) or torchvision's cache; without them
``CompositeLoss`` raises ``VGGWeightsError`` naming the fix, before any training starts.

Unknown term names are errors here. The published CDFI parser instead gives an unknown name the
previous term's function, so its ``1*Charb+0.01*g_Spatial+0.005*g_Occlusion`` adds ``0.005 x Charb``;
``1.005*Charb+0.01*g_Spatial`` is that loss (docs/published_differences.md).

Auxiliary losses that are not terms of the string are ``extra_loss`` callables of the ``Trainer``:
``BlurredWarp`` (``--blur_warp``, experimental), added up by ``combine_extra_losses``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdfi.training.trainer import ExtraLoss, Trainer, TrainingError, unwrap
from models.adacof import pad_to_multiple

__all__ = [
    "ADACOF_LOSS",
    "DEFAULT_LOSSES",
    "PUBLISHED_LOSS",
    "BlurredWarp",
    "CompositeLoss",
    "LossSpecError",
    "LossTerm",
    "VGGPerceptual",
    "VGGWeightsError",
    "charbonnier",
    "combine_extra_losses",
    "find_vgg_weights",
    "gaussian_blur",
    "parse_loss",
]

# The loss of the published CDFI training, and of the published AdaCoF training (AdaCoF-pytorch, whose
# models also return the occlusion smoothness term and whose parser takes g_Occlusion as that term).
# These are the one place the default loss of each family is written down.
PUBLISHED_LOSS = "1*Charb+0.01*g_Spatial+0.005*VGG"
ADACOF_LOSS = "1*Charb+0.01*g_Spatial+0.005*g_Occlusion"
DEFAULT_LOSSES = {"cdfi_adacof": PUBLISHED_LOSS, "adacof": ADACOF_LOSS, "compressed_adacof": ADACOF_LOSS}
PIXEL_TERMS = ("Charb", "L1", "MSE", "VGG")
SIDE_TERMS = ("Warp", "Context")
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's file name for VGG16_Weights.IMAGENET1K_V1
VGG_MODULES = 22  # features[:22]: up to and including conv4_3


class LossSpecError(ValueError):
    """A loss string that cannot be parsed or asks for a term the model does not provide."""


class VGGWeightsError(LossSpecError):
    """The VGG term was requested but no ImageNet VGG16 weights are available."""


@dataclass(frozen=True)
class LossTerm:
    """One ``weight*name`` term of a loss string."""

    weight: float
    name: str


_TERM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


def parse_loss(spec: str) -> list[LossTerm]:
    """Split ``1*Charb+0.01*g_Spatial`` into terms; unknown names and malformed parts are errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise LossSpecError("empty loss string; expected e.g. '1*Charb+0.01*g_Spatial'")
    terms: list[LossTerm] = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if m is None:
            raise LossSpecError(f"loss term {part.strip()!r} is not of the form WEIGHT*NAME (in {spec!r})")
        weight, name = float(m.group(1)), m.group(2)
        if name not in PIXEL_TERMS + SIDE_TERMS and not name.startswith("g_"):
            raise LossSpecError(
                f"unknown loss term {name!r}; use {', '.join(PIXEL_TERMS + SIDE_TERMS)} or a model regulariser g_<name>"
            )
        if any(t.name == name for t in terms):
            raise LossSpecError(f"loss term {name!r} appears twice in {spec!r}")
        terms.append(LossTerm(weight, name))
    return terms


def drop_term(spec: str, name: str) -> str:
    """``spec`` without its ``name`` term (``spec`` itself when it has none)."""
    return "+".join(f"{t.weight:g}*{t.name}" for t in parse_loss(spec) if t.name != name)


def vgg_weights_available(path: str | Path | None = None) -> bool:
    """True when ``find_vgg_weights(path)`` would find a file."""
    try:
        find_vgg_weights(path)
    except VGGWeightsError:
        return False
    return True


def without_missing_vgg(spec: str, vgg_weights: str | Path | None, hint: str, fallback: str | None = None) -> str:
    """``spec`` when it has no VGG term or the VGG16 weights are found; else ``fallback`` (default: ``spec``
    less its VGG term) with a one-line note ending in ``hint`` (how to keep the term). No ImageNet weights
    can be downloaded here, and a published default loss should still run."""
    if not any(t.name == "VGG" for t in parse_loss(spec)) or vgg_weights_available(vgg_weights):
        return spec
    used = drop_term(spec, "VGG") if fallback is None else fallback
    print(
        f"note: loss {spec}: no ImageNet VGG16 weights here, so the VGG term is dropped: using {used} ({hint})",
        file=sys.stderr,
    )
    return used


def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier distance ``mean(sqrt(d^2 + eps^2))`` of the published AdaCoF/CDFI training."""
    d = output - target
    return torch.sqrt(d * d + eps * eps).mean()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` (N, C, H, W) blurred by a Gaussian of ``sigma`` pixels (separable, truncated at 3 sigma,
    border replicated); ``sigma`` 0 returns ``x``."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t * t) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def find_vgg_weights(path: str | Path | None = None) -> Path:
    """The VGG16 weight file to use: ``path`` if given (must exist), else torchvision's cache."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise VGGWeightsError(f"--vgg_weights {p}: file not found")
        return p
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if cached.is_file():
        return cached
    raise VGGWeightsError(
        f"the VGG loss needs ImageNet VGG16 weights: pass --vgg_weights PATH (torchvision's {VGG16_FILE}) "
        f"or put that file in {cached.parent}, or drop VGG from --loss"
    )


def _vgg16_features() -> nn.Sequential:
    """The first 22 modules of torchvision's VGG16 ``features`` (through conv4_3), untrained."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"], batch_norm=False)[:VGG_MODULES]


class VGGPerceptual(nn.Module):
    """MSE between frozen VGG16 ``features[:22]`` activations of output and target (unnormalised [0, 1]
    inputs, as the published loss feeds them)."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        path = find_vgg_weights(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for corrupt files
            raise VGGWeightsError(f"{path}: not a readable VGG16 weight file ({type(exc).__name__})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        features = _vgg16_features()
        wanted = {f"features.{k}": v for k, v in features.state_dict().items()}
        got = {k: state.get(k) for k in wanted} if isinstance(state, dict) else {}
        bad = [k for k, v in wanted.items() if not isinstance(got.get(k), torch.Tensor) or got[k].shape != v.shape]
        if bad:
            raise VGGWeightsError(f"{path}: not VGG16 weights in torchvision's format (missing or wrong {bad[0]})")
        features.load_state_dict({k.removeprefix("features."): v for k, v in got.items()})
        features.requires_grad_(False).eval()
        self.features = features

    def train(self, mode: bool = True) -> VGGPerceptual:
        """The feature extractor stays in eval mode whatever the caller asks."""
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        f_out = self.features(output)
        with torch.no_grad():
            f_gt = self.features(target)
        return F.mse_loss(f_out, f_gt)


class CompositeLoss(nn.Module):
    """The weighted sum of a loss string's terms.

    ``forward(output, target)`` takes the model's training-mode dict (``frame1`` plus ``g_*``) or a bare
    frame tensor and returns ``(total, parts)`` where ``parts`` maps each term name to its unweighted,
    detached value.
    """

    def __init__(self, spec: str, vgg_weights: str | Path | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.terms = parse_loss(spec)
        self.vgg = VGGPerceptual(vgg_weights) if any(t.name == "VGG" for t in self.terms) else None

    @property
    def regularisers(self) -> list[str]:
        """The ``g_*`` names this loss needs from the model."""
        return [t.name for t in self.terms if t.name.startswith("g_")]

    def check_model_outputs(self, names: list[str] | tuple[str, ...], model_name: str = "the model") -> None:
        """Fail before training when a ``g_*`` term is not among the model's training outputs."""
        missing = [n for n in self.regularisers if n not in names]
        if missing:
            have = ", ".join(n for n in names if n.startswith("g_")) or "none"
            raise LossSpecError(f"loss term {missing[0]} is not produced by {model_name} (it gives: {have})")

    def forward(
        self, output: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = output if isinstance(output, dict) else {"frame1": output}
        frame = outputs["frame1"].float()
        target = target.float()
        total = frame.new_zeros(())
        parts: dict[str, float] = {}
        for term in self.terms:
            if term.name == "Charb":
                value = charbonnier(frame, target)
            elif term.name == "L1":
                value = F.l1_loss(frame, target)
            elif term.name == "MSE":
                value = F.mse_loss(frame, target)
            elif term.name == "VGG":
                assert self.vgg is not None
                value = self.vgg(frame, target)
            elif term.name == "Warp":
                if "warp0" not in outputs or "warp2" not in outputs:
                    raise LossSpecError("loss term Warp needs the warped frames warp0/warp2 of a training-mode model")
                sides = (outputs["warp0"].float(), outputs["warp2"].float())
                value = sum(charbonnier(side, target) for side in sides) / 2
            elif term.name == "Context":
                if "context" not in outputs:
                    raise LossSpecError(
                        "loss term Context needs the GridNet synthesis 'context' of a training-mode CDFI model"
                    )
                value = charbonnier(outputs["context"].float(), target)
            else:
                if term.name not in outputs:
                    raise LossSpecError(f"loss term {term.name} is not among the model outputs {sorted(outputs)}")
                value = outputs[term.name].float()
            total = total + term.weight * value
            parts[term.name] = float(value.detach())
        return total, parts


class BlurredWarp:
    """Extra loss for the whole run: the ``Warp`` term again on Gaussian-blurred frames, at each of
    ``sigmas`` (pixels): both inputs blurred and warped with the model's own kernels, against the blurred
    ground truth (Charbonnier, averaged over the sigmas and the two sides).

    Through bilinear sampling an offset's gradient only sees the image within a pixel of where it
    samples, so a motion more than a few pixels away is never found from the loss alone; on a frame
    blurred by sigma the gradient points the right way from about sigma further. This is a loss-side
    coarse-to-fine (``tests/test_losses.py`` shows one offset recovering a 14-px shift from zero with
    sigmas 2, 4 and 8 but not without them). Not part of the published recipe (``--blur_warp``,
    experimental).
    """

    def __init__(self, model: nn.Module, weight: float, sigmas: Sequence[float] = (2.0, 4.0, 8.0)) -> None:
        if not sigmas or any(s <= 0 for s in sigmas):
            raise TrainingError(f"blurred-warp sigmas must be positive, got {tuple(sigmas)}")
        self.weight, self.sigmas = float(weight), tuple(float(s) for s in sigmas)
        self.net = unwrap(model)
        self.heads: dict[str, torch.Tensor] = {}
        self.net.get_kernel.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: Any, output: dict[str, torch.Tensor]) -> None:
        self.heads = output

    def error(self, frame0: torch.Tensor, frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        """Mean blurred-warp Charbonnier distance for the kernels of the last forward pass."""
        h, w = frame0.shape[-2:]
        k = {name: t.float() for name, t in self.heads.items()}
        terms = []
        for sigma in self.sigmas:
            target = gaussian_blur(frame1.float(), sigma)
            for frame, side in ((frame0, "1"), (frame2, "2")):
                padded = self.net.pad_frame(pad_to_multiple(gaussian_blur(frame.float(), sigma)))
                warped = self.net.warp(padded, k[f"Weight{side}"], k[f"Alpha{side}"], k[f"Beta{side}"])
                terms.append(charbonnier(warped[..., :h, :w], target))
        return sum(terms) / len(terms)

    def __call__(self, trainer: Trainer | None, batch: tuple[torch.Tensor, ...], output: Any) -> torch.Tensor:
        return self.weight * self.error(*batch[:3])


def combine_extra_losses(losses: Sequence[ExtraLoss]) -> ExtraLoss | None:
    """One ``extra_loss`` that adds up several (``None`` when there are none)."""
    if len(losses) <= 1:
        return losses[0] if losses else None

    def total(trainer: Trainer, batch: tuple[torch.Tensor, ...], output: Any) -> torch.Tensor | None:
        values = [v for v in (loss(trainer, batch, output) for loss in losses) if v is not None]
        return sum(values) if values else None

    return total
