"""benchmarks/compare_runs.py: the ablation table and figure from runs' val.csv files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("compare_runs", REPO / "benchmarks" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def _run(folder: Path, psnrs: list[float]) -> Path:
    folder.mkdir(parents=True)
    lines = ["step,epoch,minutes,cpu_minutes,psnr,overlay,dis_flow"]
    lines += [f"{300 * i},1,{5.0 * i},{4.0 * i},{p},35.5,39.25" for i, p in enumerate(psnrs)]
    (folder / "val.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_table_and_figure(tmp_path, capsys) -> None:
    a = _run(tmp_path / "a", [27.0, 35.5, 36.0])
    b = _run(tmp_path / "b", [27.0, 35.0])
    out = tmp_path / "cmp.png"
    assert compare_runs.main([f"He + Warp=recipe={a}", str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| He + Warp=recipe | 27.00 | 35.50 | 36.00 | +0.50 dB |" in text
    assert "| b | 27.00 | 35.00 |  | -0.50 dB |" in text
    assert "overlay (A+C)/2 35.50 dB, DIS flow 39.25 dB" in text
    assert Image.open(out).size[0] > 0


def test_missing_val_csv_is_a_one_line_error(tmp_path, capsys) -> None:
    assert compare_runs.main([str(tmp_path / "nothing")]) == 2
    assert "val.csv: not found" in capsys.readouterr().err
