"""Training: the typed configuration, the ``Trainer`` and what ``train.py`` builds around it.

- ``config``: ``TrainConfig`` (six self-validating groups), recipes (``recipes/*.json``), ``args.json``;
- ``setup``: a config and a ``Runtime`` to a ready ``Trainer`` (model, data, optimizer, run folder);
- ``run``: one ``train.py`` invocation (resume, record, evaluate, fit);
- ``trainer``: the loop (steps, resume, checkpoints, NaN guard); ``optim``: optimizer and schedule
  factories; ``init``: initialisers; ``grow``: a trained AdaCoF copied into a wider model or CDFI;
  ``sampler``: the resumable sampler; ``rng``: generator states for ``last.pth``;
- ``losses``: the published loss strings and the auxiliary losses;
- ``monitor``: validation, Middlebury and ``best.pth`` as trainer callbacks; ``run_log``: the CSVs,
  ``log.txt`` and ``curves.png``.
"""
