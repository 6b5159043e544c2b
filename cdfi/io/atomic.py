"""Safe output files: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C therefore never leaves a half-written image, video or checkpoint behind, and an
existing file is only replaced when the caller said so (``--force``). ``ensure_writable`` checks an
output location before any work, so that an unwritable folder fails in one line up front; a write that
still fails names the final output, never the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """Refusal to overwrite a user's file without ``--force``."""


class OutputWriteError(OSError):
    """An output that cannot be written; the message names the final output path and the reason."""


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
"""Errors without a file name that still mean "this output could not be written"."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its closest ancestor that exists."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable_location(path: str | Path, folder: bool = False) -> Path:
    """Raise ``OutputWriteError`` unless ``path`` (a file, or with ``folder`` a folder) can be created there.

    An existing folder target is probed itself; otherwise the closest existing ancestor of the target must
    be a writable folder. The probe creates and removes a temporary file, which catches read-only mounts
    and permissions that ``os.access`` misjudges; nothing is left behind.
    """
    path = Path(path)
    target = path.absolute()
    if folder and target.is_dir():
        where = target
    else:
        where = _nearest_existing(target.parent)
        if not where.is_dir():
            raise OutputWriteError(f"{path}: cannot be created, {where} is a file, not a folder")
    if where in (target, target.parent):
        try:
            fd, probe = tempfile.mkstemp(prefix=".cdfi_probe.", dir=where)
        except OSError as exc:
            raise OutputWriteError(f"{path}: cannot write in {where} ({_reason(exc)})") from exc
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
    elif not os.access(where, os.W_OK | os.X_OK):
        raise OutputWriteError(f"{path}: cannot create folders in {where} (permission denied)")
    return path


def _refuse_existing(path: Path, force: bool) -> None:
    if path.is_dir():
        raise OutputWriteError(f"{path}: is a folder; give a file name")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (pass --force to overwrite)")


def ensure_writable(path: str | Path, force: bool) -> Path:
    """Fail early, before any work: if ``path`` exists and ``force`` is not set, if it is a folder, or if
    its location cannot be written (see ``check_writable_location``)."""
    path = Path(path)
    _refuse_existing(path, force)
    check_writable_location(path)
    return path


def _umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_write_error(exc: OSError, path: Path, tmp: Path | None) -> OSError:
    """``exc`` restated for the final ``path`` when it is about writing there, else ``exc`` itself."""
    names = {str(tmp), str(path)} if tmp is not None else {str(path)}
    about_us = str(exc.filename) in names or str(exc.filename2) in names
    if not about_us and not (exc.filename is None and exc.errno in _DISK_ERRNOS):
        return exc
    err = OutputWriteError(f"{path}: cannot write ({_reason(exc)})")
    err.errno = exc.errno
    return err


@contextlib.contextmanager
def atomic_path(path: str | Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    The temporary name keeps the target's suffix so that writers choosing a format by extension
    (PIL, PyAV, torch.save) behave as for the final name. On error the temporary file is removed;
    an ``OSError`` about the temporary file (or the disk) is re-raised as ``OutputWriteError`` naming
    ``path``.
    """
    path = Path(path)
    _refuse_existing(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot write ({_reason(exc)})") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the mode a plain open() would have.
        if tmp_path.exists():
            tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        err = _as_write_error(exc, path, tmp_path)
        if err is exc:
            raise
        raise err from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def staging_directory(target: Path) -> Path:
    """A new, empty folder beside ``target`` (on its file system) in which to build it; hand it to
    ``publish_directory`` when complete, or remove it on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def publish_directory(work: Path, target: Path) -> None:
    """Put the completed folder ``work`` in place of ``target`` (removing an earlier one), with the mode a
    plain mkdir would have given it (``mkdtemp`` makes folders private, 0700)."""
    work.chmod(0o777 & ~_umask())
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)


def atomic_write_text(path: str | Path, text: str, force: bool = True) -> None:
    """Write a text file atomically."""
    with atomic_path(path, force) as tmp:
        tmp.write_text(text)
