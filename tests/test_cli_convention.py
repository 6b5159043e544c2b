"""cdfi.cli.run_cli, the one error convention of every script: 0 done, 2 bad arguments or input (one
``error:`` line), 1 a failure while working, 130 Ctrl-C with the line saying what was not written; and
errors that are bugs are not swallowed."""

from __future__ import annotations

import errno

import pytest

from cdfi.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, WorkError, run_cli
from cdfi.io.atomic import OutputExistsError, OutputWriteError
from cdfi.io.paths import MissingCheckpointError
from cdfi.runtime import DeviceError, PrecisionError


def raising(exc: BaseException):
    def work(*args: object) -> None:
        raise exc

    return work


def test_exit_status_values() -> None:
    assert (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED) == (0, 1, 2, 130)


def test_success_passes_arguments_and_maps_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[object, ...]] = []
    assert run_cli(lambda *args: seen.append(args), 1, "two") == 0
    assert seen == [(1, "two")]
    assert run_cli(lambda: 3, status=lambda n: 1 if n > 2 else 0) == 1
    assert run_cli(lambda: 0, status=lambda n: n) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("--limit must be at least 1, got 0"),
        UsageError("--tile: bad"),
        DeviceError("--device cuda: no CUDA GPU is available; use --device cpu"),
        PrecisionError("precision fp16 is not supported on the CPU; use fp32 or bf16"),
        FileNotFoundError("a.png: no such file"),
        MissingCheckpointError("x.pth: checkpoint not found"),
        OutputExistsError("out.png: already exists (pass --force to overwrite)"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(raising(exc)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {exc}\n"


@pytest.mark.parametrize(
    "exc",
    [
        OutputWriteError("out.png: cannot write (No space left on device)"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.ENOSPC, "No space left on device"),
        WorkError("download broke off after 3 of 10 MB"),
    ],
)
def test_failures_while_working_exit_1(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(raising(exc)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(exc) in err


def test_messages_become_one_line_and_prog_prefixes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(raising(ValueError("first line\nsecond line")), prog="compress.py") == 2
    assert capsys.readouterr().err == "compress.py: error: first line second line\n"
    assert run_cli(raising(ValueError(""))) == 2
    assert capsys.readouterr().err == "error: ValueError\n"


def test_ctrl_c_exits_130_saying_what_was_not_written(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(raising(KeyboardInterrupt()), on_interrupt="interrupted; out.png was not written") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == "interrupted; out.png was not written"
    assert run_cli(raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted"


def test_bugs_are_not_swallowed() -> None:
    for exc in (RuntimeError("shape mismatch"), TypeError("bad call"), KeyError("x")):
        with pytest.raises(type(exc)):
            run_cli(raising(exc))
