"""Video conversion end to end on 64x48 clips: any output rate (against the interpolator's own 2^k
recursion and against the ideal linear motion of a stand-in model), the sound kept (sample for sample
when remuxed, pitch kept when stretched), every codec (decodable, pixel format family and colour tags
kept, FFV1 exact), the other tracks, and every kind of bad input as one line with nothing written.

Videos are made and read with PyAV directly (``video_helpers``); the stand-in model's midpoint is the
mean of its inputs, so a node at time tau of a pair is exactly (1 - tau) a + tau b."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from inference_helpers import lively_model, load_rgb, save_lively, save_rgb
from video_helpers import (
    SAMPLE_RATE,
    SINE_HZ,
    MeanModel,
    flat_frames,
    peak_hz,
    read_audio,
    read_frames,
    stream_info,
    write_clip,
    write_garbage_audio_clip,
    write_irregular_clip,
)

import cdfi.io.video
import interpolate_video
from cdfi.inference.interpolator import Interpolator
from cdfi.inference.video import ConversionOptions, convert_video, prepare_conversion
from cdfi.inference.video.timing import Timeline
from cdfi.io.paths import REPO_ROOT
from cdfi.io.video import CODECS, MANIFEST, FrameNaming, VideoError, encoder_available

H, W = 48, 64
VALUES = [0.0, 60.0, 90.0, 200.0, 120.0, 250.0]


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """One intra-op thread (the test machine is shared)."""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_lively(tmp_path_factory.mktemp("ckpt") / "seeded.pth")


class InterruptedMean(MeanModel):
    """The mean, until Ctrl-C arrives at call ``after + 1``."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def forward(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        if self.calls >= self.after:
            raise KeyboardInterrupt
        return super().forward(frame0, frame1)


