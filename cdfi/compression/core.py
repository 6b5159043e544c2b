"""From a pruned network to a compressed architecture: densities, channel coupling, consistent widths.

CDFI's compression (Sec. 3 of the paper) prunes a trained network with OBProxSG, measures each
layer's density d (nonzero weights / weights) and rebuilds the layer with about sqrt(d) of its input
and output channels. The rebuilt widths must still connect: a layer's input is the output of the layer
before it, and the two operands of a skip addition need equal widths. This module does that for any
PyTorch network with convolutions:

1. :func:`conv_densities` measures densities from a state dict.
2. :func:`trace_channel_graph` runs one forward pass under a dispatch mode that records every aten op
   and works out which channel dimensions are the same "channel group" (conv output -> ReLU -> pool ->
   next conv input, both operands of an add, ...). A group that reaches something whose channel layout
   cannot change (the network's input or output, a reshape, a channel concatenation, an op we do not
   know) is fixed.
3. :func:`solve_widths` picks one width per free group from the densities.
4. :func:`apply_widths` rebuilds any module with those widths; for the CDFI/AdaCoF family
   :func:`arch_from_widths` writes the architecture spec that ``models.make_model`` builds.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "REPORT_COLUMNS",
    "ChannelGraph",
    "ChannelGroup",
    "CompressedArch",
    "CompressionError",
    "ConvLayer",
    "LayerDensity",
    "LayerMismatchError",
    "apply_widths",
    "arch_from_widths",
    "check_layers",
    "compress_variant",
    "conv_densities",
    "format_report",
    "model_density",
    "published_densities",
    "read_report_csv",
    "report_csv_text",
    "report_rows",
    "solve_widths",
    "spec_slots",
    "spec_ties",
    "sqrt_rule",
    "trace_channel_graph",
    "validate_widths",
]

Widths = dict[str, tuple[int, int]]  # conv module name -> (in channels, out channels)


class CompressionError(ValueError):
    """Densities, widths or specs that cannot be turned into a consistent compressed network."""


class LayerMismatchError(CompressionError):
    """Measured layers (a sparsity report or a checkpoint) that are not the convolutions of the network."""


# --------------------------------------------------------------------------------------------------
# densities


@dataclass(frozen=True)
class LayerDensity:
    """Density of one convolution's weight and the channel counts the sqrt rule gives it."""

    name: str
    c_in: int
    c_out: int
    nonzero: int
    total: int

    @property
    def density(self) -> float:
        return self.nonzero / self.total if self.total else 1.0

    @property
    def reduced_in(self) -> int:
        return sqrt_rule(self.density, self.c_in)

    @property
    def reduced_out(self) -> int:
        return sqrt_rule(self.density, self.c_out)


def sqrt_rule(density: float, channels: int) -> int:
    """Integer part of sqrt(density) * channels (at least 1): CDFI's reduced channel count."""
    if not 0.0 <= density <= 1.0:
        raise CompressionError(f"density must lie in [0, 1], got {density}")
    return max(1, math.floor(math.sqrt(density) * channels + 1e-9))


def _is_conv_weight(key: str, value: Any) -> bool:
    return key.endswith(".weight") and isinstance(value, torch.Tensor) and value.dim() >= 3


def conv_densities(state_dict: Mapping[str, torch.Tensor], threshold: float = 0.0) -> list[LayerDensity]:
    """Per convolution (every weight of 3+ dims, in state-dict order): counts of |w| > threshold."""
    if threshold < 0:
        raise CompressionError(f"threshold must be >= 0, got {threshold}")
    layers = []
    for key, value in state_dict.items():
        if not _is_conv_weight(key, value):
            continue
        nonzero = int((value.detach().abs() > threshold).sum())
        layers.append(
            LayerDensity(key[: -len(".weight")], int(value.shape[1]), int(value.shape[0]), nonzero, value.numel())
        )
    if not layers:
        raise CompressionError("the state dict holds no convolution weights")
    return layers


