"""Grow a trained AdaCoF-family model into a wider one, or into CDFI, keeping what it has learnt.

CDFI's kernel-estimation network is compressed AdaCoF's topology with slightly different widths and a
larger kernel (F11/D2 instead of F5/D1), plus the feature projections, the Blend head and the GridNet.
``grow`` copies a trained source network into such a target so that the target's AdaCoF output starts
where the source's ended:

- channels: a layer that is wider in the target keeps the source's filters; its new filters start
  small and random, and every layer reading them starts with zero weights on them, so the function is
  unchanged while the new channels can still learn. A layer that is narrower keeps the source channels
  its consumers weigh most (the largest L2 norm of their input weights); that is the only inexact step.
- taps: each source tap (i, j) of an F_s/D_s kernel becomes one target tap of the F_t/D_t kernel (the
  source grid centred in the target grid), and the bias of its Alpha/Beta output is shifted by the
  difference of the two taps' base positions, so it samples exactly where the source tap did. Target
  taps without a source tap get Weight logits of ``unused_logit`` (zero weights), a softmax share of
  about ``exp(unused_logit - max logit)`` each, and learn from there.
- CDFI's own parts keep the target's initialisation, except that the Blend head's output bias is set
  to ``blend_bias``, so the output starts (almost) as the source's, and the GridNet starts as the
  average of the two warped frames (``init_gridnet_average``): with the published init its synthesis
  starts far below the warped frames, and the Blend head learns to switch it off before it catches up.

Offsets are shifted by whole pixels, so the copy is exact for ``floor`` sampling (true bilinear
interpolation); under the published ``trunc`` rule a shifted offset can change sides of zero, which
changes its interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models import WarpingModel
from models.gridnet import GridNet

__all__ = ["GrowError", "GrowReport", "grow", "init_gridnet_average"]

TAP_HEADS = ("Weight1", "Alpha1", "Beta1", "Weight2", "Alpha2", "Beta2")


class GrowError(ValueError):
    """A source model that cannot be grown into the requested target."""


@dataclass(frozen=True)
class GrowReport:
    """What ``grow`` had to approximate: the narrowed channel spaces as ``name: (source, target)``."""

    narrowed: dict[str, tuple[int, int]]
    exact: bool


@dataclass(frozen=True)
class _Conv:
    """A convolution of the kernel-estimation network and the channel spaces it reads and writes."""

    name: str
    reads: str
    writes: str


def _conv_graph(model: WarpingModel) -> list[_Conv]:
    """Every convolution of the AdaCoF topology (``models.adacof.KernelEstimation``) with its channel
    spaces; a space is shared by all layers that read or write the same activations (encoder level i's
    output and decoder level i's upsampling are added together, so they share ``skip{i}``)."""
    kernel = model.get_kernel
    convs: list[_Conv] = []
    space = "input"
    for i in range(1, 6):
        for j in (0, 2, 4):
            out = f"skip{i}" if j == 4 else f"enc{i}.{j}"
            convs.append(_Conv(f"moduleConv{i}.{j}", space, out))
            space = out
    for level in (5, 4, 3, 2):
        for j in (0, 2, 4):
            out = f"dec{level}.{j}"
            convs.append(_Conv(f"moduleDeconv{level}.{j}", space, out))
            space = out
        convs.append(_Conv(f"moduleUpsample{level}.1", space, f"skip{level}"))
        space = f"skip{level}"
    for head in kernel.head_names:
        if head == "Blend":
            continue
        read = space
        for j in (0, 2, 4):
            out = f"{head}.{j}"
            convs.append(_Conv(f"module{head}.{j}", read, out))
            read = out
        convs.append(_Conv(f"module{head}.7", read, "taps" if head in TAP_HEADS else "one"))
    return convs


def _conv(model: WarpingModel, name: str) -> nn.Conv2d:
    module, index = name.split(".")
    return getattr(model.get_kernel, module)[int(index)]


def _channel_maps(
    source: WarpingModel, target: WarpingModel, convs: list[_Conv]
) -> tuple[dict[str, list[int]], dict[str, tuple[int, int]]]:
    """For each channel space, the source channel of each target channel (-1: a new channel), and the
    spaces that had to be narrowed as ``name: (source width, target width)``."""
    widths: dict[str, tuple[int, int]] = {}
    for c in convs:
        s, t = _conv(source, c.name), _conv(target, c.name)
        widths[c.writes] = (s.out_channels, t.out_channels)
        widths.setdefault(c.reads, (s.in_channels, t.in_channels))
    maps: dict[str, list[int]] = {"input": list(range(widths["input"][1]))}
    narrowed: dict[str, tuple[int, int]] = {}
    for space, (n_src, n_dst) in widths.items():
        if space in ("taps", "one", "input"):
            continue
        if n_dst >= n_src:
            maps[space] = list(range(n_src)) + [-1] * (n_dst - n_src)
            continue
        importance = torch.zeros(n_src)
        for c in convs:
            if c.reads == space:
                importance += _conv(source, c.name).weight.detach().float().pow(2).sum(dim=(0, 2, 3))
        maps[space] = sorted(torch.topk(importance, n_dst).indices.tolist())
        narrowed[space] = (n_src, n_dst)
    return maps, narrowed


def _tap_map(source: WarpingModel, target: WarpingModel) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Target tap index, vertical and horizontal offset shift (pixels) of each source tap."""
    fs, ds, ft, dt = source.kernel_size, source.dilation, target.kernel_size, target.dilation
    if fs > ft:
        raise GrowError(f"cannot grow an F{fs} kernel into a smaller F{ft} one")
    first = (ft - fs) // 2
    index, dy, dx = [], [], []
    for i in range(fs):
        for j in range(fs):
            ti, tj = i + first, j + first
            index.append(ti * ft + tj)
            dy.append(ds * (i - (fs - 1) / 2) - dt * (ti - (ft - 1) / 2))
            dx.append(ds * (j - (fs - 1) / 2) - dt * (tj - (ft - 1) / 2))
    return index, torch.tensor(dy), torch.tensor(dx)


def grow(
    source: WarpingModel,
    target: WarpingModel,
    blend_bias: float = -6.0,
    unused_logit: float = -12.0,
    new_scale: float = 0.1,
    seed: int = 0,
) -> GrowReport:
    """Copy the trained ``source`` into ``target`` (in place) as described in the module docstring.

    ``blend_bias`` -6 leaves 0.25% of the GridNet in CDFI's first outputs. ``new_scale`` scales the
    He-normal init of new filters. Returns which channel spaces had to be
    narrowed (``exact`` is True when none was and both use ``floor`` sampling).
    """
    if source.model_name == "cdfi_adacof":
        raise GrowError("the source must be an AdaCoF-family model (adacof or compressed_adacof), not CDFI")
    if (source.kernel_size - 1) * source.dilation % 2 or (target.kernel_size - 1) * target.dilation % 2:
        raise GrowError("(F - 1) * D must be even for both kernels (a whole-pixel padding on each side)")
    if (target.kernel_size - source.kernel_size) % 2:
        raise GrowError(
            f"an F{source.kernel_size} kernel cannot be centred in an F{target.kernel_size} one "
            "(the sizes differ by an odd number)"
        )
    convs = _conv_graph(target)
    maps, narrowed = _channel_maps(source, target, convs)
    tap_index, dy, dx = _tap_map(source, target)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in convs:
            src, dst = _conv(source, c.name), _conv(target, c.name)
            head = c.name.split(".")[0][len("module") :]
            if c.writes == "taps":
                rows = [-1] * dst.out_channels
                for s, t in enumerate(tap_index):
                    rows[t] = s
            else:
                rows = maps.get(c.writes, list(range(dst.out_channels)))
            cols = torch.tensor(maps[c.reads])
            kept_rows = [t for t, s in enumerate(rows) if s >= 0]
            kept_cols = (cols >= 0).nonzero().flatten()
            weight = torch.zeros_like(dst.weight)
            bias = torch.zeros_like(dst.bias)
            if c.writes != "taps":
                new_rows = [t for t, s in enumerate(rows) if s < 0]
                std = new_scale * math.sqrt(2.0 / dst.weight[0].numel())
                weight[new_rows] = torch.randn(weight[new_rows].shape, generator=gen).to(weight) * std
            elif head.startswith("Weight"):
                bias.fill_(unused_logit)
            src_rows = torch.tensor([rows[t] for t in kept_rows], dtype=torch.long)
            block = src.weight.detach()[src_rows][:, cols[kept_cols]]
            weight[torch.tensor(kept_rows, dtype=torch.long)[:, None], kept_cols[None, :]] = block.to(weight)
            bias[kept_rows] = src.bias.detach()[src_rows].to(bias)
            if c.writes == "taps" and not head.startswith("Weight"):
                bias[tap_index] += (dy if head.startswith("Alpha") else dx).to(bias)
            dst.weight.copy_(weight)
            dst.bias.copy_(bias)
        if "Blend" in target.get_kernel.head_names:
            target.get_kernel.moduleBlend[7].bias.fill_(blend_bias)
            init_gridnet_average(target.context_synthesis)
    exact = not narrowed and source.sampling == target.sampling == "floor"
    return GrowReport(narrowed, exact)


def init_gridnet_average(gridnet: GridNet) -> None:
    """Make CDFI's GridNet output the mean of its first two RGB inputs (the two warped frames) while
    every block stays trainable: the last conv of each block that adds into the full-resolution row is
    zeroed (residual blocks become identities, up-sampling blocks add nothing), and the two 3x3 convs
    that change width there (``lateral_init.conv``, ``lateral_final.conv``) carry channels 0-2 through
    their centre tap. The lower rows keep their initialisation; their contributions start at zero."""
    with torch.no_grad():
        blocks = [gridnet.lateral_init, gridnet.lateral_final]
        blocks += [getattr(gridnet, f"lateral_0_{c}") for c in range(5)]
        blocks += [getattr(gridnet, f"up_0_{u}") for u in range(3)]
        for block in blocks:
            last = block.f[-1]
            last.weight.zero_()
            last.bias.zero_()
        first, final = gridnet.lateral_init.conv, gridnet.lateral_final.conv
        first.weight[:3].zero_()
        first.bias[:3].zero_()
        final.weight.zero_()
        final.bias.zero_()
        for c in range(3):
            first.weight[c, c, 1, 1] = 0.5
            first.weight[c, 3 + c, 1, 1] = 0.5
            final.weight[c, c, 1, 1] = 1.0
