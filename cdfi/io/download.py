"""HTTP downloads shared by the data and weight fetchers: resumable transfers, digests, git blob ids.

``download`` writes into a partial file beside the target and resumes it with an HTTP Range request
(or starts over cleanly when the server ignores the range), so a dropped connection costs only the
missing bytes. Callers verify the partial file and only then rename it into place, which keeps a half
or wrong download from ever taking a good file's name.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cdfi.cli import WorkError

TIMEOUT_S = 60
BLOCK = 1 << 20


class DownloadError(WorkError):
    """A download, archive or checksum problem; the message is one line for the user.

    ``unreachable`` is True when no connection to the server could be made at all (no network, no such
    host, connection refused): callers then tell the user what to fetch by hand. ``reason`` is the
    short cause (e.g. ``HTTP 404 Not Found`` or ``[Errno 111] Connection refused``).
    """

    def __init__(self, message: str, unreachable: bool = False, reason: str = "") -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.reason = reason or message


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    return file_digest(path, "sha256")


def git_blob_id(path: str | Path) -> str:
    """The id git gives the file's content: SHA-1 of ``b"blob <size>\\0"`` followed by the bytes.

    It is what a repository's tree lists for each file, so a download can be checked against the
    published repository without a separate checksum list.
    """
    path = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return str(reason) or type(exc).__name__


def _resumed_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """True when the server answered a Range request from ``offset`` with exactly that range."""
    if response.status != 206:
        return False
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == offset


def download(
    url: str,
    part: str | Path,
    *,
    progress: bool = True,
    desc: str | None = None,
    resume: bool = True,
    attempts: int = 3,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch ``url`` into ``part`` and return it; ``DownloadError`` with a one-line reason on failure.

    With ``resume`` an existing ``part`` is continued from its size by a Range request; a server that
    ignores the range (200), or refuses it (416), makes the transfer restart from byte 0. A connection
    dropped mid-file is retried (resuming) up to ``attempts`` times in all; after the last one the
    partial file is kept so that the next run resumes it. An unreachable server is not retried.
    """
    part = Path(part)
    part.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        part.unlink(missing_ok=True)
    error = DownloadError(f"cannot download {url}")
    for _ in range(max(1, attempts)):
        offset = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status == 206 and not _resumed_at(response, offset):
                    part.unlink(missing_ok=True)  # a range other than the one asked for: start over
                    error = DownloadError(f"cannot download {url}: the server sent the wrong byte range")
                    continue
                append = response.status == 206
                start = offset if append else 0
                length = int(response.headers.get("Content-Length") or 0)
                with (
                    part.open("ab" if append else "wb") as out,
                    tqdm(
                        total=start + length if length else None,
                        initial=start,
                        unit="B",
                        unit_scale=True,
                        desc=desc or part.name,
                        file=sys.stderr,
                        disable=not progress,
                        leave=False,
                    ) as bar,
                ):
                    received = 0
                    for block in iter(lambda: response.read(BLOCK), b""):
                        out.write(block)
                        bar.update(len(block))
                        received += len(block)
                if length and received < length:  # read(n) returns b"" at a closed socket, without an error
                    raise http.client.IncompleteRead(b"", length - received)
            return part
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                part.unlink(missing_ok=True)  # the partial file is not a prefix the server knows: restart
                error = DownloadError(f"cannot download {url}: {_reason(exc)} when resuming")
                continue
            raise DownloadError(f"cannot download {url}: {_reason(exc)}", reason=_reason(exc)) from None
        except urllib.error.URLError as exc:
            reason = _reason(exc)
            raise DownloadError(f"cannot download {url}: {reason}", unreachable=True, reason=reason) from None
        except (http.client.HTTPException, OSError) as exc:
            got = part.stat().st_size if part.is_file() else 0
            error = DownloadError(
                f"download of {url} interrupted after {got} bytes ({_reason(exc)}); run again to resume"
            )
    raise error


__all__ = ["TIMEOUT_S", "DownloadError", "download", "file_digest", "git_blob_id", "sha256_file"]