def model_density(params: nn.Module | Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> float:
    """Fraction of nonzero entries over all parameters (a module, a state dict or tensors)."""
    if isinstance(params, nn.Module):
        tensors: Iterable[torch.Tensor] = params.parameters()
    elif isinstance(params, Mapping):
        tensors = params.values()
    else:
        tensors = params
    nonzero = total = 0
    for t in tensors:
        if t.is_floating_point():
            nonzero += int(torch.count_nonzero(t.detach()))
            total += t.numel()
    if total == 0:
        raise CompressionError("no floating-point parameters to measure")
    return nonzero / total


# --------------------------------------------------------------------------------------------------
# channel graph


@dataclass
class ChannelGroup:
    """Channel dimensions that must keep one width; ``fixed`` ones keep their original width."""

    gid: int
    width: int
    fixed: bool
    reason: str = ""
    members: list[tuple[str, str]] = field(default_factory=list)  # (conv name, "in" | "out")


@dataclass(frozen=True)
class ConvLayer:
    """A convolution module found by tracing, with the groups of its input and output channels."""

    name: str
    c_in: int
    c_out: int
    groups: int
    in_group: int
    out_group: int


@dataclass
class ChannelGraph:
    """Convolutions, their channel groups, and modules whose size follows a group (BatchNorm, PReLU)."""

    convs: dict[str, ConvLayer]
    groups: dict[int, ChannelGroup]
    followers: dict[str, int]  # module name -> group of the channels it acts on

    def free_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if not g.fixed]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


