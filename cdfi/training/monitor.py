"""What a training run measures while it trains, as ``Trainer`` callbacks (used by ``train.py``).

A ``loss.csv`` row per step; validation PSNR on a held-out split every N steps, beside the overlay and
DIS-flow baselines (``val.csv``); Middlebury PSNR/SSIM every N epochs (``eval.csv``); and
``checkpoints/best.pth`` for the best score: Middlebury PSNR when it is measured, else validation PSNR,
else the latest epoch. Wall-clock and CPU minutes live in ``trainer.extra_state`` so that they add up
over resumed invocations, and the best score does too, so a resumed run keeps comparing against it.

With ``published_loop`` (``--published_loop``) the published train.py's bookkeeping is followed: the
untrained model is evaluated first and its Middlebury PSNR is the best to beat, and every strict
improvement also writes ``checkpoints/model_epoch_NNN.pth`` whose ``epoch`` counts from 1 before
training, as the published files do (our ``epoch`` counts finished epochs, one less).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from cdfi.evaluation.baselines import DISFlow, Overlay
from cdfi.evaluation.protocol import evaluate_items
from cdfi.io.checkpoint import save_checkpoint
from cdfi.training.run_log import RunLog
from cdfi.training.trainer import Trainer, format_parts, unwrap
from datasets.benchmark_sets import BenchmarkItem

__all__ = ["TrainingMonitor"]

PLOT_INTERVAL_S = 120  # matplotlib costs seconds: redraw after a validation at most this often


def _report(log: RunLog, text: str) -> None:
    """A measurement line: into ``log.txt`` and onto the console (above any progress bar)."""
    log.line(text)
    tqdm.write(text)


class TrainingMonitor:
    """Records, evaluates and keeps the best checkpoint of one run; ``attach`` hooks it into the trainer.

    Create it after ``trainer.resume`` (it reads the restored ``extra_state``). ``log`` is None on
    the processes other than the main one, which then record nothing.
    """

    def __init__(
        self,
        trainer: Trainer,
        log: RunLog | None,
        best_path: str | Path,
        *,
        middlebury: Sequence[BenchmarkItem] = (),
        validation: Sequence[BenchmarkItem] = (),
        log_every: int = 20,
        val_every: int = 200,
        test_every: int = 1,
        progress: bool = True,
        published_loop: bool = False,
    ) -> None:
        self.trainer = trainer
        self.log = log
        self.best_path = Path(best_path)
        self.middlebury = list(middlebury)
        self.validation = list(validation)
        self.log_every = log_every
        self.val_every = val_every
        self.test_every = test_every
        self.progress = progress
        self.published_loop = published_loop
        state = trainer.extra_state
        state.setdefault("minutes", 0.0)
        state.setdefault("cpu_minutes", 0.0)
        self._base_minutes, self._base_cpu = state["minutes"], state["cpu_minutes"]
        self._cpu_start = time.process_time()
        self._last_plot = time.monotonic()

    def attach(self) -> None:
        """Install ``on_step`` and ``on_epoch_end`` on the trainer, and validate the untrained model of a
        fresh run (step 0, the start of the validation curve); with ``published_loop`` evaluate it on
        Middlebury too, as the best score to beat."""
        self.trainer.on_step = self.on_step
        self.trainer.on_epoch_end = self.on_epoch_end
        if self.log is None or self.trainer.step != 0:
            return
        if self.validation:
            self.validate()
        if self.published_loop and self.middlebury and "best_metric" not in self._state:
            psnr = self.evaluate_middlebury(keep=False)
            if psnr is not None:
                self._state.update(best_metric="middlebury_psnr", best_value=psnr, best_step=0)

    # -------------------------------------------------------------------- callbacks

    def on_step(self, trainer: Trainer, parts: dict[str, float]) -> None:
        """A ``loss.csv`` row, a log line every ``log_every`` steps, validation every ``val_every``."""
        if self.log is None:
            return
        self._clock()
        group = trainer.optimizer.param_groups[0]
        self.log.loss.append(
            {
                "step": trainer.step,
                "epoch": trainer.epoch + 1,
                "minutes": f"{self._state['minutes']:.3f}",
                "lr": group["lr"] / group.get("lr_factor", 1.0),
                **parts,
            }
        )
        if trainer.step % self.log_every == 0:
            self.log.line(f"epoch {trainer.epoch + 1} step {trainer.step}: {format_parts(parts)}")
        if self.validation and trainer.step % self.val_every == 0:
            self.validate()

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Middlebury every ``test_every`` epochs (or, without any evaluation, best.pth = this epoch); plot."""
        if self.log is None:
            return
        if self.middlebury and trainer.epoch % self.test_every == 0:
            self.evaluate_middlebury()
        if not self.middlebury and not self.validation:
            save_checkpoint(self.best_path, self._model, trainer.epoch, extra={"step": trainer.step})
        self.log.plot()

    # -------------------------------------------------------------------- measurements

    def validate(self) -> None:
        """PSNR on the validation split (the baselines' once per run) into ``val.csv``; best.pth by it
        when there is no Middlebury evaluation."""
        state, trainer, log = self._state, self.trainer, self.log
        if not self.validation or log is None:
            return
        if "val_overlay" not in state:
            state["val_overlay"] = self._mean_psnr(Overlay())
            state["val_dis_flow"] = self._mean_psnr(DISFlow())
        result = evaluate_items(
            self._model, self.validation, None, device=trainer.device, progress=False, print_rows=False
        )
        value = result.mean()["psnr"]
        self._clock()
        log.val.append(
            {
                "step": trainer.step,
                "epoch": trainer.epoch + 1,
                "minutes": f"{state['minutes']:.3f}",
                "cpu_minutes": f"{state['cpu_minutes']:.3f}",
                "psnr": value,
                "overlay": state["val_overlay"],
                "dis_flow": state["val_dis_flow"],
            }
        )
        _report(
            log,
            f"step {trainer.step}: validation PSNR {value:.3f} dB (overlay {state['val_overlay']:.3f}, "
            f"DIS flow {state['val_dis_flow']:.3f}) on {len(result.rows)} triplets",
        )
        if value is not None and not self.middlebury:
            self.keep_best("val_psnr", value)
        if time.monotonic() - self._last_plot > PLOT_INTERVAL_S:  # the final plot is always made
            log.plot()
            self._last_plot = time.monotonic()

    def evaluate_middlebury(self, keep: bool = True) -> float | None:
        """Middlebury PSNR/SSIM into ``eval.csv``; best.pth by its PSNR (``keep``); returns the PSNR."""
        trainer, log = self.trainer, self.log
        if log is None:
            return None
        result = evaluate_items(
            self._model, self.middlebury, None, device=trainer.device, progress=self.progress, print_rows=False
        )
        mean = result.mean()
        self._clock()
        log.evals.append(
            {
                "epoch": trainer.epoch,
                "step": trainer.step,
                "minutes": f"{self._state['minutes']:.3f}",
                "psnr": mean["psnr"],
                "ssim": mean["ssim"],
            }
        )
        _report(log, f"epoch {trainer.epoch}: Middlebury PSNR {mean['psnr']:.3f} dB, SSIM {mean['ssim']:.4f}")
        if keep and mean["psnr"] is not None:
            self.keep_best("middlebury_psnr", mean["psnr"])
        return mean["psnr"]

    def keep_best(self, metric: str, value: float) -> None:
        """Save best.pth when ``value`` beats the best so far; a run keeps the first metric it scored by."""
        state, trainer = self._state, self.trainer
        if state.get("best_metric") not in (None, metric):
            return
        if value > state.get("best_value", float("-inf")):
            state.update(best_metric=metric, best_value=value, best_step=trainer.step)
            extra = {"step": trainer.step, metric: value}
            save_checkpoint(self.best_path, self._model, trainer.epoch, extra=extra)
            saved = "best.pth"
            if self.published_loop and metric == "middlebury_psnr":
                # The published loop numbers its epochs from 1 before training: after N epochs it is at N + 1.
                name = f"model_epoch_{trainer.epoch + 1:03d}.pth"
                save_checkpoint(self.best_path.with_name(name), self._model, trainer.epoch + 1, extra=extra)
                saved += f" and {name}"
            if self.log is not None:
                _report(self.log, f"best {metric} {value:.3f} dB at step {trainer.step}: saved {saved}")

    # -------------------------------------------------------------------- helpers

    @property
    def _state(self) -> dict[str, Any]:
        return self.trainer.extra_state

    @property
    def _model(self) -> nn.Module:
        """The trained model without its ``DistributedDataParallel`` wrapper (what best.pth holds)."""
        return unwrap(self.trainer.model)

    def _mean_psnr(self, model: nn.Module) -> float | None:
        return evaluate_items(model, self.validation, None, progress=False, print_rows=False).mean()["psnr"]

    def _clock(self) -> None:
        """Total wall-clock and CPU minutes of the run, over all its invocations, into ``extra_state``."""
        self._state["minutes"] = self._base_minutes + self.trainer.minutes()
        self._state["cpu_minutes"] = self._base_cpu + (time.process_time() - self._cpu_start) / 60
