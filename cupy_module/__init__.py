"""The AdaCoF warp (adaptive collaboration of flows), the operation every CDFI model is built on.

The name is kept from the published code, where this package held the CuPy kernel. Importing it never
needs CuPy, a GPU or a compiler: the compiled backends are built or loaded on first use.
"""

from cupy_module.adacof import BACKENDS, adacof_warp, adacof_warp_many, resolve_backend
from cupy_module.reference import SAMPLING_RULES, adacof_warp_reference

__all__ = [
    "BACKENDS",
    "SAMPLING_RULES",
    "adacof_warp",
    "adacof_warp_many",
    "adacof_warp_reference",
    "resolve_backend",
]
