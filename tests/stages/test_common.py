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
