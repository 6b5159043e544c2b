"""Training: configuration, the ``Trainer``, losses, model growing, monitoring and the run log."""
