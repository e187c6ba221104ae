"""Conditional records in a JetStream stream: the reads and writes presence and keys share.

A record is the last message of a subject. A write may name the sequence it expects to replace
(``Nats-Expected-Last-Subject-Sequence``, 0 for none): the stream refuses it when another
process wrote first, which `Conflict` reports, so the caller reads again and redoes its change.
`Missing` reports a stream that does not exist (deleted, or lost in a NATS restart): the
caller creates it again and retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from fastapi_channels.brokers._nats_history import ERRORS, failure
from fastapi_channels.wire.errors import BrokerError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import PubAck, RawStreamMsg

__all__ = ["EXPECTED", "Conflict", "Missing", "read_last", "write"]

EXPECTED: Final = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE: Final = 10071
_STREAM_NOT_FOUND: Final = 10059


class Conflict(Exception):
    """Another process wrote the record first: read it again."""


class Missing(Exception):
    """The stream is gone: create it again."""


async def read_last(
    js: JetStreamContext, stream: str, subject: str, what: str
) -> RawStreamMsg | None:
    """The last message on ``subject`` in ``stream`` (None when it has none).

    Raises:
        Missing: the stream does not exist.
        BrokerError: NATS did not answer (naming ``what``).
    """
    try:
        return await js.get_last_msg(stream, subject)
    except NotFoundError as exc:
        if exc.err_code == _STREAM_NOT_FOUND:
            raise Missing from exc
        return None
    except ERRORS as exc:
        raise failure(f"{what} could not be read", exc) from exc


async def write(
    js: JetStreamContext,
    stream: str,
    subject: str,
    data: bytes,
    headers: dict[str, str],
    what: str,
    unknown: type[BrokerError] = BrokerError,
) -> PubAck:
    """Write ``data`` on ``subject``; with an `EXPECTED` header, only if it still holds.

    Raises:
        Conflict: the expected sequence is not the subject's last any more.
        Missing: the stream does not exist; nothing was written.
        BrokerError: the stream refused the write; nothing was written.
        unknown: NATS did not answer (the stream may have taken it).
    """
    try:
        return await js.publish(subject, data, headers=headers, stream=stream)
    except APIError as exc:
        if exc.err_code == _WRONG_LAST_SEQUENCE:
            raise Conflict from exc
        raise failure(f"{what} refused a write", exc) from exc
    except NoStreamResponseError as exc:
        raise Missing from exc
    except ERRORS as exc:
        raise unknown(f"{what} did not answer: {exc or type(exc).__name__}") from exc
