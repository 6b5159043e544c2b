"""Interpolating frames: the ``Interpolator`` (pairs, batches, tiles, 2^k sequences), pre-alignment,
self-ensemble, kernel-motion read-out and the command-line plumbing of the inference scripts."""
