"""Architecture specs: the channel widths of a kernel-estimation network, as a JSON-able dict.

A spec fixes every width that pruning can change; everything else (input widths, the F*F head outputs,
the skip additions) follows from the topology. The published variants ship as ``models/arch/*.json``,
and ``compress.py`` writes specs in the same format, so a compressed model is just another spec.

Format::

    {"model": "compressed_adacof", "kernel_size": 5, "dilation": 1,
     "encoder": [[c, c, c] x 5 levels],          # three 3x3 convs per level, level 1 first
     "decoder": [[c, c, c] x 4 levels],          # levels 5, 4, 3, 2
     "heads": {"Weight1": [c, c, c], ...},      # three hidden convs of each head
     "features": [4, 8, 12, 16, 20],            # cdfi_adacof only: the five 1x1 convs
     "gridnet": [32, 64, 96]}                   # cdfi_adacof only: GridNet row widths
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCH_DIR = Path(__file__).resolve().parent / "arch"

ADACOF_HEADS = ("Weight1", "Alpha1", "Beta1", "Weight2", "Alpha2", "Beta2", "Occlusion")
CDFI_HEADS = (*ADACOF_HEADS, "Blend")

Spec = dict[str, Any]


class ArchSpecError(ValueError):
    """An architecture spec that cannot be built, with the offending entry named."""


def published_arch(name: str, kernel_size: int, dilation: int) -> Spec:
    """The published widths of ``name`` at F/D, or an error listing what exists."""
    path = ARCH_DIR / f"{name}_F_{kernel_size}_D_{dilation}.json"
    if not path.is_file():
        known = sorted(p.stem for p in ARCH_DIR.glob("*.json"))
        raise ArchSpecError(f"no published architecture {path.stem}; published variants: {', '.join(known)}")
    return load_arch(path)


def load_arch(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchSpecError(f"{path}: architecture spec not found") from None
    except json.JSONDecodeError as exc:
        raise ArchSpecError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        validate_arch(spec)
    except ArchSpecError as exc:
        raise ArchSpecError(f"{path}: {exc}") from None
    return spec


def _widths(spec: Spec, key: str, count: int, where: str) -> list[int]:
    value = spec.get(key) if key else spec
    if not isinstance(value, list) or len(value) != count:
        raise ArchSpecError(f"{where} must be a list of {count} widths, got {value!r}")
    for w in value:
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ArchSpecError(f"{where} holds {w!r}; widths must be positive integers")
    return value


def validate_arch(spec: Spec) -> None:
    """Check that a spec names every layer a model of its family needs, with positive widths."""
    if not isinstance(spec, dict):
        raise ArchSpecError("an architecture spec must be a JSON object")
    model = spec.get("model")
    if model not in ("adacof", "compressed_adacof", "cdfi_adacof"):
        raise ArchSpecError(f"unknown model {model!r} in spec")
    for key, levels in (("encoder", 5), ("decoder", 4)):
        rows = spec.get(key)
        if not isinstance(rows, list) or len(rows) != levels:
            raise ArchSpecError(f"'{key}' must list {levels} levels")
        for i, row in enumerate(rows):
            _widths({"w": row}, "w", 3, f"{key}[{i}]")
    heads = spec.get("heads")
    needed = CDFI_HEADS if model == "cdfi_adacof" else ADACOF_HEADS
    if not isinstance(heads, dict) or set(heads) != set(needed):
        raise ArchSpecError(f"'heads' must name exactly {', '.join(needed)}")
    for name in needed:
        _widths(heads, name, 3, f"heads.{name}")
    if model == "cdfi_adacof":
        _widths(spec, "features", 5, "features")
        _widths(spec, "gridnet", 3, "gridnet")
