"""The width solver: one integer width per free channel group, from per-layer densities.

Two methods (see :func:`solve_widths`): ``product`` keeps each layer's number of nonzero weights in the
least-squares sense, ``sqrt`` is the paper's rule as written. :func:`validate_widths` names the first
layer whose widths do not connect; :func:`apply_widths` rebuilds any module at the chosen widths.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from torch import nn

from cdfi.compression.errors import CompressionError
from cdfi.compression.tracing import ChannelGraph, UnionFind

__all__ = ["Widths", "apply_widths", "solve_widths", "validate_widths"]

Widths = dict[str, tuple[int, int]]  # conv module name -> (in channels, out channels)


def solve_widths(
    graph: ChannelGraph,
    densities: Mapping[str, float],
    method: str = "product",
    ties: Sequence[Sequence[str]] = (),
    keep_outputs: Iterable[str] = (),
    balance: float = 0.0,
) -> Widths:
    """Integer (in, out) channels per convolution, consistent across every channel group.

    ``densities`` maps conv names to densities (missing convs count as 1.0). Fixed groups keep their
    width. ``ties`` lists sets of convs whose *outputs* must share one width (e.g. because a spec format
    stores a single width for them); tying a conv whose output is fixed fixes the whole set.
    ``keep_outputs`` names convs whose output width must not change (e.g. one a spec cannot express).

    Methods, both working on u_g = log(width_g / full width_g) of each free group g:

    * ``"sqrt"``: the paper's rule. Each conv proposes sqrt(d)*c for its input and its output channels;
      a group takes the geometric mean of the proposals of its members.
    * ``"product"`` (default): keep each layer's number of nonzero weights, u_in + u_out = log d, in the
      least-squares sense; directions the layers leave undetermined take the sqrt rule. Densities that
      come from a consistent set of widths give back exactly those widths. Next to a fixed width (the
      RGB input, the F*F heads) it puts the whole reduction on the free side, which with uniform
      densities makes widths alternate along a chain. ``balance`` > 0 adds balance*(u_in - u_out)^2 per
      layer (smooth widths); balance = 1 gives exactly the ``"sqrt"`` result.
    """
    if method not in ("sqrt", "product"):
        raise CompressionError(f"unknown method {method!r}; expected 'sqrt' or 'product'")
    if not (math.isfinite(balance) and balance >= 0):
        raise CompressionError(f"balance must be a number >= 0, got {balance}")
    for name, d in densities.items():
        if name not in graph.convs:
            raise CompressionError(f"density given for {name!r}, which is not a traced convolution")
        if not 0.0 <= float(d) <= 1.0 or math.isnan(float(d)):
            raise CompressionError(f"{name}: density must lie in [0, 1], got {d}")

    uf = UnionFind()
    for gid in graph.groups:
        uf.find(gid)
    for tie in ties:
        names = list(tie)
        for n in names:
            if n not in graph.convs:
                raise CompressionError(f"tie names {n!r}, which is not a traced convolution")
        for a, b in itertools.pairwise(names):
            uf.union(graph.convs[a].out_group, graph.convs[b].out_group)
    merged: dict[int, list[int]] = {}
    for gid in graph.groups:
        merged.setdefault(uf.find(gid), []).append(gid)
    kept = set()
    for n in keep_outputs:
        if n not in graph.convs:
            raise CompressionError(f"keep_outputs names {n!r}, which is not a traced convolution")
        kept.add(uf.find(graph.convs[n].out_group))
    root_fixed = {r: r in kept or any(graph.groups[g].fixed for g in gids) for r, gids in merged.items()}
    free = sorted(r for r in merged if not root_fixed[r])
    index = {r: i for i, r in enumerate(free)}

    def log_d(name: str) -> float:
        conv = graph.convs[name]
        floor = 1.0 / (conv.c_in * conv.c_out)  # a layer keeps at least one weight
        return math.log(max(float(densities.get(name, 1.0)), floor))

    prior = np.zeros(len(free))
    counts = np.zeros(len(free))
    for conv in graph.convs.values():
        for gid in (conv.in_group, conv.out_group):
            r = uf.find(gid)
            if r in index:
                prior[index[r]] += 0.5 * log_d(conv.name)
                counts[index[r]] += 1
    prior = np.divide(prior, counts, out=np.zeros_like(prior), where=counts > 0)

    if method == "sqrt" or not free:
        u = prior
    else:
        rows, rhs = [], []
        for conv in graph.convs.values():
            row = np.zeros(len(free))
            diff = np.zeros(len(free))
            for gid, sign in ((conv.in_group, 1.0), (conv.out_group, -1.0)):
                r = uf.find(gid)
                if r in index:
                    row[index[r]] += 1.0
                    diff[index[r]] += sign
            if row.any():
                rows.append(row)
                rhs.append(log_d(conv.name))
            if balance > 0 and diff.any():
                rows.append(math.sqrt(balance) * diff)
                rhs.append(0.0)
        A = np.array(rows)
        correction, *_ = np.linalg.lstsq(A, np.array(rhs) - A @ prior, rcond=None)
        u = prior + correction

    scale = {r: min(1.0, math.exp(u[index[r]])) for r in free}
    new_width: dict[int, int] = {}
    for r, gids in merged.items():
        for gid in gids:
            full = graph.groups[gid].width
            new_width[gid] = full if r not in index else max(1, math.floor(scale[r] * full + 1e-6))
    return {name: (new_width[c.in_group], new_width[c.out_group]) for name, c in graph.convs.items()}


def validate_widths(graph: ChannelGraph, widths: Mapping[str, tuple[int, int]]) -> None:
    """Raise CompressionError naming the first layer whose widths do not connect to its neighbours."""
    seen: dict[int, tuple[int, str]] = {}
    for name, conv in graph.convs.items():
        if name not in widths:
            raise CompressionError(f"{name}: no width given for this convolution")
        w_in, w_out = (int(v) for v in widths[name])
        for gid, w, side in ((conv.in_group, w_in, "input"), (conv.out_group, w_out, "output")):
            group = graph.groups[gid]
            if w < 1:
                raise CompressionError(f"{name}: {side} width must be at least 1, got {w}")
            if group.fixed and w != group.width:
                raise CompressionError(f"{name}: {side} width {w} must stay {group.width} (fixed by {group.reason})")
            if gid in seen and seen[gid][0] != w:
                other_w, other = seen[gid]
                raise CompressionError(f"{name}: {side} width {w} does not connect to {other} ({other_w} channels)")
            seen.setdefault(gid, (w, f"{name} {side}"))
        if conv.groups > 1 and w_in != w_out:
            raise CompressionError(f"{name}: depthwise convolution needs equal widths, got {w_in} -> {w_out}")


def _resized_conv(conv: nn.Conv1d | nn.Conv2d | nn.Conv3d, c_in: int, c_out: int) -> nn.Module:
    groups = 1 if conv.groups == 1 else c_in
    return type(conv)(
        c_in,
        c_out,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


def _resized_follower(module: nn.Module, channels: int) -> nn.Module:
    if isinstance(module, nn.PReLU):
        return nn.PReLU(channels, device=module.weight.device, dtype=module.weight.dtype)
    bn = module
    ref = bn.weight if bn.weight is not None else bn.running_mean
    return type(bn)(
        channels,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        device=ref.device,
        dtype=ref.dtype,
    )


def apply_widths(model: nn.Module, graph: ChannelGraph, widths: Mapping[str, tuple[int, int]]) -> nn.Module:
    """A copy of ``model`` with every traced conv (and BatchNorm/PReLU following it) at the new widths.

    The new layers are freshly initialised: CDFI retrains the compressed network from scratch.
    """
    validate_widths(graph, widths)
    group_width = {}
    for name, conv in graph.convs.items():
        group_width[conv.in_group], group_width[conv.out_group] = widths[name]
    new = copy.deepcopy(model)
    replace = {name: _resized_conv(new.get_submodule(name), *widths[name]) for name in graph.convs}
    for name, gid in graph.followers.items():
        replace[name] = _resized_follower(new.get_submodule(name), group_width.get(gid, graph.groups[gid].width))
    for name, module in replace.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(new.get_submodule(parent_name) if parent_name else new, attr, module)
    return new
