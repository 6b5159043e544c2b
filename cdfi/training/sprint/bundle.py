"""The sprint's data bundle: training footage and the validation split, small enough to travel.

A GPU machine takes at most 64 MiB of files, the repository's own included, so the footage travels
compressed and is decoded there. ``pack_bundle`` writes a folder with

* one H.264 video per clip holding the frames its training triplets use (``libx264``, 4:4:4 chroma,
  high quality: ``Encoding``), near-lossless rather than lossless because lossless video of the 30
  clips would be ten times the size;
* one lossless RGB H.264 video (``libx264rgb``, qp 0) per validation clip holding its held-out frames,
  so validation scores the exact frames the CPU evaluation scores;
* ``manifest.json``: per clip its file, size, sha256, frame count and size, the training triplets
  (start frames; stride 1, scene cuts dropped), a digest of the frames as decoded here (sha256 and
  channel means) and their PSNR to the source; the validation items; whatever the packer computed
  beforehand (baselines, the starting checkpoints' scores).

The split follows ``datasets/make_triplets.py`` at stride 1: the last ``val_fraction`` of each clip
is held out (validation triplets use only those frames, training triplets only the others), and a
triplet whose consecutive frames differ by more than ``scene_cut`` is dropped. Clips that are not
validation clips travel without their held-out part.

Decoding prefers OpenCV, which the GPU machine has (it has no PyAV); H.264 decoding is bit-exact, so
the lossless validation frames decode identically everywhere, and the training frames do up to the
decoder's YUV-to-RGB rounding, which the digest check reports. PyAV is needed only to pack.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdfi.io.atomic import OutputExistsError, publish_directory, staging_directory
from cdfi.io.download import sha256_file

__all__ = [
    "FORMAT",
    "MANIFEST",
    "Bundle",
    "BundleError",
    "Encoding",
    "SourceClip",
    "Unpacked",
    "ValidationSplit",
    "decode_video",
    "encode_video",
    "frame_difference",
    "frames_digest",
    "held_out_start",
    "pack_bundle",
    "read_bundle",
    "triplet_starts",
    "unpack_bundle",
]

FORMAT = "cdfi-sprint-bundle/1"
MANIFEST = "manifest.json"
MIB = 2**20
BT601, MPEG_RANGE = 6, 1
"""FFmpeg's codes for SMPTE 170M (BT.601) colour and limited ("MPEG") range: what swscale's default
RGB-to-YUV conversion, which PyAV uses, produces."""
MEAN_SHIFT_LIMIT = 2.0
"""Largest per-channel mean shift (8-bit levels) tolerated between the packer's and the device's decode
of a training clip; more means a different colour conversion, which would corrupt the training data."""


class BundleError(ValueError):
    """A bundle that cannot be packed or read (one-line message)."""


@dataclass(frozen=True)
class Encoding:
    """x264 settings of the training clips: ``crf`` (lower is better and larger), ``preset``, ``tune``
    (``psnr`` turns off x264's psychovisual tuning, which spends bits on looks rather than fidelity)."""

    crf: int = 18
    preset: str = "slow"
    tune: str | None = "psnr"


@dataclass
class SourceClip:
    """One clip to pack: its name and frames, an (n, H, W, 3) uint8 RGB array."""

    name: str
    frames: np.ndarray


@dataclass
class ValidationSplit:
    """The held-out frames of the validation clips and the items ``(clip, i, j, k)`` over them."""

    clips: list[np.ndarray]
    items: list[tuple[int, int, int, int]]
    names: list[str]


def held_out_start(n: int, val_fraction: float, span: int = 2) -> int:
    """First held-out frame of an ``n``-frame clip: the last ``max(span + 1, round(n * val_fraction))``
    frames are held out (``make_triplets``' rule; ``span`` is twice the stride); ``n`` when nothing is
    (``val_fraction`` 0, or too few frames would be left for a training triplet)."""
    if val_fraction <= 0:
        return n
    held = max(span + 1, round(n * val_fraction))
    return n if n - held < span + 1 else n - held


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in [0, 1] on every 4th row and column: ``make_triplets``' scene-cut test."""
    return float(np.abs(a[::4, ::4].astype(np.int16) - b[::4, ::4].astype(np.int16)).mean() / 255.0)


def triplet_starts(frames: np.ndarray, begin: int, end: int, scene_cut: float) -> list[int]:
    """Start frames ``s`` of the stride-1 triplets ``(s, s+1, s+2)`` inside ``[begin, end)`` that do not
    span a scene cut (either step differs by more than ``scene_cut``)."""
    diffs = [frame_difference(frames[i], frames[i + 1]) for i in range(begin, end - 1)]
    return [s for s in range(begin, end - 2) if max(diffs[s - begin], diffs[s - begin + 1]) <= scene_cut]


def frames_digest(frames: np.ndarray) -> tuple[str, list[float]]:
    """sha256 of the frames' bytes and their per-channel means (8-bit levels)."""
    data = np.ascontiguousarray(frames)
    means = data.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    return hashlib.sha256(data.data).hexdigest(), [round(float(m), 4) for m in means]


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def encode_video(frames: np.ndarray, path: str | Path, *, lossless: bool, encoding: Encoding = Encoding()) -> None:
    """Write (n, H, W, 3) uint8 RGB frames as H.264 with PyAV: lossless RGB (``libx264rgb`` qp 0) or
    near-lossless 4:4:4 (``libx264`` at ``encoding``)."""
    try:
        import av
    except ImportError:
        raise BundleError("packing needs PyAV (pip install av)") from None
    with av.open(str(path), mode="w") as container:
        if lossless:
            stream = container.add_stream("libx264rgb", rate=25)
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "veryslow"}
        else:
            stream = container.add_stream("libx264", rate=25)
            stream.pix_fmt = "yuv444p"
            options = {"crf": str(encoding.crf), "preset": encoding.preset}
            if encoding.tune:
                options["tune"] = encoding.tune
            stream.options = options
            # Say what PyAV's conversion did (BT.601, limited range), for decoders that read the tags.
            cc = stream.codec_context
            cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = BT601, MPEG_RANGE, BT601, BT601
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _has_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video(path: str | Path, count: int, height: int, width: int, decoder: str = "auto") -> np.ndarray:
    """The ``count`` frames of a video as an (count, height, width, 3) uint8 RGB array.

    ``decoder``: ``opencv``, ``pyav`` or ``auto`` (OpenCV when installed, else PyAV). A different
    frame count or size is a ``BundleError``.
    """
    path = Path(path)
    if decoder not in ("auto", "opencv", "pyav"):
        raise BundleError(f"unknown decoder {decoder!r}; use auto, opencv or pyav")
    if decoder == "auto":
        decoder = "opencv" if _has_opencv() else "pyav"
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    n = 0

    def put(rgb: np.ndarray) -> None:
        nonlocal n
        if rgb.shape != (height, width, 3):
            raise BundleError(f"{path}: frame {n} is {rgb.shape[1]}x{rgb.shape[0]}, expected {width}x{height}")
        if n >= count:
            raise BundleError(f"{path}: holds more than the {count} frames the manifest lists")
        out[n] = rgb
        n += 1

    if decoder == "opencv":
        import cv2

        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise BundleError(f"{path}: OpenCV cannot open it")
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                put(bgr[..., ::-1])
        finally:
            capture.release()
    else:
        try:
            import av
        except ImportError:
            raise BundleError("decoding the bundle needs OpenCV or PyAV") from None
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                put(frame.to_ndarray(format="rgb24"))
    if n != count:
        raise BundleError(f"{path}: decoded {n} frames, the manifest lists {count}")
    return out


