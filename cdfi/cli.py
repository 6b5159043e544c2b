"""One error convention for every command-line script.

Library code raises ``ValueError`` subclasses (and ``OSError``) with one-line messages. A script's
``main`` is ``return run_cli(work, args)``: this turns those into ``error: <message>`` on stderr and an
exit status, the same in every script:

* 2: bad arguments or bad input (a ``ValueError``: a wrong flag value, an unreadable image, a
  checkpoint of another variant, a missing data set), detected before or during the work;
  a ``FileNotFoundError`` (an input that is not there) and a ``FileExistsError`` (an output in the way,
  without ``--force``);
* 1: a failure while working (any other ``OSError``: a disk that fills up, an output that cannot be written;
  a ``WorkError``: a download that breaks off);
* 130: interrupted with Ctrl-C (``on_interrupt`` says what was, or was not, written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A flag value that cannot be honoured (exit 2, nothing written)."""


class WorkError(RuntimeError):
    """A failure while working that is not the input's fault (exit 1): a download that breaks off or
    does not match its checksum, a tool that is missing."""


def error_line(exc: BaseException) -> str:
    """The message of a library error as one line."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines())


def run_cli(
    work: Callable[..., T],
    *args: object,
    on_interrupt: str | None = None,
    status: Callable[[T], int] | None = None,
    prog: str | None = None,
) -> int:
    """Call ``work(*args)`` and map its outcome to an exit status (see the module docstring).

    ``status`` turns the work's return value into an exit status (default: 0); ``on_interrupt`` is
    printed after Ctrl-C (default: ``interrupted``); ``prog`` prefixes error lines (``prog: error: ...``)."""
    lead = f"{prog}: error" if prog else "error"
    try:
        result = work(*args)
    except KeyboardInterrupt:
        print(f"\n{on_interrupt or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"{lead}: {error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, WorkError) as exc:
        print(f"{lead}: {error_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if status is None else status(result)