class _Recorder(TorchDispatchMode):
    """Records (op, args, kwargs, outputs) of every aten call; keeps the tensors alive so ids stay unique."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict, Any]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls.append((func, args, kwargs, out))
        return out


# Ops whose output has the channels of their first argument, one for one.
_PRESERVE = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "gelu",
    "silu",
    "silu_",
    "hardtanh",
    "hardtanh_",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "_prelu_kernel",
    "hardsigmoid",
    "hardswish",
    "mish",
    "avg_pool2d",
    "max_pool2d_with_indices",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "upsample_bilinear2d",
    "upsample_nearest2d",
    "upsample_bicubic2d",
    "_upsample_bilinear2d_aa",
    "reflection_pad2d",
    "replication_pad2d",
    "_softmax",
    "_log_softmax",
    "clone",
    "detach",
    "alias",
    "_to_copy",
    "native_dropout",
    "abs",
    "neg",
    "exp",
    "sqrt",
    "rsqrt",
    "pow",
    "clamp",
    "clamp_min",
    "clamp_max",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "native_batch_norm",
    "_native_batch_norm_legit_functional",
    "lift_fresh",
    "contiguous",
}
_VIEWS = {"view", "reshape", "_unsafe_view", "unsqueeze", "expand", "alias", "_reshape_alias"}
# Elementwise ops with broadcasting: equal channel counts are the same channels.
_BROADCAST = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum", "where", "rsub", "lerp"}


def _op_name(func: Any) -> str:
    return func.__name__.split(".")[0]


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _tensors(item)]
    return []


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _spatial_only(name: str, args: tuple, ins: list[torch.Tensor]) -> bool:
    """True for padding and slicing that touch only the spatial dims (channels pass through)."""
    if not ins or ins[0].dim() < 3:
        return False
    if name == "constant_pad_nd":
        return len(args[1]) <= 2 * (ins[0].dim() - 2)
    if name == "slice":
        return _norm_dim(int(args[1]) if len(args) > 1 else 0, ins[0].dim()) >= 2
    return False


def trace_channel_graph(model: nn.Module, *example_inputs: Any) -> ChannelGraph:
    """Run ``model(*example_inputs)`` once (eval mode, no grad) and work out its channel groups.

    Use small inputs: only shapes matter. Convolutions are the modules of type ``nn.Conv1d/2d/3d``;
    their ``groups`` must be 1 or depthwise (groups == in == out channels), other grouped convs are fixed.
    """
    conv_of: dict[int, str] = {}
    follower_of: dict[int, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            conv_of[id(module.weight)] = name
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            follower_of[id(module.weight)] = name
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            follower_of[id(module.running_mean)] = name
        elif isinstance(module, nn.PReLU) and module.num_parameters > 1:
            follower_of[id(module.weight)] = name
    if not conv_of:
        raise CompressionError(f"{type(model).__name__} has no convolution modules to compress")

    was_training = model.training
    recorder = _Recorder()
    model.eval()
    try:
        with torch.no_grad(), recorder:
            outputs = model(*example_inputs)
    finally:
        model.train(was_training)

    uf = _UnionFind()
    width: dict[Any, int] = {}
    fixed: dict[Any, str] = {}
    produced: set[int] = set()
    consumed: set[int] = set()
    followers: dict[str, Any] = {}
    convs: dict[str, dict[str, Any]] = {}

    def key(t: torch.Tensor) -> Any:
        k = ("t", id(t))
        if t.dim() >= 2:
            width[k] = int(t.shape[1])
        return k

    def fix(t: torch.Tensor, reason: str) -> None:
        if t.dim() >= 2:
            fixed.setdefault(key(t), reason)

    def link(a: torch.Tensor, b: torch.Tensor) -> None:
        if a.dim() >= 2 and b.dim() >= 2:
            uf.union(key(a), key(b))

    for func, args, kwargs, out in recorder.calls:
        name = _op_name(func)
        ins = _tensors(list(args) + list(kwargs.values()))
        outs = _tensors(out)
        for t in ins:
            if id(t) not in produced and id(t) not in conv_of and id(t) not in follower_of:
                fix(t, "network input or constant")
            consumed.add(id(t))
        for t in outs:
            produced.add(id(t))
        if name in _VIEWS and ins and id(ins[0]) in follower_of:
            for t in outs:  # e.g. PReLU reshapes its weight to (1, C, 1, 1) before use
                follower_of[id(t)] = follower_of[id(ins[0])]
        elif name in ("convolution", "_convolution") and id(args[1]) in conv_of:
            cname = conv_of[id(args[1])]
            x, weight, y = args[0], args[1], outs[0]
            transposed, groups = bool(args[6]), int(args[8])
            c_in = int(x.shape[1])
            c_out = int(y.shape[1])
            convs[cname] = {"c_in": c_in, "c_out": c_out, "groups": groups}
            uf.union(key(x), ("conv", cname, "in"))
            uf.union(key(y), ("conv", cname, "out"))
            width[("conv", cname, "in")], width[("conv", cname, "out")] = c_in, c_out
            if groups > 1 or transposed:
                if groups == c_in == c_out and not transposed:
                    uf.union(key(x), key(y))
                else:
                    fix(x, f"grouped or transposed convolution {cname}")
                    fix(y, f"grouped or transposed convolution {cname}")
            if weight.dim() != x.dim():
                fix(x, f"unexpected weight of {cname}")
        elif name in _PRESERVE and ins:
            for t in ins[1:]:
                if id(t) in follower_of and ins[0].dim() >= 2:
                    followers[follower_of[id(t)]] = key(ins[0])
            if ins[0].dim() >= 2:
                for t in outs:
                    if t.dim() == ins[0].dim() and t.dim() >= 2 and t.shape[1] == ins[0].shape[1]:
                        link(ins[0], t)
                    else:
                        fix(t, f"{name} output")
        elif _spatial_only(name, args, ins):
            link(ins[0], outs[0])
        elif name in _BROADCAST and outs and outs[0].dim() >= 2:
            y = outs[0]
            link_ok = True
            for t in ins:
                aligned = t.dim() - (y.dim() - 1)
                if aligned < 0:
                    continue
                if t.shape[aligned] == y.shape[1]:
                    if t.dim() == y.dim():
                        link(t, y)
                    else:
                        fix(t, f"broadcast in {name}")
                        link_ok = False
                elif t.dim() >= 2:
                    fix(t, f"channel broadcast in {name}")
            if not link_ok:
                fix(y, f"broadcast in {name}")
        elif name == "cat" and outs and outs[0].dim() >= 2:
            dim = _norm_dim(int(args[1]) if len(args) > 1 else int(kwargs.get("dim", 0)), outs[0].dim())
            if dim == 1:
                for t in [*ins, *outs]:
                    fix(t, "channel concatenation")
            else:
                for t in ins:
                    link(t, outs[0])
        else:
            for t in [*ins, *outs]:
                fix(t, f"op {name}")

    for t in _tensors(outputs if not isinstance(outputs, dict) else list(outputs.values())):
        fix(t, "network output")
    for func, _args, _kwargs, out in recorder.calls:
        first = _tensors(out)[:1]  # secondary results (pooling indices, dropout masks) may go unused
        for t in first:
            if id(t) not in consumed:
                fix(t, f"unused result of {_op_name(func)}")

    if not convs:
        raise CompressionError(f"no convolution of {type(model).__name__} ran in the traced forward pass")
    root_ids: dict[Any, int] = {}
    groups: dict[int, ChannelGroup] = {}

    def group_of(k: Any) -> int:
        root = uf.find(k)
        if root not in root_ids:
            gid = len(root_ids)
            root_ids[root] = gid
            groups[gid] = ChannelGroup(gid, width[k], False)
        return root_ids[root]

    # Only groups that touch a convolution matter; number those first, in execution order.
    for cname in convs:
        group_of(("conv", cname, "in"))
        group_of(("conv", cname, "out"))
    for k in width:
        root = uf.find(k)
        if root in root_ids and width[k] != groups[root_ids[root]].width:
            raise CompressionError(
                f"inconsistent channel counts traced around {k}: {width[k]} vs {groups[root_ids[root]].width}"
            )
    for k, reason in fixed.items():
        root = uf.find(k)
        if root in root_ids and not groups[root_ids[root]].fixed:
            groups[root_ids[root]].fixed, groups[root_ids[root]].reason = True, reason
    layers = {}
    for cname, info in convs.items():
        gin, gout = group_of(("conv", cname, "in")), group_of(("conv", cname, "out"))
        groups[gin].members.append((cname, "in"))
        groups[gout].members.append((cname, "out"))
        layers[cname] = ConvLayer(cname, info["c_in"], info["c_out"], info["groups"], gin, gout)
    follower_groups = {name: group_of(k) for name, k in followers.items()}
    return ChannelGraph(layers, groups, follower_groups)


# --------------------------------------------------------------------------------------------------
# solving for widths


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

    uf = _UnionFind()
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


# --------------------------------------------------------------------------------------------------
# rebuilding


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


# --------------------------------------------------------------------------------------------------
# the CDFI / AdaCoF architecture spec


def _spec_entries(spec: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Every width entry of a spec as a path, e.g. ("encoder", 0, 2) or ("heads", "Weight1", 1)."""
    paths: list[tuple[Any, ...]] = []
    for key, value in spec.items():
        if key in ("encoder", "decoder"):
            paths += [(key, i, j) for i, row in enumerate(value) for j in range(len(row))]
        elif key == "heads":
            paths += [(key, h, j) for h, row in value.items() for j in range(len(row))]
        elif key in ("features", "gridnet"):
            paths += [(key, i) for i in range(len(value))]
    return paths


