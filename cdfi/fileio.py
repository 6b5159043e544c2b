"""Safe output files: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C therefore never leaves a half-written image, video or checkpoint behind, and an
existing file is only replaced when the caller said so (``--force``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """Refusal to overwrite a user's file without ``--force``."""


def ensure_writable(path: str | Path, force: bool) -> Path:
    """Fail early, before any work, if ``path`` exists and ``force`` is not set."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (pass --force to overwrite)")
    return path


def _umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    The temporary name keeps the target's suffix so that writers choosing a format by extension
    (PIL, PyAV, torch.save) behave as for the final name. On error the temporary file is removed.
    """
    path = ensure_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the mode a plain open() would have.
        if tmp_path.exists():
            tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, force: bool = True) -> None:
    """Write a text file atomically."""
    with atomic_path(path, force) as tmp:
        tmp.write_text(text)
