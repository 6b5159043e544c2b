"""The CDFI/AdaCoF part of compression: architecture specs, published widths, the whole path from
densities to a spec that ``models.make_model`` builds. The only module of the package that imports
``models``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdfi.compression.densities import LayerDensity
from cdfi.compression.errors import CompressionError
from cdfi.compression.tracing import ChannelGraph, check_layers, trace_channel_graph
from cdfi.compression.widths import Widths, solve_widths, validate_widths
from models import DEFAULT_SIZES, make_model
from models.arch import load_arch

__all__ = [
    "CompressedArch",
    "arch_from_widths",
    "compress_variant",
    "default_sizes",
    "load_spec",
    "published_densities",
    "spec_slots",
    "spec_ties",
]


def default_sizes(name: str) -> tuple[int, int]:
    """The (kernel size, dilation) of model family ``name`` when none are given."""
    if name not in DEFAULT_SIZES:
        raise CompressionError(f"unknown model {name!r}; choose one of {', '.join(DEFAULT_SIZES)}")
    return DEFAULT_SIZES[name]


def load_spec(path: str | Path) -> dict[str, Any]:
    """An architecture spec JSON file (``--arch``), checked by ``models.arch``."""
    return load_arch(path)


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
