"""An operating-system or FFmpeg error in words, without the number and file name its text repeats.

``str()`` of an ``OSError`` reads ``[Errno 13] Permission denied: 'out/a.csv'`` and of a PyAV error
``[Errno 1094995529] Invalid data found when processing input: 'clip.avi'``. FFmpeg's error numbers
are four-letter tags, not errnos (1094995529 is ``-AVERROR_INVALIDDATA``, the tag ``INDA``), so the
number tells a reader nothing; the words do. Messages name the file themselves, so the file name is
repeated only when it is another file than the one the message names.

Example:
    >>> error_words(PermissionError(13, "Permission denied", "out/a.csv"))
    'out/a.csv: Permission denied'
    >>> error_words(PermissionError(13, "Permission denied", "out/a.csv"), shown="out/a.csv")
    'Permission denied'
    >>> error_words(ValueError("frame 3 is unreadable"))
    'frame 3 is unreadable'
"""

from __future__ import annotations

from pathlib import Path


def error_words(exc: BaseException, shown: str | Path | None = None) -> str:
    """What ``exc`` says went wrong, in words: an error with a ``strerror`` (``OSError``, every PyAV
    error) gives that text, prefixed by its ``filename`` unless it is ``shown`` (the file the caller's
    message already names); any other error gives ``str(exc)``."""
    words = getattr(exc, "strerror", None)
    if not isinstance(words, str) or not words:
        return str(exc)
    filename = getattr(exc, "filename", None)
    if filename is None or (shown is not None and str(filename) == str(shown)):
        return words
    return f"{filename}: {words}"
