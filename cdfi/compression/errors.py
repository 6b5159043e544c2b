"""The errors of the compression package (all ``ValueError``: bad input, exit 2 in the scripts)."""

from __future__ import annotations

__all__ = ["CompressionError", "LayerMismatchError"]


class CompressionError(ValueError):
    """Densities, widths or specs that cannot be turned into a consistent compressed network."""


class LayerMismatchError(CompressionError):
    """Measured layers (a sparsity report or a checkpoint) that are not the convolutions of the network."""
