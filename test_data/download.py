"""Fetch the published evaluation sets and arrange them in the layout the test scripts read.

- Middlebury "other" (vision.middlebury.edu): ``other-color-twoframes.zip`` (frame10/frame11 of each
  sequence) and ``other-gt-interp.zip`` (frame10i11 ground truth) -> ``middlebury_others/input/<seq>/``
  and ``middlebury_others/gt/<seq>/``.
- UCF101-DVF (test triplets of DVF, as redistributed with the Super SloMo evaluation):
  ``UCF101_results.zip`` -> ``ucf101_interp_ours/<n>/frame_00.png, frame_01_gt.png, frame_02.png``.

Every arranged file is checked against ``checksums.sha256`` (SHA-256 of the files the published
evaluation used). A set is assembled in a staging folder and moved into place only when complete and
verified, so an interrupted or failed run never leaves a half-filled data set behind.

Usage: python test_data/download.py [--dest DIR] [--sets middlebury,ucf101] [--archive_dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdfi.cli import run_cli  # noqa: E402
from cdfi.io.download import DownloadError, download  # noqa: E402
from cdfi.io.download import sha256_file as sha256  # noqa: E402
from datasets.benchmark_sets import MIDDLEBURY_SEQUENCES, UCF101_FOLDERS  # noqa: E402

MANIFEST = HERE / "checksums.sha256"


@dataclass(frozen=True)
class Source:
    """A public archive and where it is published."""

    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


MIDDLEBURY_DATA = Source("https://vision.middlebury.edu/flow/data/comp/zip/other-color-twoframes.zip")
MIDDLEBURY_GT = Source("https://vision.middlebury.edu/flow/data/comp/zip/other-gt-interp.zip")
UCF101 = Source("https://people.cs.umass.edu/~hzjiang/projects/superslomo/UCF101_results.zip")


Targets = dict[str, tuple[Source, str]]


def _middlebury_targets() -> Targets:
    """Arranged path -> (archive, path suffix of the archive member that provides it)."""
    targets: Targets = {}
    for seq in MIDDLEBURY_SEQUENCES:
        for frame in ("frame10.png", "frame11.png"):
            targets[f"input/{seq}/{frame}"] = (MIDDLEBURY_DATA, f"{seq}/{frame}")
        targets[f"gt/{seq}/frame10i11.png"] = (MIDDLEBURY_GT, f"{seq}/frame10i11.png")
    return targets


def _ucf101_targets() -> Targets:
    targets: Targets = {}
    for n in UCF101_FOLDERS:
        for name in ("frame_00.png", "frame_01_gt.png", "frame_02.png"):
            targets[f"{n}/{name}"] = (UCF101, f"ucf101_interp_ours/{n}/{name}")
    return targets


SETS: dict[str, tuple[str, Callable[[], Targets]]] = {
    "middlebury": ("middlebury_others", _middlebury_targets),
    "ucf101": ("ucf101_interp_ours", _ucf101_targets),
}


def read_manifest(path: Path) -> dict[str, str]:
    """``<sha256>  <path relative to the data root>`` per line -> {path: sha256}."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read checksum manifest ({exc.strerror})") from None
    manifest = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not rel:
            raise DownloadError(f"{path}:{number}: not a '<sha256>  <path>' line")
        manifest[rel] = digest
    return manifest


