"""AdaCoF-pytorch's ``config.txt``: the kernel size and dilation its ``ckpt.pth`` files were trained with.

AdaCoF-pytorch's ``train.py`` appends one block per run to ``config.txt``: a time stamp line
(``2019-09-20-09:55:47``), a blank line, one ``key: value`` line per command-line option, a blank line.
Its ``evaluation.py`` and ``interpolate_*.py`` read every line in order and let a later ``kernel_size``
or ``dilation`` line override an earlier one, so the last run's values win; a missing ``dilation``
means their default, 1. The shipped ``checkpoint/kernelsize_11/config.txt`` holds three runs (kernel
sizes 9, 13, 11) and no dilation: the file is AdaCoF F11/D1, not the paper's F11/D2. Its ``ckpt.pth``
is ``{'epoch': int, 'state_dict': ...}`` with the same keys as the published CDFI ``adacof`` files, so
``cdfi.io.checkpoint.load_model(ckpt, "adacof", k, d, assume_dilation=d)`` loads it.
"""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_DILATION = 1

_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}:\d{2}:\d{2}")
_ENTRY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?")


class AdacofConfigError(ValueError):
    """A config.txt that cannot be read or does not give a usable kernel size / dilation (one line)."""


def _positive_int(path: Path, number: int, key: str, value: str) -> int:
    try:
        parsed = int(value)
    except ValueError:
        parsed = 0
    if parsed < 1:
        raise AdacofConfigError(f"{path}:{number}: {key} is {value!r}, not a positive integer")
    return parsed


def read_adacof_config(path: str | Path) -> dict[str, str | int]:
    """All ``key: value`` entries of an AdaCoF-pytorch config.txt, later lines overriding earlier ones.

    Values are strings except ``kernel_size`` and ``dilation`` (ints; ``dilation`` defaults to 1).
    Blank lines and run time stamps are skipped; any other line that is not ``key: value`` is an
    ``AdacofConfigError`` naming the file and line, as is a missing or non-positive ``kernel_size``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise AdacofConfigError(f"{path}: cannot read AdaCoF config ({reason})") from None
    entries: dict[str, str | int] = {}
    lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line or _STAMP.fullmatch(line):
            continue
        match = _ENTRY.fullmatch(line)
        if match is None:
            raise AdacofConfigError(f"{path}:{number}: not a 'key: value' line: {line[:60]!r}")
        key, value = match.group(1), match.group(2) or ""
        entries[key] = value
        lines[key] = number
    for key in ("kernel_size", "dilation"):
        if key in entries:
            entries[key] = _positive_int(path, lines[key], key, str(entries[key]))
    if "kernel_size" not in entries:
        raise AdacofConfigError(f"{path}: no 'kernel_size: N' line; not an AdaCoF-pytorch config.txt")
    entries.setdefault("dilation", DEFAULT_DILATION)
    return entries


def model_options_from_config(path: str | Path) -> tuple[int, int]:
    """(kernel size, dilation) to build the ``adacof`` model with for a config.txt, as AdaCoF-pytorch does."""
    config = read_adacof_config(path)
    return int(config["kernel_size"]), int(config["dilation"])


def sizes_agreeing_with_config(
    path: str | Path, kernel_size: int | None = None, dilation: int | None = None
) -> tuple[int, int]:
    """``model_options_from_config(path)``, refusing a ``--kernel_size``/``--dilation`` the user also gave
    that disagrees with the file (one line naming the flag to drop)."""
    k, d = model_options_from_config(path)
    for flag, given, value in (("--kernel_size", kernel_size, k), ("--dilation", dilation, d)):
        if given is not None and given != value:
            raise AdacofConfigError(
                f"{flag} {given} disagrees with {path}, which gives {flag[2:]} {value}; drop {flag}"
            )
    return k, d


__all__ = [
    "DEFAULT_DILATION",
    "AdacofConfigError",
    "model_options_from_config",
    "read_adacof_config",
    "sizes_agreeing_with_config",
]
