"""One ``train.py`` invocation as a library call: set the run up, resume it, record and evaluate it
while it trains, and say how it stopped."""

from __future__ import annotations

import contextlib
import sys

from cdfi.runtime import Runtime
from cdfi.training.config import TrainConfig
from cdfi.training.monitor import TrainingMonitor
from cdfi.training.run_log import RunLog
from cdfi.training.setup import setup_run
from cdfi.training.trainer import NonFiniteLossError

__all__ = ["EXIT_NONFINITE", "train"]

EXIT_NONFINITE = 3  # the loss became NaN/inf; the last good checkpoint is kept


def train(
    config: TrainConfig,
    runtime: Runtime,
    resume: str | None = None,
    force: bool = False,
    command: str = "",
) -> int:
    """Train as ``config`` says on ``runtime``; returns the exit status (0, or ``EXIT_NONFINITE``).

    ``resume`` and ``force`` are those of ``setup_run``; ``command`` is logged at a fresh start. With
    ``--published_loop`` the run trains ``epochs - 1`` epochs, as the published loop does."""
    setup = setup_run(config, runtime, resume, force)
    trainer = setup.trainer
    epochs = config.optimisation.epochs - (1 if config.run.published_loop else 0)
    with contextlib.ExitStack() as stack:
        stack.callback(setup.close)
        if setup.resume_path is not None:
            trainer.resume(setup.resume_path)
        log = None
        if setup.is_main:
            keep = trainer.step if setup.resume_path is not None else None
            log = stack.enter_context(RunLog(setup.run_dir, [t.name for t in setup.criterion.terms], keep))
            if setup.resume_path is not None:
                log.line(f"resumed from {setup.resume_path} at epoch {trainer.epoch}, step {trainer.step}")
            else:
                log.line(f"start: {command}")
            log.line(f"runtime: {runtime.describe()}, {setup.world} process(es); recipe {config.recipe}")
        monitor = TrainingMonitor(
            trainer,
            log,
            setup.checkpoint_dir / "best.pth",
            middlebury=setup.middlebury,
            validation=setup.validation,
            log_every=config.run.log_every,
            val_every=config.evaluation.val_every,
            test_every=config.evaluation.test_every,
            progress=not config.run.quiet,
            published_loop=config.run.published_loop,
        )
        monitor.attach()
        try:
            result = trainer.fit(epochs, max_steps=config.run.max_steps, max_minutes=config.run.max_minutes)
        except NonFiniteLossError as exc:
            if log is not None:
                log.line(f"stopped: {exc}")
            print(f"train: error: {exc}", file=sys.stderr)
            return EXIT_NONFINITE
        if log is not None:
            log.plot()
            message = {
                "done": f"finished {result.epoch} epochs ({result.step} steps)",
                "max_steps": f"stopped at --max_steps after step {result.step}; continue with --resume",
                "max_minutes": f"stopped after {config.run.max_minutes} minutes at step {result.step}; "
                "continue with --resume",
            }[result.reason]
            log.line(message)
            print(f"{setup.run_dir}: {message}")
    return 0