def write_manifest(data_root: Path, path: Path) -> int:
    """Write the manifest of an arranged copy (for maintainers); returns the number of files."""
    lines = []
    for folder, targets in SETS.values():
        for rel in sorted(targets()):
            file = data_root / folder / rel
            if not file.is_file():
                raise DownloadError(f"{file}: missing; the copy to describe must be complete")
            lines.append(f"{sha256(file)}  {folder}/{rel}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return len(lines)


def fetch(url: str, target: Path, progress: bool) -> Path:
    """Download ``url`` to ``target`` via a ``.part`` file that a later run resumes; DownloadError on failure."""
    part = target.with_name(target.name + ".part")
    try:
        download(url, part, progress=progress, desc=target.name)
    except DownloadError as exc:
        raise DownloadError(
            f"{exc} (without internet: fetch {target.name} by hand, see test_data/README.md, "
            "and pass --archive_dir DIR)",
            unreachable=exc.unreachable,
            reason=exc.reason,
        ) from None
    os.replace(part, target)
    return target


def _archive(source: Source, mirror: str | None, archive_dir: Path | None, downloads: Path, progress: bool) -> Path:
    """A local copy of the archive: from ``archive_dir`` if there, else downloaded."""
    if archive_dir is not None and (archive_dir / source.filename).is_file():
        return archive_dir / source.filename
    cached = downloads / source.filename
    if cached.is_file():
        return cached
    url = f"{mirror.rstrip('/')}/{source.filename}" if mirror else source.url
    print(f"downloading {url}", file=sys.stderr)
    return fetch(url, cached, progress)


def arrange(
    key: str,
    dest: Path,
    *,
    mirror: str | None,
    archive_dir: Path | None,
    manifest: dict[str, str] | None,
    force: bool,
    progress: bool,
) -> Path:
    """Download (or reuse) the archives of set ``key``, extract the needed files, verify, move in place."""
    folder, make_targets = SETS[key]
    final = dest / folder
    if final.exists() and not force:
        raise DownloadError(f"{final}: already exists (pass --force to replace it)")
    downloads = dest / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    targets = make_targets()
    by_source: dict[Source, dict[str, str]] = {}
    for rel, (source, suffix) in targets.items():
        by_source.setdefault(source, {})[rel] = suffix
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=dest))
    try:
        for source, wanted in by_source.items():
            path = _archive(source, mirror, archive_dir, downloads, progress)
            _extract(path, wanted, staging)
        if manifest is not None:
            _verify(staging, folder, targets, manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


def _extract(archive: Path, wanted: dict[str, str], staging: Path) -> None:
    """Copy each wanted member (found by its path suffix, under any folder prefix) to its arranged path."""
    try:
        with zipfile.ZipFile(archive) as zf:
            by_suffix: dict[str, str] = {}
            for name in zf.namelist():
                parts = name.split("/")
                for k in range(1, min(len(parts), 3) + 1):
                    by_suffix.setdefault("/".join(parts[-k:]), name)
            missing = []
            for rel, suffix in wanted.items():
                member = by_suffix.get(suffix)
                if member is None:
                    missing.append(rel)
                    continue
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable zip archive ({exc}); delete it and retry") from None
    if missing:
        raise DownloadError(f"{archive}: {len(missing)} expected file(s) not in the archive, e.g. {missing[0]}")


def _verify(staging: Path, folder: str, targets: dict[str, object], manifest: dict[str, str]) -> None:
    """Every arranged file must match the manifest."""
    bad = []
    for rel in sorted(targets):
        expected = manifest.get(f"{folder}/{rel}")
        if expected is None:
            raise DownloadError(f"checksum manifest has no entry for {folder}/{rel}")
        if sha256(staging / rel) != expected:
            bad.append(rel)
    if bad:
        raise DownloadError(
            f"checksum mismatch for {len(bad)} file(s) of {folder}, e.g. {folder}/{bad[0]}; "
            "the download is corrupt or the upstream archive changed (--skip_checksums keeps it)"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download Middlebury 'other' and UCF101-DVF into the published layout.")
    p.add_argument("--dest", default=str(HERE), help="data root to fill (default: this test_data/ folder)")
    p.add_argument("--sets", default="middlebury,ucf101", help="comma-separated: middlebury, ucf101")
    p.add_argument("--archive_dir", default=None, help="use archives already downloaded into this folder")
    p.add_argument("--mirror", default=None, help="base URL serving the same archive file names")
    p.add_argument("--manifest", default=str(MANIFEST), help="checksum manifest (default: checksums.sha256)")
    p.add_argument("--skip_checksums", action="store_true", help="keep files even if they fail verification")
    p.add_argument("--keep_archives", action="store_true", help="keep the downloaded archives in DEST/.downloads")
    p.add_argument("--force", action="store_true", help="replace set folders that already exist")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--write_manifest",
        default=None,
        metavar="DATA_ROOT",
        help="maintainers: write --manifest from a complete arranged copy and exit",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every set is in place, 2 for a bad argument, 1 when a download fails."""
    return run_cli(fetch_sets, build_parser().parse_args(argv))


def fetch_sets(args: argparse.Namespace) -> None:
    """Download, verify and arrange the chosen sets (or write the manifest with --write_manifest)."""
    if args.write_manifest:
        count = write_manifest(Path(args.write_manifest), Path(args.manifest))
        print(f"wrote {count} checksums to {args.manifest}")
        return
    keys = [k.strip() for k in args.sets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SETS]
    if unknown or not keys:
        raise ValueError(f"--sets: unknown set(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SETS)}")
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = None if args.skip_checksums else read_manifest(Path(args.manifest))
    archive_dir = Path(args.archive_dir) if args.archive_dir else None
    for key in keys:
        final = arrange(
            key,
            dest,
            mirror=args.mirror,
            archive_dir=archive_dir,
            manifest=manifest,
            force=args.force,
            progress=not args.no_progress,
        )
        print(f"{key}: {final}" + ("" if manifest is None else " (checksums verified)"))
    if not args.keep_archives:
        shutil.rmtree(dest / ".downloads", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
