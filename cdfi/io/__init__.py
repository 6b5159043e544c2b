"""Bottom layer: files, images, videos, checkpoints and data paths.

Nothing here imports from the rest of ``cdfi``, so ``datasets/`` and every other layer may use it.
"""
