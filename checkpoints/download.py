"""Fetch the published weights and check each against the git blob id the upstream repository lists.

- CDFI (github.com/tding1/CDFI, branch main, ``checkpoints/``): ``CDFI_adacof.pth``,
  ``compressed_adacof_F_5_D_1.pth``, ``compressed_adacof_F_11_D_2.pth``, ``adacof_F_5_D_1.pth`` and
  ``adacof_pruned_lr_1e-2_lam_1e-4_Np_10.pth`` into ``--dest`` under those names (the default set).
- AdaCoF-pytorch (github.com/HyeongminLEE/AdaCoF-pytorch, branch master, ``checkpoint/``):
  ``adacof_pytorch_kernelsize_5`` and ``adacof_pytorch_kernelsize_11``, each saved as
  ``<dest>/<name>/ckpt.pth`` with its ``config.txt`` (AdaCoF F5/D1 and F11/D1; the F5 file is the same
  blob as CDFI's ``adacof_F_5_D_1.pth`` and is copied from it when that one is already here).

A file is written as ``.<name>.part`` in its final folder, resumed with an HTTP Range request when a
previous run was cut off, checked (git blob id: SHA-1 of ``b"blob <size>\\0" + content``; a config.txt
by the kernel size and dilation it gives) and only then renamed into place. A file already present with
the published blob id is reported and skipped without a request; one with another id is kept unless
``--force``. The files are served from raw.githubusercontent.com; should the repository ever answer
with a Git LFS pointer of the published id, the content is fetched from media.githubusercontent.com and
checked by the pointer's SHA-256 and size.

Usage: python checkpoints/download.py [NAMES ...|all] [--dest DIR] [--list] [--force] [--base_url URL]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdfi.cli import WorkError, run_cli  # noqa: E402
from cdfi.io.adacof_config import AdacofConfigError, model_options_from_config  # noqa: E402
from cdfi.io.download import DownloadError, download, file_digest, git_blob_id  # noqa: E402

RAW_BASE = "https://raw.githubusercontent.com"
LFS_BASE = "https://media.githubusercontent.com/media"
LFS_HEADER = b"version https://git-lfs.github.com/spec/v1\n"
CDFI = ("tding1/CDFI", "main")
ADACOF = ("HyeongminLEE/AdaCoF-pytorch", "master")


class WeightError(WorkError):
    """A file that could not be fetched or verified; the message is one line for the user (exit 1)."""


@dataclass(frozen=True)
class Published:
    """One published weight file: its upstream place, git blob id and the path it gets under ``--dest``.

    ``config`` names AdaCoF-pytorch's ``config.txt`` beside the checkpoint upstream; it is saved as
    ``config.txt`` next to ``target`` and must give ``(kernel_size, 1)``.
    """

    name: str
    repo: tuple[str, str]
    path: str
    blob: str
    target: str
    default: bool = True
    size: int | None = None
    config: str | None = None
    kernel_size: int | None = None

    def url(self, base: str, path: str | None = None) -> str:
        """The file (or ``path`` of the same repository) under ``base``/<owner>/<repo>/<branch>/."""
        repo, branch = self.repo
        return f"{base.rstrip('/')}/{repo}/{branch}/{path or self.path}"


def _cdfi(stem: str, blob: str) -> Published:
    return Published(stem, CDFI, f"checkpoints/{stem}.pth", blob, f"{stem}.pth")


def _adacof(kernel_size: int, blob: str) -> Published:
    folder = f"checkpoint/kernelsize_{kernel_size}"
    name = f"adacof_pytorch_kernelsize_{kernel_size}"
    return Published(
        name,
        ADACOF,
        f"{folder}/ckpt.pth",
        blob,
        f"{name}/ckpt.pth",
        default=False,
        config=f"{folder}/config.txt",
        kernel_size=kernel_size,
    )


WEIGHTS: dict[str, Published] = {
    w.name: w
    for w in (
        _cdfi("CDFI_adacof", "1799ec7ab3f2a9f54c13b73d2743c4bb0458c72c"),
        _cdfi("compressed_adacof_F_5_D_1", "14047246c214ec552b2413067f59f6e17c787c10"),
        _cdfi("compressed_adacof_F_11_D_2", "1403e1d27053fd62e323d804bf30907376c6784e"),
        _cdfi("adacof_F_5_D_1", "cdcb7c2661683f14ebc70747d93faed15892e627"),
        _cdfi("adacof_pruned_lr_1e-2_lam_1e-4_Np_10", "e351de2353bd5cc937298fa022740542f6eeb205"),
        _adacof(5, "cdcb7c2661683f14ebc70747d93faed15892e627"),
        _adacof(11, "3bca055500ceec82ccf91bebaf319573dcf2202d"),
    )
}


def select(names: Sequence[str]) -> list[Published]:
    """Entries named by ``names`` (names, file names or ``all``); the default set when empty."""
    if not names:
        return [w for w in WEIGHTS.values() if w.default]
    if "all" in names:
        return list(WEIGHTS.values())
    chosen: list[Published] = []
    for name in names:
        hits = [w for w in WEIGHTS.values() if name in (w.name, w.target)]
        if not hits:
            raise ValueError(f"unknown weights {name!r}; choose from {', '.join(WEIGHTS)} or all (see --list)")
        chosen += [w for w in hits if w not in chosen]
    return chosen


def list_table(base_url: str = RAW_BASE) -> str:
    """Name, size (where known), blob id, URL and destination of every entry, one per line."""
    rows = [("name", "size", "git blob id", "url", "saved as")]
    for w in WEIGHTS.values():
        size = f"{w.size / 1e6:.1f} MB" if w.size else "?"
        mark = "" if w.default else " (not in the default set)"
        rows.append((w.name, size, w.blob, w.url(base_url), w.target + mark))
        if w.config:
            rows.append(("", "?", "(checked by kernel_size)", w.url(base_url, w.config), f"{w.name}/config.txt"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(v.ljust(n) for v, n in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows)


def _part(target: Path) -> Path:
    return target.with_name(f".{target.name}.part")


def _lfs_pointer(path: Path) -> tuple[str, int] | None:
    """(sha256, size) if ``path`` holds a Git LFS pointer, else None."""
    if path.stat().st_size > 1024:
        return None
    text = path.read_bytes()
    if not text.startswith(LFS_HEADER):
        return None
    oid = re.search(rb"^oid sha256:([0-9a-f]{64})$", text, re.MULTILINE)
    size = re.search(rb"^size (\d+)$", text, re.MULTILINE)
    if oid is None or size is None:
        return None
    return oid.group(1).decode(), int(size.group(1))


def _check_blob(part: Path, w: Published, url: str) -> None:
    """Raise WeightError (and remove ``part``) unless the file has the published blob id."""
    got = git_blob_id(part)
    if got != w.blob:
        size = part.stat().st_size
        part.unlink(missing_ok=True)
        raise WeightError(
            f"{part.parent / Path(w.target).name}: the {size} bytes from {url} have git blob id {got}, "
            f"not the published {w.blob}; "
            "the download was removed"
        )


def _fetch_verified(w: Published, part: Path, base_url: str, progress: bool, offline: str | None) -> None:
    """Download ``w`` into ``part`` and verify it; a resumed file that fails is fetched once more from byte 0."""
    url = w.url(base_url)
    _online(offline)
    resumed = part.is_file() and part.stat().st_size > 0
    download(url, part, progress=progress, desc=w.target)
    pointer = _lfs_pointer(part)
    if pointer is not None and git_blob_id(part) == w.blob:
        _fetch_lfs(w, part, pointer, base_url, progress)
        return
    if resumed and git_blob_id(part) != w.blob:
        download(url, part, progress=progress, desc=w.target, resume=False)
    _check_blob(part, w, url)


def _fetch_lfs(w: Published, part: Path, pointer: tuple[str, int], base_url: str, progress: bool) -> None:
    """The content behind a Git LFS pointer of the published blob id, checked by the pointer's sha256 and size."""
    lfs_base = LFS_BASE if base_url == RAW_BASE else f"{base_url.rstrip('/')}/media"
    url = w.url(lfs_base)
    download(url, part, progress=progress, desc=w.target, resume=False)
    sha, size = pointer
    got_size, got = part.stat().st_size, file_digest(part)
    if (got_size, got) != (size, sha):
        part.unlink(missing_ok=True)
        raise WeightError(
            f"{part.parent / Path(w.target).name}: the {got_size} bytes from {url} have sha256 {got}, "
            f"not the {size} bytes of sha256 {sha} its published Git LFS pointer names; the download was removed"
        )


