"""A pruned checkpoint (or its sparsity report) to a compressed architecture spec: ``compress.py``'s work.

Each layer's density says how many of its weights survived pruning; :func:`compress_to_spec` picks
widths that keep about that many weights, consistently across connected layers and skip additions
(``cdfi.compression.spec.compress_variant``), prints the old and new widths and writes the spec as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdfi.compression.densities import conv_densities
from cdfi.compression.errors import CompressionError, LayerMismatchError
from cdfi.compression.report import read_report_csv
from cdfi.compression.spec import CompressedArch, compress_variant, default_sizes, load_spec
from cdfi.io.atomic import atomic_write_text, ensure_writable
from cdfi.io.checkpoint import load_checkpoint, requested_variant

__all__ = ["CompressRequest", "CompressResult", "compress_to_spec"]


@dataclass(frozen=True)
class CompressRequest:
    """Where the densities come from (``checkpoint`` or ``report``, one of them), the pruned network's
    variant (required with ``report``; with ``checkpoint`` only checked), and the solver options."""

    out: Path
    checkpoint: Path | None = None
    report: Path | None = None
    model: str | None = None
    kernel_size: int | None = None
    dilation: int | None = None
    arch: Path | None = None
    method: str = "product"
    balance: float = 0.0
    threshold: float = 0.0
    force: bool = False


@dataclass(frozen=True)
class CompressResult:
    """The written spec's path, the variant it compresses and the solver's result."""

    out: Path
    model: str
    kernel_size: int
    dilation: int
    arch: CompressedArch


def compress_to_spec(request: CompressRequest) -> CompressResult:
    """Solve the widths, print old -> new per layer and the parameter counts, write the spec atomically.

    Raises ``ValueError`` (bad input: a report of another network, an unpruned checkpoint, options that
    contradict the checkpoint) or ``FileExistsError`` (``out`` exists without ``force``) before writing.
    """
    if (request.checkpoint is None) == (request.report is None):
        raise CompressionError("give exactly one of a checkpoint or a sparsity report")
    out = ensure_writable(request.out, request.force)
    base_spec: dict[str, Any] | None = None
    if request.checkpoint is not None:
        ckpt = load_checkpoint(request.checkpoint)
        # Options that contradict the checkpoint are refused, not silently ignored.
        name, k, d = requested_variant(ckpt, request.model, request.kernel_size, request.dilation)
        base_spec = ckpt.meta.get("arch")
        layers = conv_densities(ckpt.state_dict, threshold=request.threshold)
        source = request.checkpoint
    else:
        if request.model is None:
            raise CompressionError("--report needs --model (and --kernel_size/--dilation unless published)")
        name = request.model
        k = request.kernel_size or default_sizes(name)[0]
        d = request.dilation or default_sizes(name)[1]
        layers = read_report_csv(request.report)
        source = request.report
    if request.arch is not None:
        base_spec = load_spec(request.arch)
    densities = {layer.name: layer.density for layer in layers}
    if all(v >= 1.0 for v in densities.values()):
        raise CompressionError(f"{source}: every layer has density 1.0 (no sparsity); prune it with prune.py first")
    try:
        result = compress_variant(
            name, k, d, base_spec, densities, method=request.method, balance=request.balance, layers=layers
        )
    except LayerMismatchError as exc:
        raise CompressionError(f"{source}: {exc}") from None
    for conv_name, (c_in, c_out) in result.widths.items():
        layer = result.graph.convs[conv_name]
        print(
            f"{conv_name:<40} {layer.c_in:>4}->{layer.c_out:<4}  =>  {c_in:>4}->{c_out:<4}"
            f"  density {densities.get(conv_name, 1.0):.4f}"
        )
    print(
        f"parameters: {result.full_params:,} -> {result.compressed_params:,} "
        f"({result.compressed_params / result.full_params:.1%})"
    )
    atomic_write_text(out, json.dumps(result.spec, indent=1) + "\n", force=request.force)
    return CompressResult(out, name, k, d, result)
