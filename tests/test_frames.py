"""The framing that packs several messages into one Redis message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_channels.brokers._frames import ORIGIN_SIZE, pack, pack_batches, unpack

ORIGIN = b"\x00\x01\x02\x03\x04\x05\x06\x07"
messages = st.lists(st.binary(max_size=300), max_size=50)


@given(messages)
def test_unpack_returns_what_was_packed(sent: list[bytes]) -> None:
    assert unpack(pack(ORIGIN, sent)) == (ORIGIN, sent)


@given(messages, st.integers(min_value=1, max_value=2000))
def test_batches_keep_order_and_respect_the_size_limit(sent: list[bytes], limit: int) -> None:
    payloads = list(pack_batches(ORIGIN, sent, limit))
    received = [message for payload in payloads for message in unpack(payload)[1]]
    assert received == sent
    for payload in payloads:
        # Over the limit only when one message alone does not fit.
        assert len(payload) <= limit or len(unpack(payload)[1]) == 1


def test_a_burst_of_small_messages_packs_into_few_payloads() -> None:
    payloads = list(pack_batches(ORIGIN, [b"x" * 100] * 10_000, 64 * 1024))
    assert len(payloads) == 16  # 630 messages of 4 + 100 bytes fit in 64 KiB


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x01" + ORIGIN[:4],
        b"\x02" + ORIGIN,
        b"\x01" + ORIGIN + b"\x00\x00",
        b"\x01" + ORIGIN + b"\x00\x00\x00\x05abc",
        b"plain text",
    ],
    ids=["empty", "short-header", "unknown-version", "short-length", "short-message", "text"],
)
def test_a_malformed_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(payload)


def test_origin_must_have_its_size() -> None:
    with pytest.raises(ValueError):
        pack(b"x" * (ORIGIN_SIZE + 1), [b"m"])
