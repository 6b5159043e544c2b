"""Core library of the CDFI reproduction: the logic every script shares (checkpoints, images, paths,
metrics, training, inference). The public faces (``models``, ``cupy_module``, the scripts) import it."""