def _online(offline: str | None) -> None:
    """Raise the unreachable-server error of an earlier file instead of trying the network again."""
    if offline is not None:
        raise DownloadError(offline, unreachable=True, reason=offline)


def _local_copy(w: Published, dest: Path, part: Path) -> Path | None:
    """Another selected-or-not entry's file already here with the same blob id, copied to ``part``."""
    for other in WEIGHTS.values():
        source = dest / other.target
        if other is w or other.blob != w.blob or not source.is_file():
            continue
        shutil.copyfile(source, part)
        if git_blob_id(part) == w.blob:
            return source
        part.unlink(missing_ok=True)
    return None


def fetch_weight(
    w: Published, dest: Path, *, base_url: str, force: bool, progress: bool, offline: str | None = None
) -> str:
    """Put ``w`` under ``dest`` (verified) and return a one-line report; WeightError/DownloadError on failure."""
    target = dest / w.target
    if target.is_file():
        have = git_blob_id(target)
        if have == w.blob:
            return f"{target}: already present with the published blob id {w.blob[:12]}, skipped"
        if not force:
            raise WeightError(
                f"{target}: exists with git blob id {have}, not the published {w.blob}; "
                "move it away or pass --force to replace it"
            )
    elif target.exists():
        raise WeightError(f"{target}: exists and is not a file")
    created = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _part(target)
    try:
        source = _local_copy(w, dest, part)
        if source is None:
            _fetch_verified(w, part, base_url, progress, offline)
    except WeightError as exc:
        kept = " (the file already there is untouched)" if target.exists() else ""
        raise WeightError(f"{exc}{kept}") from None
    finally:
        if created and not part.exists() and not any(target.parent.iterdir()):
            target.parent.rmdir()
    os.replace(part, target)
    how = f"copied from {source}" if source is not None else "downloaded"
    return f"{target}: {how}, git blob id {w.blob[:12]} verified"


