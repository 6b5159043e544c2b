"""Channel groups of any ``nn.Module``, found by tracing one forward pass (no model-family knowledge).

:func:`trace_channel_graph` runs the network under a dispatch mode that records every aten op and works
out which channel dimensions are the same "channel group" (conv output -> ReLU -> pool -> next conv
input, both operands of an add, ...). A group that reaches something whose channel layout cannot change
(the network's input or output, a reshape, a channel concatenation, an op not known here) is fixed.
:func:`check_layers` checks that measured layers (a report, a checkpoint) are the traced convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cdfi.compression.densities import LayerDensity
from cdfi.compression.errors import CompressionError, LayerMismatchError

__all__ = ["ChannelGraph", "ChannelGroup", "ConvLayer", "UnionFind", "check_layers", "trace_channel_graph"]


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


class UnionFind:
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

    uf = UnionFind()
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
