"""cdfi.training.monitor: the loss rows, the validation rows and their baselines, best.pth on strict
improvements only (by the first metric a run scores by), and the published loop's bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from torch.utils.data import DataLoader
from training_helpers import make_middlebury, make_set, read_csv

from cdfi.io.checkpoint import load_checkpoint
from cdfi.training.config import EvalConfig
from cdfi.training.monitor import TrainingMonitor
from cdfi.training.optim import build_optimizer
from cdfi.training.run_log import RunLog
from cdfi.training.sampler import ResumableSampler
from cdfi.training.setup import middlebury_items
from cdfi.training.trainer import Trainer, TrainerOptions
from datasets.benchmark_sets import vimeo_test_items
from datasets.vimeo import VimeoTriplets
from models import make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(tmp_path: Path, lr: float = 1e-3) -> Trainer:
    data = VimeoTriplets(make_set(tmp_path / "data", count=2), augment=False)
    torch.manual_seed(0)
    model = make_model("compressed_adacof")
    loader = DataLoader(data, batch_size=1, sampler=ResumableSampler(data, seed=0), drop_last=True)
    optimizer = build_optimizer("ADAMax", [{"params": model.parameters(), "lr": lr}], lr)
    return Trainer(
        model,
        optimizer,
        loader,
        lambda out, gt: ((out["frame1"] - gt).abs().mean(), {}),
        None,
        TrainerOptions(checkpoint_path=tmp_path / "ck" / "last.pth", progress=False),
    )


def _bump(trainer: Trainer, value: float) -> None:
    """Set every weight of the model to ``value``, so a saved file shows which moment it holds."""
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(value)


def test_loss_rows_and_log_lines(tmp_path) -> None:
    trainer = _trainer(tmp_path, lr=2e-3)
    with RunLog(tmp_path / "run", ["L1"], None) as log:
        TrainingMonitor(trainer, log, tmp_path / "run" / "best.pth", log_every=2, progress=False).attach()
        trainer.fit(epochs=2)
    rows = read_csv(tmp_path / "run" / "loss.csv")
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert all(float(r["lr"]) == pytest.approx(2e-3) and float(r["loss"]) > 0 for r in rows)
    lines = [line.split(" ", 2)[2] for line in (tmp_path / "run" / "log.txt").read_text().splitlines()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1 step 2", "epoch 2 step 4"]
    # without any evaluation best.pth is the latest epoch
    assert load_checkpoint(tmp_path / "run" / "best.pth").epoch == 2


def test_best_pth_only_on_strict_improvements_and_one_metric(tmp_path) -> None:
    trainer = _trainer(tmp_path)
    best = tmp_path / "run" / "best.pth"
    with RunLog(tmp_path / "run", ["L1"], None) as log:
        monitor = TrainingMonitor(trainer, log, best, progress=False)
        for i, value in enumerate([30.0, 29.0, 31.0, 31.0]):
            _bump(trainer, float(i))
            trainer.step = 10 * (i + 1)
            monitor.keep_best("middlebury_psnr", value)
            saved = load_checkpoint(best)
            expected_at = {0: 0, 1: 0, 2: 2, 3: 2}[i]  # 29 is worse and the second 31 is no strict gain
            assert saved.meta["step"] == 10 * (expected_at + 1) and saved.meta["middlebury_psnr"] == [30, 30, 31, 31][i]
            assert all(torch.all(v == float(expected_at)) for k, v in saved.state_dict.items() if v.is_floating_point())
        _bump(trainer, 9.0)
        monitor.keep_best("val_psnr", 50.0)  # another metric never replaces the one the run scores by
        assert load_checkpoint(best).meta["step"] == 30
    assert trainer.extra_state["best_value"] == 31.0 and trainer.extra_state["best_step"] == 30


def test_validation_rows_carry_the_overlay_baseline(tmp_path, capsys) -> None:
    """val.csv: the untrained model at step 0, and the overlay (A+C)/2 scored as published (8-bit in float32
    arithmetic, skimage PSNR)."""
    val = make_set(tmp_path / "val", count=0, test=2)
    items = vimeo_test_items(val)
    trainer = _trainer(tmp_path)
    with RunLog(tmp_path / "run", ["L1"], None) as log:
        TrainingMonitor(trainer, log, tmp_path / "run" / "best.pth", validation=items, val_every=1).attach()
        trainer.train_step(next(iter(trainer.loader)))
    rows = read_csv(tmp_path / "run" / "val.csv")
    assert [int(r["step"]) for r in rows] == [0, 1]
    shown = [line for line in capsys.readouterr().out.splitlines() if "validation PSNR" in line]
    logged = [line for line in (tmp_path / "run" / "log.txt").read_text().splitlines() if "validation PSNR" in line]
    assert len(shown) == len(logged) == 2
    assert all(entry.endswith(line) for entry, line in zip(logged, shown, strict=True))
    scores = []
    for item in items:
        a, c, gt = (
            np.asarray(Image.open(p).convert("RGB"), np.float32) / 255 for p in (item.frame0, item.frame2, item.gt)
        )
        overlay = np.round((a + c) / np.float32(2) * np.float32(255)) / 255
        scores.append(peak_signal_noise_ratio(gt.astype(np.float64), overlay.astype(np.float64), data_range=1))
    assert float(rows[0]["overlay"]) == pytest.approx(np.mean(scores), abs=1e-4)
    assert load_checkpoint(tmp_path / "run" / "best.pth").meta["val_psnr"] == pytest.approx(
        max(float(r["psnr"]) for r in rows), abs=1e-9
    )


def test_published_loop_starts_from_the_untrained_score(tmp_path) -> None:
    """The untrained model's Middlebury PSNR is the best to beat (no file for it); an improvement after
    epoch N writes best.pth and model_epoch_<N+1>.pth with epoch N + 1."""
    inp, gt = make_middlebury(tmp_path / "mb")
    items = middlebury_items(EvalConfig(test_input=str(inp), test_gt=str(gt)))
    trainer = _trainer(tmp_path)
    best = tmp_path / "run" / "checkpoints" / "best.pth"
    best.parent.mkdir(parents=True)
    with RunLog(tmp_path / "run", ["L1"], None) as log:
        monitor = TrainingMonitor(trainer, log, best, middlebury=items, published_loop=True, progress=False)
        monitor.attach()
        start = float(read_csv(tmp_path / "run" / "eval.csv")[0]["psnr"])
        assert trainer.extra_state["best_value"] == start and not best.exists()
        trainer.epoch = 1
        monitor.keep_best("middlebury_psnr", start)  # equal: no strict improvement
        assert not best.exists()
        trainer.epoch = 2
        monitor.keep_best("middlebury_psnr", start + 0.5)
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pth", "model_epoch_003.pth"]
    assert load_checkpoint(best.parent / "model_epoch_003.pth").epoch == 3 and load_checkpoint(best).epoch == 2
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "run" / "eval.csv")] == [0]
