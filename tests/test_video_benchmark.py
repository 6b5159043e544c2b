"""benchmarks/video_conversion.py: its disc finder recovers the sub-pixel position the scene was drawn at
(what its motion figures rest on), FFmpeg's duplication places each frame at the nearest input, and its
bad arguments are one line (exit 2)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_video_conversion", REPO / "benchmarks" / "video_conversion.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_disc_is_found_where_it_was_drawn() -> None:
    bench = _benchmark()
    scene = bench.DiscScene(128, 72, radius=18, speed=96, x0=40)
    rng = np.random.default_rng(0)
    for x in rng.uniform(30, 90, 6):
        frame = np.round(scene.render(x) * 255) / 255  # as an 8-bit video frame holds it
        assert abs(scene.locate(frame, x + rng.uniform(-2, 2), 4) - x) <= 0.05


def test_duplication_shows_the_nearest_earlier_input(tmp_path: Path) -> None:
    """FFmpeg's fps filter at 60 from 24 fps: each output frame is an input frame, never a blend, and the disc
    in it is where that input drew it."""
    bench = _benchmark()
    scene = bench.DiscScene(96, 64, radius=12, speed=96, x0=30)
    src = tmp_path / "disc.mkv"
    bench.write_scene(scene, src, 5, 24)
    inputs = [np.round(scene.render(scene.position(i / 24)) * 255) / 255 for i in range(5)]
    out = bench.ffmpeg_filter(src, "fps", "60")
    assert [round(t * 60) for t, _ in out[:6]] == list(range(6))
    for _t, frame in out:
        assert min(np.abs(frame - f).max() for f in inputs) < 1e-9


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--skip", "speed"], "--skip: unknown part(s) speed"), (["--frames", "1"], "--frames must be at least 2, got 1")],
)
def test_bad_arguments_are_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _benchmark().main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
