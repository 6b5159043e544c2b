"""The GPU training sprint: fine-tune both shipped models for a fixed wall-clock budget on a borrowed GPU.

``bundle`` packs the footage and the validation split small enough to travel (and decodes it there),
``device_data`` keeps the frames on the device and cuts batches there, ``loop`` trains one model for a
slot of wall-clock time without host synchronisation, ``run`` puts it together with the checks up
front, and ``report`` writes the curves and the summary. ``scripts/pack_sprint_data.py`` and
``scripts/gpu_sprint.py`` are the command lines; ``checkpoints/MODEL_CARD.md`` ("GPU training sprint")
gives the prepared device command.
"""