def _get(spec: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        spec = spec[p]
    return spec


def _set(spec: Any, path: tuple[Any, ...], value: int) -> None:
    for p in path[:-1]:
        spec = spec[p]
    spec[path[-1]] = value


def _meta_model(name: str, kernel_size: int, dilation: int, spec: Mapping[str, Any]) -> nn.Module:
    from models import make_model

    with torch.device("meta"):
        return make_model(name, kernel_size, dilation, arch=copy.deepcopy(dict(spec)))


def spec_slots(name: str, kernel_size: int, dilation: int, spec: Mapping[str, Any]) -> dict[str, tuple]:
    """Which spec entry sets each conv's output width (convs whose output the spec does not set are absent).

    Found by building the model (on the meta device, no memory) from a probe spec in which every entry
    has its own width, so it follows whatever layout ``models`` gives the spec.
    """
    probe = copy.deepcopy(dict(spec))
    paths = _spec_entries(probe)
    # Probe widths start above every width the topology fixes (3, 6, 1, F*F, the GridNet input).
    base = 2 * (3 + sum(spec.get("features", []))) + kernel_size * kernel_size + 7
    for i, path in enumerate(paths):
        _set(probe, path, base + i)
    slot_of = {base + i: path for i, path in enumerate(paths)}
    model = _meta_model(name, kernel_size, dilation, probe)
    return {
        mname: slot_of[m.out_channels]
        for mname, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.out_channels in slot_of
    }


def arch_from_widths(
    name: str, kernel_size: int, dilation: int, base_spec: Mapping[str, Any], widths: Mapping[str, tuple[int, int]]
) -> dict[str, Any]:
    """The spec whose model has exactly these conv widths, or CompressionError naming the first misfit."""
    slots = spec_slots(name, kernel_size, dilation, base_spec)
    spec = copy.deepcopy(dict(base_spec))
    chosen: dict[tuple, tuple[int, str]] = {}
    for conv, path in slots.items():
        if conv not in widths:
            raise CompressionError(f"{conv}: no width given for this convolution")
        w = int(widths[conv][1])
        if path in chosen and chosen[path][0] != w:
            raise CompressionError(
                f"{conv}: output width {w} differs from {chosen[path][1]} ({chosen[path][0]}), "
                f"but the spec stores one width for both ({'.'.join(map(str, path))})"
            )
        chosen[path] = (w, conv)
        _set(spec, path, w)
    model = _meta_model(name, kernel_size, dilation, spec)
    for mname, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and mname in widths:
            got, want = (m.in_channels, m.out_channels), tuple(int(v) for v in widths[mname])
            if got != want:
                raise CompressionError(
                    f"{mname}: widths {want[0]}->{want[1]} do not connect; the spec gives {got[0]}->{got[1]}"
                )
    return spec


def spec_ties(name: str, kernel_size: int, dilation: int, spec: Mapping[str, Any]) -> list[list[str]]:
    """Groups of convs whose output width is one entry of the spec (to pass as ``ties``)."""
    by_path: dict[tuple, list[str]] = {}
    for conv, path in spec_slots(name, kernel_size, dilation, spec).items():
        by_path.setdefault(path, []).append(conv)
    return [convs for convs in by_path.values() if len(convs) > 1]


def published_densities(full: nn.Module, compressed: nn.Module) -> dict[str, float]:
    """Densities a pruned ``full`` model would need to give ``compressed``'s widths: c_in'c_out'/(c_in c_out)."""
    small = dict(compressed.named_modules())
    out = {}
    for name, m in full.named_modules():
        if isinstance(m, nn.Conv2d):
            s = small.get(name)
            if not isinstance(s, nn.Conv2d):
                raise CompressionError(f"{name}: missing from the compressed model")
            out[name] = (s.in_channels * s.out_channels) / (m.in_channels * m.out_channels)
    return out


# --------------------------------------------------------------------------------------------------
# sparsity reports (CSV shared by sparsity_report.py and compress.py)

REPORT_COLUMNS = ("layer", "c_in", "c_out", "nonzero", "total", "density", "reduced_in", "reduced_out")


def report_rows(layers: Sequence[LayerDensity]) -> list[dict[str, Any]]:
    """One dict per layer with the report's columns."""
    return [
        {
            "layer": d.name,
            "c_in": d.c_in,
            "c_out": d.c_out,
            "nonzero": d.nonzero,
            "total": d.total,
            "density": d.density,
            "reduced_in": d.reduced_in,
            "reduced_out": d.reduced_out,
        }
        for d in layers
    ]


def format_report(layers: Sequence[LayerDensity]) -> str:
    """A fixed-width text table of the report plus an overall line."""
    width = max(len("layer"), *(len(d.name) for d in layers))
    lines = [f"{'layer':<{width}}  {'c_in':>5} {'c_out':>5}  {'density':>8}  {'in_':>5} {'out_':>5}"]
    for d in layers:
        lines.append(
            f"{d.name:<{width}}  {d.c_in:>5} {d.c_out:>5}  {d.density:>8.4f}  {d.reduced_in:>5} {d.reduced_out:>5}"
        )
    nonzero, total = sum(d.nonzero for d in layers), sum(d.total for d in layers)
    lines.append(
        f"{'all convolutions':<{width}}  {'':>5} {'':>5}  {nonzero / total:>8.4f}  "
        f"({nonzero:,} of {total:,} weights nonzero)"
    )
    return "\n".join(lines)


def report_csv_text(layers: Sequence[LayerDensity]) -> str:
    """The report as CSV text (header = REPORT_COLUMNS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report_rows(layers):
        writer.writerow({**row, "density": f"{row['density']:.8f}"})
    return buffer.getvalue()


def read_report_csv(path: str | Path) -> list[LayerDensity]:
    """Read a CSV written by ``sparsity_report.py``; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CompressionError(f"{path}: sparsity report not found") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"layer", "c_in", "c_out", "nonzero", "total"} - set(reader.fieldnames or ())
    if missing:
        raise CompressionError(f"{path}: not a sparsity report (missing columns {', '.join(sorted(missing))})")
    layers = []
    for line, row in enumerate(reader, start=2):
        try:
            layer = LayerDensity(
                row["layer"], int(row["c_in"]), int(row["c_out"]), int(row["nonzero"]), int(row["total"])
            )
        except (TypeError, ValueError):
            raise CompressionError(f"{path}:{line}: bad numbers in row {row}") from None
        if not 0 <= layer.nonzero <= layer.total or layer.total <= 0:
            raise CompressionError(f"{path}:{line}: {layer.name}: nonzero must lie in [0, total]")
        layers.append(layer)
    if not layers:
        raise CompressionError(f"{path}: sparsity report has no rows")
    return layers


