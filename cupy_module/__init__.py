"""The AdaCoF warp (adaptive collaboration of flows), the operation every CDFI model is built on.

The name is kept from the published code, where this package held the CuPy kernel. Importing it never
needs CuPy or a GPU.
"""

from cupy_module.adacof import adacof_warp
from cupy_module.reference import SAMPLING_RULES, adacof_warp_reference

__all__ = ["SAMPLING_RULES", "adacof_warp", "adacof_warp_reference"]
