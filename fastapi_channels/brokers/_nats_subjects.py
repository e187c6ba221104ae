"""Where the NATS broker puts each topic: subjects under a prefix, and the stream's name.

A topic may hold any character; a NATS subject token may not hold ``.`` (the token separator),
``*`` and ``>`` (wildcards) or whitespace, and must not be empty. So each topic is encoded into
one token, reversibly: ASCII letters, digits, ``-``, ``_`` and ``:`` stay as they are; every
other byte of the topic's UTF-8 form becomes ``%`` and two upper-case hex digits (``a.b`` is
``a%2Eb``, ``%`` itself ``%25``); the empty topic is the token ``%``. A topic of plain names
therefore reads the same in NATS tools, and two topics never share a token.

Subjects, under the broker's prefix ``P`` (one or more tokens, such as ``myapp`` or
``myapp.channels``):

* ``P.m.<token>``: the topic's messages, plain ones and stored ones alike (the history stream
  republishes what it stores there); each process subscribes here;
* ``P.s.<token>``: stored messages on their way into the history stream, which captures
  ``P.s.*``; nobody subscribes to these;
* ``P.o.<token>``: plain messages published once per key, on their way through the
  idempotency stream (``<stream>_once``), which republishes them to ``P.m.<token>``;
* ``P.k.<token>.<key token>``: the record of a key published on the topic, in the same
  stream, not republished;
* ``P.q.<group token>``: the topics counted in a group of a bounded retention, in the quota
  stream (``<stream>_quota``);
* ``$KV.<bucket>.t.<token>``, ``$KV.<bucket>.alive.<process>`` and ``$KV.<bucket>.unsettled``:
  the presence bucket's keys (see `fastapi_channels.brokers._nats_presence`), whose stream
  republishes the headers of each ``t.<token>`` change to ``P.m.<token>``;
* ``P.flush``: requests nobody answers, which the server refuses at once ("no responders"): a
  round trip in the connection's order (see `fastapi_channels.brokers.nats`).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["Subjects", "decode_token", "encode_token"]

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:")
_EMPTY: Final = "%"
_PREFIX_TOKEN: Final = re.compile(r"[A-Za-z0-9_:-]+")
_ESCAPE: Final = re.compile(r"%([0-9A-F]{2})")


def encode_token(topic: str) -> str:
    """Return the subject token for ``topic`` (see the module's docstring); never fails."""
    if not topic:
        return _EMPTY
    if topic.isascii() and all(byte in _SAFE for byte in topic.encode()):
        return topic
    return "".join(
        chr(byte) if byte in _SAFE else f"%{byte:02X}"
        for byte in topic.encode("utf-8", "surrogatepass")
    )


def decode_token(token: str) -> str:
    """Return the topic that `encode_token` turned into ``token``.

    Raises:
        ValueError: ``token`` is not one `encode_token` makes.
    """
    if token == _EMPTY:
        return ""
    raw = bytearray()
    position = 0
    for match in _ESCAPE.finditer(token):
        plain = token[position : match.start()]
        if "%" in plain:
            raise ValueError(f"malformed escape in subject token {token!r}")
        raw += plain.encode("ascii")
        raw.append(int(match.group(1), 16))
        position = match.end()
    rest = token[position:]
    if "%" in rest or not rest.isascii():
        raise ValueError(f"malformed subject token {token!r}")
    raw += rest.encode("ascii")
    return raw.decode("utf-8", "surrogatepass")


class Subjects:
    """The subjects and the stream name of one prefix.

    Args:
        prefix: dot-separated tokens of letters, digits, ``-``, ``_`` and ``:``.

    Raises:
        ValueError: the prefix is not such tokens.
    """

    def __init__(self, prefix: str) -> None:
        tokens = prefix.split(".")
        if not all(_PREFIX_TOKEN.fullmatch(token) for token in tokens):
            raise ValueError(
                f"a NATS prefix is dot-separated tokens of letters, digits, '-', '_' and ':'; "
                f"not {prefix!r}"
            )
        self.prefix = prefix
        self.messages_wildcard = f"{prefix}.m.*"
        self.stored_wildcard = f"{prefix}.s.*"
        self.flush = f"{prefix}.flush"
        self.stream = "fastapi_channels_" + re.sub(r"[.:]", "_", prefix)
        """The history stream's name (stream names allow no ``.``)."""
        self.once_stream = self.stream + "_once"
        """The idempotency stream's name."""
        self.once_wildcard = f"{prefix}.o.*"
        self.once_records_wildcard = f"{prefix}.k.*.*"
        self.quota_stream = self.stream + "_quota"
        """The stream of the groups' counts of topics keeping history."""
        self.quota_wildcard = f"{prefix}.q.*"
        self.bucket = self.stream + "_presence"
        """The presence key-value bucket's name; its stream is ``KV_<bucket>``."""
        self.presence_stream = "KV_" + self.bucket
        self.presence_wildcard = f"$KV.{self.bucket}.>"
        self.presence_topics = f"$KV.{self.bucket}.t.*"

    def messages(self, topic: str) -> str:
        """The subject each process subscribes to for ``topic``."""
        return f"{self.prefix}.m.{encode_token(topic)}"

    def stored(self, topic: str) -> str:
        """The subject a stored message of ``topic`` is published to (the stream's input)."""
        return f"{self.prefix}.s.{encode_token(topic)}"

    def once(self, topic: str) -> str:
        """The subject a plain message published once per key on ``topic`` goes through."""
        return f"{self.prefix}.o.{encode_token(topic)}"

    def once_record(self, topic: str, key: str) -> str:
        """The subject of the record of ``key`` published on ``topic``."""
        return f"{self.prefix}.k.{encode_token(topic)}.{encode_token(key)}"

    def quota(self, group: str) -> str:
        """The subject of the record of the topics counted in ``group``."""
        return f"{self.prefix}.q.{encode_token(group)}"

    def presence(self, topic: str) -> str:
        """The subject of ``topic``'s member record in the presence bucket."""
        return f"$KV.{self.bucket}.t.{encode_token(topic)}"

    def lease(self, process: str) -> str:
        """The subject of ``process``'s lease in the presence bucket."""
        return f"$KV.{self.bucket}.alive.{process}"

    @property
    def unsettled(self) -> str:
        """The subject of the record that the presence bucket lost its records, and when."""
        return f"$KV.{self.bucket}.unsettled"

    def republish_to(self) -> str:
        """The stream's republish destination: the ``messages`` subject of the same token."""
        return f"{self.prefix}.m.{{{{wildcard(1)}}}}"
