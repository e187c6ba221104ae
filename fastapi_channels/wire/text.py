"""Text from clients, made safe to log: one line, nothing that a terminal would interpret.

A request path, a user id or a reason can carry CR and LF (which would forge log lines), ANSI
escape sequences (which a terminal would run) and invisible bidi or zero-width characters
(which make one text look like another). `printable` escapes them the way ``repr`` does.
"""

from __future__ import annotations

from typing import Final

__all__ = ["printable"]

LOG_LIMIT: Final = 200
"""The most characters of one client-provided value written to the log."""


def printable(value: object, limit: int = LOG_LIMIT) -> str:
    r"""``value`` as text for a log line: non-printable characters escaped, cut at ``limit``.

    Printable text (the usual case) is returned as it is, so logs stay readable; anything else
    (``\r``, ``\n``, ``\x1b``, ``\u202e``, ...) is written as its escape sequence. A longer
    text ends with ``...``.
    """
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