# --------------------------------------------------------------------------------------------------
# the whole path for make_model's networks


def check_layers(graph: ChannelGraph, layers: Sequence[LayerDensity], network: str) -> None:
    """Raise LayerMismatchError unless ``layers`` are exactly ``graph``'s convolutions with their channel counts.

    ``network`` names the traced network in the message, e.g. ``"adacof F5/D1"``. The first layer of
    ``layers`` (in their order) that the network lacks or has with other channel counts is named; then
    the first convolution that ``layers`` has no row for.
    """
    hint = "the densities are of another network (check --model, --kernel_size, --dilation and --arch)"
    seen = set()
    for layer in layers:
        conv = graph.convs.get(layer.name)
        if conv is None:
            raise LayerMismatchError(f"layer {layer.name} is not a convolution of {network}; {hint}")
        want = (conv.c_in // max(conv.groups, 1), conv.c_out)
        if (layer.c_in, layer.c_out) != want:
            raise LayerMismatchError(
                f"layer {layer.name} is {layer.c_in}->{layer.c_out} channels, but {want[0]}->{want[1]} "
                f"in {network}; {hint}"
            )
        seen.add(layer.name)
    absent = [name for name in graph.convs if name not in seen]
    if absent:
        raise LayerMismatchError(f"no row for layer {absent[0]} of {network}; {hint}")


@dataclass
class CompressedArch:
    """Result of :func:`compress_variant`: the spec to build, the widths per conv, the traced graph."""

    spec: dict[str, Any]
    widths: Widths
    graph: ChannelGraph
    full_params: int
    compressed_params: int


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def compress_variant(
    name: str,
    kernel_size: int,
    dilation: int,
    base_spec: Mapping[str, Any] | None,
    densities: Mapping[str, float],
    method: str = "product",
    trace_size: int = 32,
    balance: float = 0.0,
    layers: Sequence[LayerDensity] | None = None,
) -> CompressedArch:
    """Widths and architecture spec of ``make_model(name, ...)`` pruned to ``densities``.

    ``base_spec`` is the spec of the pruned network (None: the published one). The emitted spec is of
    family ``compressed_adacof`` for AdaCoF and ``cdfi_adacof`` for CDFI. Densities must name the
    model's convolutions; all 1.0 (an unpruned network) is an error. ``layers`` (the measured layers the
    densities come from) are checked against the traced network with :func:`check_layers`.
    """
    from models import make_model

    if densities and all(float(d) >= 1.0 for d in densities.values()):
        raise CompressionError(
            "every convolution has density 1.0: the weights are not sparse, so there is nothing to "
            "compress (prune the model with prune.py first)"
        )
    model = make_model(name, kernel_size, dilation, arch=copy.deepcopy(dict(base_spec)) if base_spec else None)
    spec = copy.deepcopy(model.arch)
    if spec["model"] == "adacof":
        spec["model"] = "compressed_adacof"
    out_name = "cdfi_adacof" if spec["model"] == "cdfi_adacof" else "compressed_adacof"
    frames = torch.rand(1, 3, trace_size, trace_size)
    graph = trace_channel_graph(model, frames, frames)
    if layers is not None:
        label = f"{name} F{kernel_size}/D{dilation}" + (" (given widths)" if base_spec else "")
        check_layers(graph, layers, label)
    unknown = sorted(set(densities) - set(graph.convs))
    if unknown:
        raise CompressionError(f"{unknown[0]}: density given for a layer that {name} does not have")
    slots = spec_slots(out_name, kernel_size, dilation, spec)
    ties = spec_ties(out_name, kernel_size, dilation, spec)
    unexpressed = [c for c in graph.convs if c not in slots]  # widths the spec format cannot change
    widths = solve_widths(graph, densities, method=method, ties=ties, keep_outputs=unexpressed, balance=balance)
    validate_widths(graph, widths)
    new_spec = arch_from_widths(out_name, kernel_size, dilation, spec, widths)
    small = _meta_model(out_name, kernel_size, dilation, new_spec)
    return CompressedArch(new_spec, widths, graph, _param_count(model), _param_count(small))
