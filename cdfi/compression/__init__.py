"""Model compression, one concept per module (the package itself imports none of them):

* ``densities``: per-layer densities of a state dict, the sqrt rule;
* ``tracing``: channel groups of any ``nn.Module`` by tracing one forward pass (no model knowledge);
* ``widths``: the width solver (``product`` and ``sqrt`` methods), width checks, rebuilding a module;
* ``spec``: CDFI/AdaCoF architecture specs and published widths (the only module importing ``models``);
* ``report``: the sparsity report (tables, CSV, bar chart);
* ``compressor``: a pruned checkpoint or report to a compressed spec (``compress.py``);
* ``pruning``: OBProxSG pruning of a trained model (``prune.py``);
* ``extended``: what the ``extended_version/`` scripts need: the published flags, the
  ``model_weights/<uid>`` run folder, the published per-epoch test and the published report;
* ``errors``: ``CompressionError``, ``LayerMismatchError``.
"""