def fetch_config(
    w: Published, dest: Path, *, base_url: str, force: bool, progress: bool, offline: str | None = None
) -> str:
    """Put AdaCoF-pytorch's config.txt of ``w`` beside its checkpoint, checked by the sizes it gives."""
    target = (dest / w.target).parent / "config.txt"
    want = (w.kernel_size, 1)

    def options(path: Path) -> tuple[int, int] | str:
        try:
            return model_options_from_config(path)
        except AdacofConfigError as exc:
            return str(exc)

    if target.is_file():
        have = options(target)
        if have == want:
            return f"{target}: already present (kernel_size {want[0]}, dilation {want[1]}), skipped"
        if not force:
            raise WeightError(
                f"{target}: exists but gives {have}, not kernel_size {want[0]} / dilation {want[1]}; "
                "move it away or pass --force to replace it"
            )
    url = w.url(base_url, w.config)
    part = _part(target)
    _online(offline)
    download(url, part, progress=progress, desc=f"{w.name}/config.txt", resume=False)
    got = options(part)
    if got != want:
        part.unlink(missing_ok=True)
        raise WeightError(
            f"{target}: {url} gives {got}, not kernel_size {want[0]} / dilation {want[1]}; the download was removed"
        )
    os.replace(part, target)
    return f"{target}: downloaded, kernel_size {want[0]} / dilation {want[1]} verified"


def _by_hand(url: str, target: Path, reason: str) -> str:
    """The one line that tells a user without internet what to fetch and where to put it."""
    host = urlsplit(url).netloc or url
    return f"cannot reach {host} ({reason}): fetch {url} by hand and save it as {target}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download the published CDFI / AdaCoF weights, verified by git blob id.")
    p.add_argument("names", nargs="*", metavar="NAME", help="weights to fetch (default: the CDFI files; 'all')")
    p.add_argument("--dest", default=str(HERE), help="folder to put them in (default: this checkpoints/ folder)")
    p.add_argument("--list", action="store_true", help="print names, sizes, blob ids and URLs, and exit")
    p.add_argument("--force", action="store_true", help="replace files present under a name with another blob id")
    p.add_argument(
        "--base_url",
        default=RAW_BASE,
        help="serve <owner>/<repo>/<branch>/<path> from here instead (a mirror; LFS content under URL/media)",
    )
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every file is in place, 1 when one could not be fetched, 2 for an unknown name."""
    args = build_parser().parse_args(argv)
    if args.list:
        print(list_table(args.base_url))
        return 0
    return run_cli(fetch_all, args, status=lambda failed: 1 if failed else 0)


def fetch_all(args: argparse.Namespace) -> int:
    """Fetch every chosen file (and its config.txt); one line per file; returns how many failed.

    Once the server proves unreachable, the remaining files are not tried: each gets the one line that
    says what to fetch by hand and where to put it."""
    chosen = select(args.names)
    dest = Path(args.dest)
    offline: str | None = None
    failed = 0
    options = {"base_url": args.base_url, "force": args.force, "progress": not args.no_progress}
    for w in chosen:
        steps = [(fetch_weight, w.url(args.base_url), dest / w.target)]
        if w.config:
            steps.append((fetch_config, w.url(args.base_url, w.config), (dest / w.target).parent / "config.txt"))
        for step, url, target in steps:
            try:
                print(step(w, dest, offline=offline, **options))
            except DownloadError as exc:
                failed += 1
                if exc.unreachable:
                    offline = exc.reason
                    print(_by_hand(url, target, offline), file=sys.stderr)
                else:
                    print(f"error: {target}: {exc}", file=sys.stderr)
            except (WeightError, OSError) as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
