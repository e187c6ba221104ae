"""What the NATS broker's JetStream parts share: streams, errors, and conditional records.

A record is the last message of a subject. A write may name the sequence it expects to replace
(``Nats-Expected-Last-Subject-Sequence``, 0 for none): the stream refuses it when another
process wrote first, which `Conflict` reports, so the caller reads again and redoes its change.
`Missing` reports a stream that does not exist (deleted, or lost in a NATS restart): the
caller creates it again and retries.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from nats.errors import Error as NatsError
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from fastapi_channels.wire.errors import BrokerError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import PubAck, RawStreamMsg, StreamConfig

__all__ = [
    "ERRORS",
    "EXPECTED",
    "Conflict",
    "Missing",
    "ensure_stream",
    "failure",
    "read_last",
    "stamp",
    "write",
]

ERRORS: Final = (NatsError, APIError, OSError, asyncio.TimeoutError)
"""What a JetStream request may raise when NATS or the stream fails."""
EXPECTED: Final = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE: Final = 10071
_STREAM_NOT_FOUND: Final = 10059
_STREAM_EXISTS: Final = 10058
_SUBJECTS_OVERLAP: Final = 10065
_CREATE_ATTEMPTS: Final = 3
_CREATE_PAUSE: Final = 0.05
"""Seconds before creating again a stream whose subjects were taken by a half-made one."""


async def ensure_stream(js: JetStreamContext, config: StreamConfig, what: str) -> None:
    """Create the stream of ``config``, or bring an existing one's configuration up to date.

    Several processes start at once and each creates the stream. NATS may answer one of two
    concurrent creations with "subjects overlap" (the other's stream is half registered) or
    "name in use" (configurations differ): both are retried as an update of the stream of that
    name, at most `_CREATE_ATTEMPTS` times.

    Raises:
        BrokerError: NATS refused or did not answer (naming ``what``), or another stream of a
            different name already takes these subjects.
    """
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            try:
                await js.add_stream(config)
                return
            except APIError as exc:
                if exc.err_code not in (_STREAM_EXISTS, _SUBJECTS_OVERLAP):
                    raise
                try:
                    await js.update_stream(config)
                    return
                except NotFoundError:
                    if attempt == _CREATE_ATTEMPTS:
                        raise failure(
                            f"cannot create {what}: another stream already takes its subjects "
                            f"{config.subjects}",
                            exc,
                        ) from exc
                    await asyncio.sleep(_CREATE_PAUSE * attempt)
        except ERRORS as exc:
            raise failure(f"cannot create {what}", exc) from exc


def stamp(message: RawStreamMsg) -> float:
    """When the stream stored ``message`` (its clock), in seconds since the epoch."""
    return message.time.timestamp() if message.time is not None else time.time()


def failure(what: str, exc: BaseException) -> BrokerError:
    """A `BrokerError` saying ``what`` failed, and why."""
    detail = str(exc) or type(exc).__name__
    return BrokerError(f"{what}: {detail}")


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