def mean_forward(self: Interpolator, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
    """Stand-in for the model call in command-line tests (what they check is not the model)."""
    return ((frame0 + frame1) / 2).float()


def mean_interp(batch_size: int = 1) -> Interpolator:
    return Interpolator(MeanModel(), device="cpu", precision="fp32", batch_size=batch_size)


def quiet(line: str) -> None:
    """Notes are not what these tests look at."""


def folder_of(tmp: Path, values: list[float] | None = None, frames: list[torch.Tensor] | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = [torch.full((3, H, W), v / 255) for v in values or VALUES]
    for i, f in enumerate(frames):
        save_rgb(tmp / f"{i:03d}.png", f)
    return tmp


def folder_frames(folder: Path) -> list[torch.Tensor]:
    return [load_rgb(p) for p in sorted(folder.glob("*.png"))]


def run(*args: object) -> int:
    return interpolate_video.main([str(a) for a in args])


def one_error_line(err: str, *phrases: str) -> None:
    """``err`` ends in one ``error:`` line holding ``phrases``; only notes before it, no traceback."""
    *before, last = err.strip().splitlines()
    assert last.startswith("error: ") and "Traceback" not in err, err
    assert all(line.startswith(("note: ", "model ")) for line in before), err
    for phrase in phrases:
        assert phrase in last, (phrase, err)


# --- any output rate -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_power_of_two_target_equals_factor_and_the_interpolators_recursion(tmp_path: Path, k: int) -> None:
    """--target_fps = input rate x 2^k gives --factor 2^k frame for frame, and both equal
    ``Interpolator.interpolate_sequence`` (its own recursion); 2^4 needs a tolerance below 1/16."""
    gen = torch.Generator().manual_seed(k)
    frames = [(torch.rand(3, H, W, generator=gen) * 255).round() / 255 for _ in range(3)]
    inputs = folder_of(tmp_path / "in", frames=frames)
    interp = Interpolator(lively_model(), device="cpu", precision="fp32")
    tol = Fraction(1, 64) if k == 4 else None
    target = ConversionOptions(target_fps=Fraction(25 * 2**k), time_tolerance=tol, input_fps=Fraction(25))
    by_rate = convert_video(interp, inputs, tmp_path / "rate", target, note=quiet)
    by_factor = convert_video(interp, inputs, tmp_path / "factor", ConversionOptions(factor=2**k), note=quiet)
    want = [(f * 255).round() / 255 for f in interp.interpolate_sequence(frames, 2**k)]
    got_rate, got_factor = folder_frames(tmp_path / "rate"), folder_frames(tmp_path / "factor")
    assert len(got_rate) == len(want) == (len(frames) - 1) * 2**k + 1
    assert all(torch.equal(a, b) for a, b in zip(got_rate, got_factor, strict=True))
    assert all(float((a - b).abs().max()) <= 1 / 255 + 1e-6 for a, b in zip(got_rate, want, strict=True))
    assert by_rate.max_error == 0 and by_rate.model_calls == by_factor.model_calls == 2 * (2**k - 1)


@pytest.mark.parametrize(
    ("in_fps", "out_fps"), [(24, Fraction(60)), (30, Fraction(25)), (25, Fraction(60000, 1001)), (24, Fraction(100))]
)
def test_any_rate_places_frames_within_the_tolerance(tmp_path: Path, in_fps: int, out_fps: Fraction) -> None:
    """With the mean as midpoint, output frame k of flat frames shows the blend at its node's time; that
    time is within the tolerance of k x in / out (the ideal), and the call count is the model's own."""
    source = write_clip(
        tmp_path / "clip.mkv", flat_frames(VALUES), rate=in_fps, codec="ffv1", pix_fmt="bgr0", audio=None
    )
    interp = mean_interp()
    tol = Fraction(1, 16)
    result = convert_video(interp, source, tmp_path / "out.mkv", ConversionOptions(target_fps=out_fps, codec="ffv1"))
    got = [float(f.mean()) for f in read_frames(tmp_path / "out.mkv")]
    step = Fraction(in_fps) / out_fps
    count = int((len(VALUES) - 1) / step) + 1
    assert len(got) == result.frames == count
    for k, value in enumerate(got):
        u = k * step
        i = min(int(u), len(VALUES) - 2)
        a, b = VALUES[i], VALUES[i + 1]
        if a == b:
            continue
        tau = (value - a) / (b - a)  # the time the frame shows, read from its grey level
        assert abs(tau - float(u - i)) <= float(tol) + 1 / abs(b - a), (k, tau, float(u - i))
    assert result.model_calls == interp.model.calls
    assert result.max_error <= tol and result.model_calls <= result.naive_calls
    assert abs(float(stream_info(tmp_path / "out.mkv")["rate"]) - float(out_fps)) < 0.01  # (MKV counts in ms)


def test_scene_cuts_batching_and_resume_with_a_target_rate(tmp_path: Path) -> None:
    """A cut pair copies the nearer input (t < 1/2: the earlier); batching across pairs and an interrupted
    then resumed folder give the same frames as one plain run."""
    frames = [torch.full((3, H, W), v / 255) for v in (10, 40, 240, 200)]
    inputs = folder_of(tmp_path / "in", frames=frames)
    opts = dict(target_fps=Fraction(60), input_fps=Fraction(24), scene_threshold=100.0)
    plain = convert_video(mean_interp(), inputs, tmp_path / "plain", ConversionOptions(**opts), note=quiet)
    assert plain.cuts == 1
    timeline = Timeline(Fraction(24), Fraction(60), Fraction(1, 16))
    got = folder_frames(tmp_path / "plain")
    for p in timeline.pair(1):  # the cut: frames 40 -> 240
        want = frames[1] if p.t < Fraction(1, 2) else frames[2]
        assert torch.equal(got[p.frame], (want * 255).round() / 255)
    convert_video(mean_interp(batch_size=3), inputs, tmp_path / "batched", ConversionOptions(**opts), note=quiet)
    assert all(torch.equal(a, b) for a, b in zip(got, folder_frames(tmp_path / "batched"), strict=True))

    interp = Interpolator(InterruptedMean(after=5), device="cpu", precision="fp32")
    with pytest.raises(KeyboardInterrupt):
        convert_video(interp, inputs, tmp_path / "resumed", ConversionOptions(**opts), note=quiet)
    written = sorted(p.name for p in (tmp_path / "resumed").glob("*.png"))
    assert 0 < len(written) < len(got)
    lines: list[str] = []
    convert_video(mean_interp(), inputs, tmp_path / "resumed", ConversionOptions(**opts), note=lines.append)
    assert any(line.startswith("resuming") and "--force starts over" in line for line in lines)
    assert all(torch.equal(a, b) for a, b in zip(got, folder_frames(tmp_path / "resumed"), strict=True))
    manifest = json.loads((tmp_path / "resumed" / MANIFEST).read_text())
    assert manifest["target_fps"] == "60" and manifest["time_tolerance"] == "1/16" and "factor" not in manifest


def test_variable_timestamps_use_the_average_rate_in_one_line(tmp_path: Path) -> None:
    source = write_irregular_clip(tmp_path / "vfr.mkv", flat_frames(VALUES), [0, 40, 60, 140, 160, 200])
    lines: list[str] = []
    result = convert_video(mean_interp(), source, tmp_path / "out", ConversionOptions(factor=2), note=lines.append)
    notes = [line for line in lines if "variable frame timing" in line]
    assert len(notes) == 1 and "average rate of 25 fps" in notes[0], lines
    assert result.in_rate == 25 and result.frames == 2 * len(VALUES) - 1


def test_progress_reports_every_frame(tmp_path: Path) -> None:
    inputs = folder_of(tmp_path / "in")
    seen = []
    result = convert_video(
        mean_interp(), inputs, tmp_path / "out", ConversionOptions(target_fps=Fraction(60)), progress=seen.append
    )
    assert [p.frames for p in seen] == list(range(1, result.frames + 1))
    assert {p.total for p in seen} == {result.frames}


# --- sound and the other tracks --------------------------------------------------------------------


def test_issue_clip_keeps_its_audio_sample_for_sample(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's clip: 24 frames, 25 fps, H.264 with an AAC track. x2 and 24 -> 60 fps keep the track
    unchanged (the same decoded samples, starting with the video), and say so in the summary."""
    monkeypatch.setattr(Interpolator, "_forward", mean_forward)
    source = write_clip(tmp_path / "clip.mp4", flat_frames(np.linspace(0, 230, 24).tolist()))
    reference, start, codec = read_audio(source)  # type: ignore[misc]
    for flags, name, frames in ((("--factor", 2), "x2.mp4", 47), (("--target_fps", 60), "60.mov", 56)):
        out = tmp_path / name
        assert run("--input", source, *flags, "--output", out, "--checkpoint", ckpt, "--no_progress") == 0
        audio = read_audio(out)
        assert audio is not None and audio[2] == codec == "aac"
        assert audio[0].shape == reference.shape and np.array_equal(audio[0], reference)
        assert audio[1] == start == 0.0
        assert len(read_frames(out)) == frames


def test_audio_re_encoded_where_the_container_needs_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """WebM holds no AAC: the track becomes Opus, still the same 440 Hz tone, as long, starting at 0."""
    if not encoder_available(CODECS["vp9"]):
        pytest.skip("no VP9 encoder in this PyAV")
    source = write_clip(tmp_path / "clip.mp4", flat_frames(VALUES * 4))
    result = convert_video(mean_interp(), source, tmp_path / "out.webm", ConversionOptions(factor=2, codec="vp9"))
    data, start, codec = read_audio(tmp_path / "out.webm")  # type: ignore[misc]
    ref, _, _ = read_audio(source)  # type: ignore[misc]
    assert codec == "opus" and [p.action for p in result.tracks] == ["encode"]
    assert abs(peak_hz(data[0]) - SINE_HZ) < 5 and abs(data.shape[1] - ref.shape[1]) < 0.03 * SAMPLE_RATE
    assert abs(start) < 0.03


def test_slow_motion_leaves_audio_out_or_stretches_it(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Interpolator, "_forward", mean_forward)
    source = write_clip(tmp_path / "clip.mp4", flat_frames(VALUES * 4))
    ref, _, _ = read_audio(source)  # type: ignore[misc]
    base = ("--input", source, "--factor", 2, "--fps", 25, "--checkpoint", ckpt, "--no_progress")
    assert run(*base, "--output", tmp_path / "slow.mp4") == 0
    err = capsys.readouterr().err
    assert sum("audio track(s) are left out" in line for line in err.splitlines()) == 1, err
    assert read_audio(tmp_path / "slow.mp4") is None
    assert run(*base, "--output", tmp_path / "stretched.mp4", "--audio", "stretch") == 0
    data, start, codec = read_audio(tmp_path / "stretched.mp4")  # type: ignore[misc]
    assert codec == "aac" and start == 0.0
    assert abs(data.shape[1] / ref.shape[1] - 2) < 0.05  # twice as long
    assert abs(peak_hz(data[0]) - SINE_HZ) < 3  # at the same pitch


def test_input_fps_that_retimes_the_video_moves_the_audio_with_it(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--input_fps 12.5 on a 25 fps clip doubles its duration although --factor 2 plays at the rate it
    makes: the sound is left out in one line (auto) or stretched to twice its length, never copied out of
    step; --fps 50 on top brings the duration back and the track is copied."""
    monkeypatch.setattr(Interpolator, "_forward", mean_forward)
    source = write_clip(tmp_path / "clip.mp4", flat_frames(VALUES * 4))
    ref, _, _ = read_audio(source)  # type: ignore[misc]
    base = ("--input", source, "--factor", 2, "--input_fps", "12.5", "--checkpoint", ckpt, "--no_progress")
    assert run(*base, "--output", tmp_path / "auto.mp4") == 0
    err = capsys.readouterr().err
    assert sum("audio track(s) are left out" in line for line in err.splitlines()) == 1, err
    assert read_audio(tmp_path / "auto.mp4") is None
    assert run(*base, "--output", tmp_path / "stretched.mp4", "--audio", "stretch") == 0
    data, _, _ = read_audio(tmp_path / "stretched.mp4")  # type: ignore[misc]
    assert abs(data.shape[1] / ref.shape[1] - 2) < 0.05
    assert run(*base, "--fps", 50, "--output", tmp_path / "kept.mp4") == 0
    kept, _, _ = read_audio(tmp_path / "kept.mp4")  # type: ignore[misc]
    assert np.array_equal(kept, ref)


def test_audio_that_cannot_be_decoded_is_left_out_in_one_line(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_garbage_audio_clip(tmp_path / "bad.mkv", flat_frames(VALUES))
    out = tmp_path / "out.mp4"
    assert run("--input", source, "--output", out, "--checkpoint", ckpt, "--no_progress") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "cannot be decoded" in line]
    assert len(lines) == 1 and "audio track 1" in lines[0], err
    assert stream_info(out)["streams"] == ["video"] and len(read_frames(out)) == 2 * len(VALUES) - 1


def test_subtitles_copied_where_the_container_allows(tmp_path: Path) -> None:
    subs = [(100, 300, "hello"), (1000, 500, "world")]
    source = write_clip(tmp_path / "clip.mkv", flat_frames(VALUES * 6), subtitles=subs)
    convert_video(mean_interp(), source, tmp_path / "out.mkv", ConversionOptions(factor=2), note=quiet)
    with av.open(str(tmp_path / "out.mkv")) as c:
        got = [(int(p.pts), int(p.duration), bytes(p).decode()) for p in c.demux(subtitles=0) if p.size]
    assert got == subs
    slow = ConversionOptions(factor=2, fps=Fraction(25), audio="none")
    convert_video(mean_interp(), source, tmp_path / "slow.mkv", slow, note=quiet)
    with av.open(str(tmp_path / "slow.mkv")) as c:  # subtitles follow slow motion
        got = [(int(p.pts), int(p.duration), bytes(p).decode()) for p in c.demux(subtitles=0) if p.size]
    assert got == [(2 * s, 2 * d, t) for s, d, t in subs]
    lines: list[str] = []
    convert_video(mean_interp(), source, tmp_path / "out.mp4", ConversionOptions(factor=2), note=lines.append)
    assert sum("subtitle track 2" in line and "not copied" in line for line in lines) == 1, lines
    assert stream_info(tmp_path / "out.mp4")["streams"] == ["video", "audio"]


# --- codecs ----------------------------------------------------------------------------------------

VIDEO_CODECS = [name for name, spec in CODECS.items() if not spec.folder]


@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_every_codec_writes_a_decodable_video(tmp_path: Path, codec: str) -> None:
    spec = CODECS[codec]
    if not encoder_available(spec):
        pytest.skip(f"no {spec.encoder} in this PyAV")
    source = write_clip(tmp_path / "clip.mp4", flat_frames(VALUES[:3]), audio=None)
    out = tmp_path / f"out{spec.suffix}"
    result = convert_video(mean_interp(), source, out, ConversionOptions(factor=2, codec=codec), note=quiet)
    info = stream_info(result.output)
    assert info["codec"] in (spec.family, {"av1": "libdav1d"}.get(codec))
    assert len(read_frames(result.output)) == 5


@pytest.mark.parametrize(
    ("codec", "suffix", "pix_fmt"), [("ffv1", ".mkv", "bgr0"), ("h265", ".mkv", "gbrp"), ("vp9", ".webm", "gbrp")]
)
def test_lossless_round_trip_is_exact(tmp_path: Path, codec: str, suffix: str, pix_fmt: str) -> None:
    """A frame folder to FFV1 (or h265/vp9 with --lossless, in RGB) and back: every decoded frame is exactly
    the frame written (the inputs, and the stand-in model's midpoints rounded to 8 bits)."""
    if not encoder_available(CODECS[codec]):
        pytest.skip(f"no {CODECS[codec].encoder} in this PyAV")
    gen = torch.Generator().manual_seed(3)
    frames = [(torch.rand(3, H, W, generator=gen) * 255).round() / 255 for _ in range(3)]
    inputs = folder_of(tmp_path / "in", frames=frames)
    convert_video(mean_interp(), inputs, tmp_path / "frames", ConversionOptions(factor=2), note=quiet)
    out = tmp_path / f"out{suffix}"
    convert_video(mean_interp(), inputs, out, ConversionOptions(factor=2, codec=codec, lossless=True), note=quiet)
    written = [(f.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for f in folder_frames(tmp_path / "frames")]
    decoded = read_frames(out)
    assert stream_info(out)["pix_fmt"] == pix_fmt
    assert len(decoded) == len(written) == 5
    assert all(np.array_equal(a, b) for a, b in zip(decoded, written, strict=True))


@pytest.mark.parametrize(("codec", "suffix"), [("h265", ".mkv"), ("prores", ".mov"), ("ffv1", ".mkv")])
def test_ten_bit_in_ten_bit_out_with_its_colour_tags(tmp_path: Path, codec: str, suffix: str) -> None:
    """A 10-bit 4:2:2 BT.709 source keeps 10 bits, its chroma (4:2:2) and its tags; the input frames come
    back closer than 8 bits could carry them."""
    if not encoder_available(CODECS[codec]):
        pytest.skip(f"no {CODECS[codec].encoder} in this PyAV")
    yy, xx = np.mgrid[0:H, 0:W]
    frames = [np.stack([xx * 900 + i * 300, yy * 1200, 60000 - xx * 700], -1).astype(np.uint16) for i in range(3)]
    source = write_clip(
        tmp_path / "ten.mkv", frames, codec="ffv1", pix_fmt="yuv422p10le", audio=None, colour=(1, 1, 1, 1)
    )
    out = tmp_path / f"out{suffix}"
    opts = ConversionOptions(factor=2, codec=codec, lossless=codec == "h265")
    convert_video(mean_interp(), source, out, opts, note=quiet)
    info = stream_info(out)
    assert info["pix_fmt"] == "yuv422p10le"
    assert info["colour"][:2] == (1, 1)  # BT.709 matrix, limited range
    src = read_frames(source, "rgb48le")
    got = read_frames(out, "rgb48le")
    err = np.abs(got[0].astype(np.int64) - src[0]).mean() / 65535
    assert err < 0.1 / 255, err  # 8 bits alone would leave 0.25 / 255 on this ramp


def test_rgb_source_to_h264_is_tagged_bt709(tmp_path: Path) -> None:
    inputs = folder_of(tmp_path / "in")
    convert_video(mean_interp(), inputs, tmp_path / "o.mp4", ConversionOptions(factor=2), note=quiet)
    info = stream_info(tmp_path / "o.mp4")
    assert info["pix_fmt"] == "yuv420p" and info["colour"] == (1, 1, 1, 1)


# --- bad input: one line, exit 2, nothing written ---------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (("--target_fps", "0"), "--target_fps 0: a frame rate must be positive"),
        (("--target_fps", "-25"), "--target_fps -25: a frame rate must be positive"),
        (("--target_fps", "fast"), "--target_fps fast: expected a frame rate"),
        (("--fps", "1/0"), "--fps 1/0: expected a frame rate"),
        (("--target_fps", "60", "--factor", "2"), "give one"),
        (("--target_fps", "60", "--time_tolerance", "1/2"), "--time_tolerance 1/2"),
        (("--codec", "prores", "--output", "{tmp}/o.mp4"), "a .mp4 file cannot hold prores"),
        (("--codec", "ffv1", "--crf", "10", "--output", "{tmp}/o.mkv"), "--crf: ffv1 has no quality scale"),
        (("--codec", "prores", "--lossless", "--output", "{tmp}/o.mov"), "prores has no lossless mode"),
        (("--crf", "60", "--output", "{tmp}/o.mp4"), "--crf 60: h264 takes 0 (best) to 51"),
        (("--preset", "warp", "--output", "{tmp}/o.mp4"), "--preset warp: h264 takes"),
        (("--codec", "png", "--output", "{tmp}/o.mp4"), "writes a folder of frames"),
        (("--codec", "h265", "--output", "{tmp}/frames"), "writes a video file"),
    ],
)
def test_bad_flags_are_one_line_before_any_work(
    tmp_path: Path, ckpt: Path, flags: tuple[str, ...], phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = folder_of(tmp_path / "in")
    argv = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out.mp4")]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run("--input", inputs, *argv, "--checkpoint", ckpt, "--no_progress") == 2
    err = capsys.readouterr().err
    one_error_line(err, phrase)
    assert "model " not in err and sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_encoder_and_missing_filter_are_named(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = folder_of(tmp_path / "in")
    real = cdfi.io.video.encoder_available
    monkeypatch.setattr(cdfi.io.video, "encoder_available", lambda spec: spec.name != "av1" and real(spec))
    assert run("--input", inputs, "--codec", "av1", "--output", tmp_path / "o.mp4", "--checkpoint", ckpt) == 2
    one_error_line(capsys.readouterr().err, "--codec av1", "no libsvtav1 encoder", "codecs available here: h264")
    monkeypatch.setattr(av.filter, "filters_available", {"anull"})
    assert run("--input", inputs, "--audio", "stretch", "--output", tmp_path / "o.mp4", "--checkpoint", ckpt) == 2
    one_error_line(capsys.readouterr().err, "--audio stretch", "no atempo filter")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_ctrl_c_during_a_rate_conversion_leaves_no_file(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_clip(tmp_path / "clip.mp4", flat_frames(VALUES))
    calls = []

    def interrupted(self: Interpolator, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return mean_forward(self, a, b)

    monkeypatch.setattr(Interpolator, "_forward", interrupted)
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    assert run("--input", source, "--target_fps", 60, "--output", out, "--checkpoint", ckpt, "--no_progress") == 130
    assert capsys.readouterr().err.splitlines()[-1] == f"interrupted; {out} was not written"
    assert list(out.parent.iterdir()) == []


# --- the published face and frame naming ---------------------------------------------------------


def test_published_readme_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python interpolate_video.py --gpu_id 0 --input_video imgs/img_seq/ --output_video ./interpolated_video``
    with the default checkpoint: exit 0 (on the CPU with one line when there is no GPU); the inputs come
    back as frames 2i and the midpoints as 2i + 1, in the input's .jpg and the published 5-digit names."""
    shutil.copytree(REPO_ROOT / "imgs" / "img_seq", tmp_path / "imgs" / "img_seq")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Interpolator, "_forward", mean_forward)
    argv = ["--gpu_id", "0", "--input_video", "imgs/img_seq/", "--output_video", "./interpolated_video"]
    assert interpolate_video.main(argv) == 0
    err = capsys.readouterr().err
    if not torch.cuda.is_available():
        assert sum("running on the CPU" in line for line in err.splitlines()) == 1, err
    names = sorted(p.name for p in (tmp_path / "interpolated_video").iterdir() if not p.name.startswith("."))
    assert names == [f"{i:05d}.jpg" for i in range(19)]
    inputs = [load_rgb(tmp_path / "imgs" / "img_seq" / f"{i:05d}.jpg") for i in range(10)]
    for i in range(9):
        assert float((load_rgb(tmp_path / "interpolated_video" / f"{2 * i:05d}.jpg") - inputs[i]).abs().mean()) < 0.01
        mid = (inputs[i] + inputs[i + 1]) / 2
        assert float((load_rgb(tmp_path / "interpolated_video" / f"{2 * i + 1:05d}.jpg") - mid).abs().mean()) < 0.01


def test_published_naming_reads_the_numbered_run(tmp_path: Path) -> None:
    """--index_from/--zpad/--img_format name the input frames of a folder in the published layout (other
    images there are not read, in one line) and the output frames."""
    folder = tmp_path / "in"
    folder.mkdir()
    for n, v in zip(range(1, 5), (0, 80, 160, 240), strict=True):
        save_rgb(folder / f"{n:03d}.png", torch.full((3, H, W), v / 255))
    save_rgb(folder / "thumbnail.png", torch.zeros(3, H, W))
    lines: list[str] = []
    naming = FrameNaming(".png", 3, 1)
    convert_video(mean_interp(), folder, tmp_path / "out", ConversionOptions(naming=naming), note=lines.append)
    assert any("reading the 4 frames 001.png to 004.png" in line and "1 other image" in line for line in lines)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == [f"{i:03d}.png" for i in range(1, 8)]
    got = [float(load_rgb(tmp_path / "out" / n).mean()) * 255 for n in names]
    assert np.allclose(got, [0, 40, 80, 120, 160, 200, 240], atol=0.6)


def test_resume_keeps_the_naming_it_was_written_with(tmp_path: Path) -> None:
    """A folder written before the output took the input's suffix (.png from .jpg inputs) resumes in its
    own naming when the flags are not given."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        save_rgb(inputs / f"{i:05d}.jpg", torch.full((3, H, W), i / 3))
    out = tmp_path / "out"
    convert_video(mean_interp(), inputs, out, ConversionOptions(naming=FrameNaming(".png")), note=quiet)
    lines: list[str] = []
    convert_video(mean_interp(), inputs, out, ConversionOptions(), note=lines.append)
    assert any(line.startswith("resuming") for line in lines)
    assert sorted(p.suffix for p in out.iterdir() if not p.name.startswith(".")) == [".png"] * 5


def test_prealign_depth_is_recorded_and_compared(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifest records the pre-alignment depth (which follows the frame or tile size); a resume at
    another depth, or of a folder that recorded --prealign without its depth, is refused in one line."""
    gen = torch.Generator().manual_seed(5)
    frames = [(torch.rand(3, 130, 160, generator=gen) * 255).round() / 255 for _ in range(2)]
    inputs = folder_of(tmp_path / "in", frames=frames)
    out = tmp_path / "out"
    base = (
        "--input",
        inputs,
        "--output",
        out,
        "--checkpoint",
        ckpt,
        "--prealign",
        "--no_progress",
        "--precision",
        "fp32",
    )
    assert run(*base, "--tile", 0) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["prealign"] is True and manifest["prealign_levels"] == [2]  # 130 px: two halvings
    capsys.readouterr()
    assert run(*base, "--tile", 96, "--tile_overlap", 32) == 2  # tiles of at most 96 px: one halving
    one_error_line(capsys.readouterr().err, "prealign_levels=[2], now [1]", "--force")
    del manifest["prealign_levels"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert run(*base, "--tile", 0) == 2
    one_error_line(capsys.readouterr().err, "--prealign before its depth was recorded", "--force")


def test_default_output_names_follow_rate_and_codec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = folder_of(tmp_path / "my.clip")
    monkeypatch.chdir(tmp_path)
    for opts, name in (
        (ConversionOptions(target_fps=Fraction(60000, 1001)), "my.clip_59.94fps.mp4"),
        (ConversionOptions(factor=4, codec="ffv1"), "my.clip_x4.mkv"),
        (ConversionOptions(codec="png"), "my.clip_x2"),
    ):
        conversion = prepare_conversion(inputs, None, opts, note=quiet)
        assert conversion.output == Path(name)


def test_too_coarse_a_tolerance_says_frames_repeat(tmp_path: Path) -> None:
    inputs = folder_of(tmp_path / "in")
    lines: list[str] = []
    prepare_conversion(inputs, tmp_path / "o.mp4", ConversionOptions(target_fps=Fraction(400)), note=lines.append)
    assert sum("repeat the one before" in line for line in lines) == 1, lines
    lines.clear()
    prepare_conversion(inputs, tmp_path / "o.mp4", ConversionOptions(target_fps=Fraction(60)), note=lines.append)
    assert not any("repeat" in line for line in lines)


def test_prepare_refuses_what_the_library_is_given(tmp_path: Path) -> None:
    inputs = folder_of(tmp_path / "in")
    with pytest.raises(VideoError, match="--audio loud"):
        prepare_conversion(inputs, tmp_path / "o.mp4", ConversionOptions(audio="loud"), note=quiet)
    with pytest.raises(VideoError, match="--factor 3"):
        prepare_conversion(inputs, tmp_path / "o.mp4", ConversionOptions(factor=3), note=quiet)
