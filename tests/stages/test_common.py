"""The shared stage helpers turn expected input errors into one-line click errors."""

from __future__ import annotations

import click
import pytest

from stages.common import run_or_exit


def _raise(exc: Exception) -> None:
    raise exc


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (KeyError("no subject 'v1' in the store"), "no subject 'v1' in the store"),
        (ValueError("a.txt: line 3: bad value"), "a.txt: line 3: bad value"),
        (FileNotFoundError("missing.h5"), "missing.h5"),
    ],
)
def test_input_errors_become_click_errors_with_the_plain_message(exc: Exception, message: str) -> None:
    with pytest.raises(click.ClickException) as info:
        run_or_exit(_raise, exc)
    assert info.value.message == message


def test_other_errors_are_not_hidden() -> None:
    with pytest.raises(RuntimeError):
        run_or_exit(_raise, RuntimeError("bug"))


def _chained(inner: BaseException, outer: BaseException) -> None:
    try:
        raise inner
    except BaseException:
        raise outer


@pytest.mark.parametrize(
    ("raise_it", "path"),
    [
        (lambda: _raise(OSError(28, "No space left on device", "/out/model.pt")), "/out/model.pt"),
        # h5py: a RuntimeError naming the file and the errno in its text
        (lambda: _raise(RuntimeError("Unable to synchronously flush file (file write failed: filename = "
                                     "'/w/frames.h5.partial', file descriptor = 4, errno = 28, error message = "
                                     "'No space left on device')")), "/w/frames.h5.partial"),
        # torch.save: a RuntimeError raised while handling the OSError
        (lambda: _chained(OSError(28, "No space left on device"), RuntimeError("unexpected pos 704 vs 598")),
         "a stage output"),
    ],
)
def test_a_full_disk_is_one_line_naming_the_path(raise_it, path: str) -> None:
    with pytest.raises(click.ClickException) as info:
        run_or_exit(raise_it)
    assert info.value.message == (
        f"{path}: no space left on device; free some space (or point the output elsewhere) and rerun"
    )


def test_other_os_errors_are_not_hidden() -> None:
    with pytest.raises(PermissionError):
        run_or_exit(_raise, PermissionError(13, "Permission denied", "/x"))
