"""Model zoo of the published CDFI work, built by name through ``make_model``.

>>> model = make_model("cdfi_adacof", kernel_size=11, dilation=2)
"""

from __future__ import annotations

from pathlib import Path

from models.adacof import AdaCoF, CompressedAdaCoF, WarpingModel
from models.arch import ArchSpecError, Spec, load_arch, published_arch, validate_arch
from models.cdfi_adacof import CDFIAdaCoF

# The warp sampling rule of the published CUDA kernel, which published checkpoints need (cupy_module).
DEFAULT_SAMPLING = "trunc"

MODELS: dict[str, type[WarpingModel]] = {
    "adacof": AdaCoF,
    "compressed_adacof": CompressedAdaCoF,
    "cdfi_adacof": CDFIAdaCoF,
}

# The (kernel size, dilation) pairs the paper published weights for.
PUBLISHED_VARIANTS: dict[str, tuple[tuple[int, int], ...]] = {
    "adacof": ((5, 1), (11, 2)),
    "compressed_adacof": ((5, 1), (11, 2)),
    "cdfi_adacof": ((11, 2),),
}

DEFAULT_SIZES: dict[str, tuple[int, int]] = {
    "adacof": (5, 1),
    "compressed_adacof": (5, 1),
    "cdfi_adacof": (11, 2),
}


def list_models() -> list[str]:
    """Names accepted by ``make_model``."""
    return sorted(MODELS)


def variant_name(name: str, kernel_size: int, dilation: int) -> str:
    """The published naming scheme, e.g. ``compressed_adacof_F_5_D_1``."""
    return f"{name}_F_{kernel_size}_D_{dilation}"


def make_model(
    name: str,
    kernel_size: int | None = None,
    dilation: int | None = None,
    arch: Spec | str | Path | None = None,
    sampling: str = "trunc",
    legacy_grad: bool = False,
) -> WarpingModel:
    """Build a model by name.

    Without ``arch`` the published widths are used; kernel size and dilation default to the published
    pair of the family. ``arch`` (a spec dict or a JSON path, e.g. from ``compress.py``) gives other
    widths; the family then comes from the spec.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    default_k, default_d = DEFAULT_SIZES[name]
    kernel_size = default_k if kernel_size is None else int(kernel_size)
    dilation = default_d if dilation is None else int(dilation)
    if arch is None:
        spec = _arch_for(name, kernel_size, dilation)
    else:
        spec = load_arch(arch) if isinstance(arch, (str, Path)) else arch
        validate_arch(spec)
        family = "cdfi_adacof" if spec["model"] == "cdfi_adacof" else spec["model"]
        if (family == "cdfi_adacof") != (name == "cdfi_adacof"):
            raise ArchSpecError(f"architecture spec is for {spec['model']}, not {name}")
    return MODELS[name](kernel_size, dilation, spec, sampling=sampling, legacy_grad=legacy_grad)


def _arch_for(name: str, kernel_size: int, dilation: int) -> Spec:
    """Published widths for this family. Widths do not depend on the dilation, and only the full
    AdaCoF's last hidden head layer depends on F (it has F*F channels), so unpublished F/D pairs reuse
    the nearest published spec."""
    pairs = PUBLISHED_VARIANTS[name]
    if (kernel_size, dilation) in pairs:
        return published_arch(name, kernel_size, dilation)
    k, d = min(pairs, key=lambda p: abs(p[0] - kernel_size))
    spec = published_arch(name, k, d)
    if name == "adacof":
        spec["heads"] = {
            h: [*w[:2], kernel_size * kernel_size] if h[:-1] in ("Weight", "Alpha", "Beta") else w
            for h, w in spec["heads"].items()
        }
    spec["kernel_size"], spec["dilation"] = kernel_size, dilation
    return spec


__all__ = [
    "DEFAULT_SAMPLING",
    "DEFAULT_SIZES",
    "MODELS",
    "PUBLISHED_VARIANTS",
    "AdaCoF",
    "ArchSpecError",
    "CDFIAdaCoF",
    "CompressedAdaCoF",
    "WarpingModel",
    "list_models",
    "load_arch",
    "make_model",
    "published_arch",
    "variant_name",
]
