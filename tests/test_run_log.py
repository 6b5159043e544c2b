"""cdfi.training.run_log: resume-safe CSVs (rows past the resumed step dropped, header follows the loss
terms), log.txt, and curves.png drawn from the CSVs' own columns."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from PIL import Image
from training_helpers import read_csv

from cdfi.training.run_log import EVAL_FIELDS, CsvLog, RunLog


def test_run_log_keeps_rows_up_to_the_resumed_step(tmp_path) -> None:
    """Reopening for a resume drops the rows past the resumed step and appends after the rest; a fresh start
    empties the CSVs; log.txt only grows."""
    with RunLog(tmp_path, ["Charb", "g_Spatial"], None) as log:
        for step in range(1, 5):
            log.loss.append({"step": step, "epoch": 1, "loss": step / 10, "Charb": 0.1, "ignored": "x"})
            log.val.append({"step": step, "psnr": 30 + step})
        log.line("first")
    with RunLog(tmp_path, ["Charb", "g_Spatial"], 2) as log:
        log.loss.append({"step": 3, "loss": 0.5})
        log.line("second")
    header, *lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert header == "step,epoch,minutes,lr,loss,Charb,g_Spatial,extra"
    assert [r["step"] for r in read_csv(tmp_path / "loss.csv")] == ["1", "2", "3"]
    assert lines[0] == "1,1,,,0.1,0.1,," and lines[2] == "3,,,,0.5,,,"
    assert [r["psnr"] for r in read_csv(tmp_path / "val.csv")] == ["31", "32"]
    assert [line.split(" ", 2)[2] for line in (tmp_path / "log.txt").read_text().splitlines()] == ["first", "second"]
    RunLog(tmp_path, ["Charb"], None).close()
    assert read_csv(tmp_path / "loss.csv") == [] and read_csv(tmp_path / "val.csv") == []


def test_csv_log_resume_rewrites_the_header_and_keeps_the_old_values(tmp_path) -> None:
    """A resumed run whose columns changed (a loss term added) gets the new header; the kept rows keep their
    values in the columns that still exist, and a step written as a float ("2.0") still counts as step 2."""
    path = tmp_path / "loss.csv"
    path.write_text("step,loss,Charb\n1,0.5,0.4\n2.0,0.25,0.2\n3,0.125,0.1\n")
    log = CsvLog(path, ["step", "loss", "Warp", "Charb"], keep_until_step=2)
    assert path.read_text().splitlines() == ["step,loss,Warp,Charb", "1,0.5,,0.4", "2.0,0.25,,0.2"]
    log.append({"step": 3, "loss": 0.1, "Warp": 0.05})
    assert [r["Warp"] for r in log.rows()] == ["", "", "0.05"]
    assert [p.name for p in tmp_path.iterdir()] == ["loss.csv"]  # the rewrite left no temporary file
    CsvLog(tmp_path / "new.csv", EVAL_FIELDS, keep_until_step=5)  # resuming without a CSV starts one
    assert (tmp_path / "new.csv").read_text() == ",".join(EVAL_FIELDS) + "\n"


def _trailing_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last k values at each point (fewer at the start), by cumulative sums."""
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(0, i - k)
    return (c[i] - c[lo]) / (i - lo)


def test_curves_png_plots_the_csv_columns(tmp_path, monkeypatch) -> None:
    """curves.png is a 1200x800 PNG whose curves are the CSVs' columns: the loss per step and its running
    mean over len/50 steps, Middlebury PSNR per epoch, validation PSNR and both baselines per step."""
    drawn: list[tuple[list[float], list[float]]] = []
    real_plot = Axes.plot

    def recording(self, x, y, *args, **kwargs):
        drawn.append((list(x), list(y)))
        return real_plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    rng = np.random.default_rng(3)
    losses = rng.uniform(0.05, 0.2, 120)
    with RunLog(tmp_path, ["Charb"], None) as log:
        for step, value in enumerate(losses, start=1):
            log.loss.append({"step": step, "loss": value})
        log.evals.append({"epoch": 1, "step": 60, "psnr": 30.5})
        log.evals.append({"epoch": 2, "step": 120, "psnr": 31.0})
        log.val.append({"step": 0, "minutes": 0.0, "psnr": 27.0, "overlay": 35.5, "dis_flow": 39.0})
        log.val.append({"step": 100, "minutes": 2.5, "psnr": 36.0, "overlay": 35.5, "dis_flow": 39.0})
        log.plot()
    with Image.open(tmp_path / "curves.png") as image:
        assert (image.format, image.size) == ("PNG", (1200, 800))
    steps = list(range(1, 121))
    assert drawn[0][0] == steps and np.allclose(drawn[0][1], losses, rtol=1e-12)
    assert drawn[1][0] == steps and np.allclose(drawn[1][1], _trailing_mean(losses, 120 // 50), rtol=1e-12)
    assert drawn[2] == ([1.0, 2.0], [30.5, 31.0])
    assert drawn[3:6] == [([0.0, 100.0], [27.0, 36.0]), ([0.0, 100.0], [35.5, 35.5]), ([0.0, 100.0], [39.0, 39.0])]
    assert drawn[6][0] == [0.0, 2.5]  # the same curves against wall-clock minutes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "eval.csv", "log.txt", "loss.csv", "val.csv"]