@dataclass
class _Packed:
    """What packing one video wrote: its manifest entry and the frames as decoded."""

    entry: dict[str, Any]
    decoded: np.ndarray


def _pack_video(
    frames: np.ndarray, folder: Path, file: str, *, lossless: bool, encoding: Encoding, decoder: str
) -> _Packed:
    path = folder / file
    encode_video(frames, path, lossless=lossless, encoding=encoding)
    n, h, w, _ = frames.shape
    decoded = decode_video(path, n, h, w, decoder)
    sha, means = frames_digest(decoded)
    fidelity = _psnr_u8(decoded, frames)
    if lossless and math.isfinite(fidelity):
        raise BundleError(f"{file}: lossless encoding did not reproduce the frames ({fidelity:.2f} dB)")
    entry = {
        "file": file,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "frames": n,
        "width": w,
        "height": h,
        "lossless": lossless,
        "decoded_sha256": sha,
        "decoded_mean": means,
        "psnr_to_source": None if math.isinf(fidelity) else round(fidelity, 3),
    }
    return _Packed(entry, decoded)


def pack_bundle(
    clips: Iterable[SourceClip],
    out: str | Path,
    *,
    validation: Sequence[str],
    encoding: Encoding = Encoding(),
    max_mib: float = 24.0,
    val_fraction: float = 0.1,
    scene_cut: float = 0.15,
    max_frames: int | None = None,
    evaluate: Callable[[ValidationSplit], dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    force: bool = False,
    decoder: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pack ``clips`` into the folder ``out`` and return its manifest (see the module docstring).

    ``validation`` names the clips whose held-out frames form the validation split, in that order.
    ``max_frames`` keeps at most that many training frames of each clip (its first ones); the held-out
    part is always the end of the whole clip, so the validation split does not depend on it.
    The folder is built beside ``out`` and renamed into place only when complete; packing stops with a
    ``BundleError`` as soon as the videos pass ``max_mib`` (nothing is left behind). ``evaluate`` gets
    the validation split (frames as decoded) and returns entries for the manifest (the baselines).
    """
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists (pass --force to overwrite)")
    if out.exists() and (out.is_file() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BundleError(f"{out}: exists and is not a sprint bundle; refusing to replace it")
    if not 0 < val_fraction < 1:
        raise BundleError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_frames is not None and max_frames < 3:
        raise BundleError(f"max_frames must be at least 3, got {max_frames}")
    work = staging_directory(out)
    try:
        manifest = _pack_into(
            clips, work, validation, encoding, max_mib, val_fraction, scene_cut, max_frames, evaluate, decoder, log
        )
        manifest.update(extra or {})
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        publish_directory(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _pack_into(
    clips: Iterable[SourceClip],
    work: Path,
    validation: Sequence[str],
    encoding: Encoding,
    max_mib: float,
    val_fraction: float,
    scene_cut: float,
    max_frames: int | None,
    evaluate: Callable[[ValidationSplit], dict[str, Any]] | None,
    decoder: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    train_entries: list[dict[str, Any]] = []
    val_found: dict[str, tuple[dict[str, Any], np.ndarray, list[int]]] = {}
    total = 0
    weighted_mse, weighted_frames = 0.0, 0
    seen: set[str] = set()
    for number, clip in enumerate(clips, start=1):
        frames = clip.frames
        if clip.name in seen:
            raise BundleError(f"clip {clip.name!r} is listed twice")
        seen.add(clip.name)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 3:
            raise BundleError(f"{clip.name}: needs at least 3 RGB uint8 frames, got {frames.dtype} {frames.shape}")
        n = frames.shape[0]
        cut = held_out_start(n, val_fraction)
        is_val = clip.name in validation
        if is_val and cut == n:
            raise BundleError(f"{clip.name}: {n} frames are too few to hold out a validation part")
        end = cut if max_frames is None else min(cut, max_frames)
        starts = triplet_starts(frames, 0, end, scene_cut)
        if end >= 3:
            packed = _pack_video(
                frames[:end], work, f"{number:02d}_{clip.name}.mkv", lossless=False, encoding=encoding, decoder=decoder
            )
            entry = {"name": clip.name, "source_frames": [0, end], "triplets": starts, **packed.entry}
            train_entries.append(entry)
            total += entry["bytes"]
            if entry["psnr_to_source"] is not None:
                weighted_mse += end * 10 ** (-entry["psnr_to_source"] / 10)
            weighted_frames += end
            log(
                f"{clip.name}: {end} training frames, {len(starts)} triplets, {entry['bytes'] / MIB:.2f} MiB, "
                f"{entry['psnr_to_source'] or 'inf'} dB to the source (total {total / MIB:.1f} MiB)"
            )
        if is_val:
            held = frames[cut:]
            packed = _pack_video(held, work, f"val_{clip.name}.mkv", lossless=True, encoding=encoding, decoder=decoder)
            entry = {"name": clip.name, "source_frames": [cut, n], **packed.entry}
            total += entry["bytes"]
            val_starts = [s - cut for s in triplet_starts(frames, cut, n, scene_cut)]
            val_found[clip.name] = (entry, packed.decoded, val_starts)
            log(f"{clip.name}: {n - cut} held-out frames (lossless), {len(val_starts)} validation triplets")
        if total > max_mib * MIB:
            raise BundleError(
                f"the bundle passes --max_mib {max_mib:g} at clip {clip.name} ({total / MIB:.1f} MiB after "
                f"{number} clips); raise --crf or pack fewer clips"
            )
    missing = [name for name in validation if name not in val_found]
    if missing:
        raise BundleError(f"validation clip {missing[0]!r} is not among the packed clips")
    if not any(e["triplets"] for e in train_entries):
        raise BundleError("no training triplets (every clip too short or cut)")
    val_clips, items, names = [], [], []
    val_entries = []
    for c, name in enumerate(validation):
        entry, decoded, val_starts = val_found[name]
        val_entries.append(entry)
        val_clips.append(decoded)
        for k, s in enumerate(val_starts):
            items.append((c, s, s + 1, s + 2))
            names.append(f"{name}/{k:03d}")
    if not items:
        raise BundleError("the validation split is empty (every held-out triplet spans a scene cut)")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "encoding": {"train": {"codec": "libx264", "pix_fmt": "yuv444p", **asdict(encoding)}, "val": "libx264rgb qp 0"},
        "split": {
            "stride": 1,
            "val_fraction": val_fraction,
            "scene_cut": scene_cut,
            "max_frames": max_frames,
            "validation": list(validation),
        },
        "clips": train_entries,
        "validation": {"clips": val_entries, "items": [list(t) for t in items], "names": names},
        "bytes": total,
        "max_mib": max_mib,
        "train_psnr_to_source": (
            None if not weighted_mse else round(10 * math.log10(weighted_frames / weighted_mse), 3)
        ),
    }
    if evaluate is not None:
        manifest.update(evaluate(ValidationSplit(val_clips, items, names)))
    return manifest


@dataclass
class Bundle:
    """A packed bundle folder and its manifest."""

    root: Path
    manifest: dict[str, Any]

    @property
    def clips(self) -> list[dict[str, Any]]:
        return self.manifest["clips"]

    @property
    def val_clips(self) -> list[dict[str, Any]]:
        return self.manifest["validation"]["clips"]

    def decoded_bytes(self) -> int:
        """Bytes the decoded training frames take (the frame bank)."""
        return sum(c["frames"] * c["height"] * c["width"] * 3 for c in self.clips)

    def file_bytes(self) -> int:
        return sum(c["bytes"] for c in [*self.clips, *self.val_clips]) + (self.root / MANIFEST).stat().st_size


def read_bundle(root: str | Path, *, verify: bool = True) -> Bundle:
    """Read and check a bundle folder: its manifest, and every video's presence, size and (``verify``) sha256."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root}: not a sprint bundle (no {MANIFEST}; make it with scripts/pack_sprint_data.py)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a {FORMAT} manifest")
    bundle = Bundle(root, manifest)
    try:
        entries = [*bundle.clips, *bundle.val_clips]
        items = manifest["validation"]["items"]
    except (KeyError, TypeError):
        raise BundleError(f"{path}: manifest lacks its clip or validation lists") from None
    for entry in entries:
        video = root / entry["file"]
        if not video.is_file():
            raise BundleError(f"{video}: missing from the bundle")
        if video.stat().st_size != entry["bytes"]:
            raise BundleError(f"{video}: {video.stat().st_size} bytes, the manifest says {entry['bytes']}")
        if verify and sha256_file(video) != entry["sha256"]:
            raise BundleError(f"{video}: damaged (sha256 differs from the manifest)")
    if not items:
        raise BundleError(f"{path}: the validation split is empty")
    return bundle


@dataclass
class Unpacked:
    """A decoded bundle: training clips with their triplet starts, the validation split, and notes on
    decodes that differ from the packer's."""

    train: list[np.ndarray]
    triplets: list[list[int]]
    validation: ValidationSplit
    notes: list[str] = field(default_factory=list)


def unpack_bundle(bundle: Bundle, *, threads: int = 8, decoder: str = "auto") -> Unpacked:
    """Decode every video of ``bundle`` (``threads`` at a time) and check each against its digest.

    A lossless validation clip must decode bit for bit; a training clip may differ by the decoder's
    colour-conversion rounding (noted), but not shift a channel mean by more than ``MEAN_SHIFT_LIMIT``.
    """
    entries = [*bundle.clips, *bundle.val_clips]

    def decode(entry: dict[str, Any]) -> np.ndarray:
        return decode_video(bundle.root / entry["file"], entry["frames"], entry["height"], entry["width"], decoder)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        decoded = list(pool.map(decode, entries))
    notes = []
    for entry, frames in zip(entries, decoded, strict=True):
        sha, means = frames_digest(frames)
        if sha == entry["decoded_sha256"]:
            continue
        shift = max(abs(a - b) for a, b in zip(means, entry["decoded_mean"], strict=True))
        if entry["lossless"] or shift > MEAN_SHIFT_LIMIT:
            raise BundleError(
                f"{entry['file']}: decodes differently here than where it was packed (channel means shift by "
                f"{shift:.2f} levels); this decoder cannot be used"
            )
        notes.append(f"{entry['file']}: decoded with a different rounding (channel means within {shift:.3f} levels)")
    n_train = len(bundle.clips)
    items = [(int(c), int(i), int(j), int(k)) for c, i, j, k in bundle.manifest["validation"]["items"]]
    split = ValidationSplit(decoded[n_train:], items, list(bundle.manifest["validation"]["names"]))
    return Unpacked(decoded[:n_train], [list(c["triplets"]) for c in bundle.clips], split, notes)
