"""Channel patterns: at most one ``*``, matching a non-empty run of characters without ``:``.

``user:chat.*`` matches ``user:chat.1`` (wildcard ``"1"``) but neither ``user:chat.`` nor
``user:chat.1:x``. When several patterns match a name, an exact name wins, then the pattern with
the longest literal part. Two patterns that could match one name with equal rank are ambiguous
and refused at registration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from fastapi_channels.wire.errors import ConfigurationError
from fastapi_channels.wire.protocol import CHANNEL_NAME_RE

__all__ = ["ChannelPattern", "PatternTable"]

T = TypeVar("T")
_MAX_PATTERN_LENGTH = 200


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A parsed channel pattern.

    Attributes:
        text: the pattern as written.
        prefix: the literal part before ``*`` (the whole text when there is no ``*``).
        suffix: the literal part after ``*`` (empty when there is no ``*``).
        is_exact: whether the pattern has no ``*``.
    """

    text: str
    prefix: str
    suffix: str
    is_exact: bool

    @classmethod
    def parse(cls, text: str) -> ChannelPattern:
        """Parse ``text``.

        Raises:
            ConfigurationError: empty, too long, more than one ``*``, or whitespace and control
                characters in it.
        """
        if not isinstance(text, str) or not text:
            raise ConfigurationError("a channel pattern must be a non-empty string")
        if len(text) > _MAX_PATTERN_LENGTH:
            raise ConfigurationError(f"channel pattern {text[:40]!r}... is too long")
        stars = text.count("*")
        if stars > 1:
            raise ConfigurationError(f"channel pattern {text!r} has more than one '*'")
        prefix, _, suffix = text.partition("*")
        for part in (prefix, suffix):
            if part and CHANNEL_NAME_RE.fullmatch(part) is None:
                raise ConfigurationError(
                    f"channel pattern {text!r} may not contain whitespace or control characters"
                )
        return cls(text=text, prefix=prefix, suffix=suffix, is_exact=stars == 0)

    @property
    def literal_length(self) -> int:
        """How many literal characters the pattern has: its rank among wildcard patterns."""
        return len(self.prefix) + len(self.suffix)

    def match(self, name: str) -> str | None:
        """Return the wildcard value if ``name`` matches, ``""`` for an exact match, else None."""
        if self.is_exact:
            return "" if name == self.text else None
        end = len(name) - len(self.suffix)
        if end <= len(self.prefix) or not name.startswith(self.prefix):
            return None
        if not name.endswith(self.suffix):
            return None
        value = name[len(self.prefix) : end]
        return None if ":" in value else value

    def overlaps(self, other: ChannelPattern) -> bool:
        """Whether some concrete name matches both wildcard patterns."""
        return _compatible(self.prefix, other.prefix) and _compatible(
            self.suffix[::-1], other.suffix[::-1]
        )


def _compatible(a: str, b: str) -> bool:
    """Whether two prefixes can both begin one name.

    The longer must extend the shorter by a run that the other pattern's ``*`` can absorb (no
    ``:``). Suffixes are compared reversed.
    """
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return longer.startswith(shorter) and ":" not in longer[len(shorter) :]


class PatternTable(Generic[T]):
    """Maps channel patterns to values and resolves concrete names to the best match.

    Exact names are found by one dict lookup; wildcard patterns are tried from the longest
    literal part down, so resolution costs one pass over the wildcard patterns at most.
    """

    def __init__(self) -> None:
        self._exact: dict[str, T] = {}
        self._wildcards: list[tuple[ChannelPattern, T]] = []

    def add(self, pattern: ChannelPattern, value: T) -> None:
        """Register ``value`` under ``pattern``.

        Raises:
            ConfigurationError: the pattern is already registered, or it is ambiguous with a
                registered pattern of equal rank.
        """
        if pattern.is_exact:
            if pattern.text in self._exact:
                raise ConfigurationError(f"channel {pattern.text!r} is registered twice")
            self._exact[pattern.text] = value
            return
        for known, _ in self._wildcards:
            if known.text == pattern.text:
                raise ConfigurationError(f"channel pattern {pattern.text!r} is registered twice")
            if known.literal_length == pattern.literal_length and known.overlaps(pattern):
                raise ConfigurationError(
                    f"channel patterns {known.text!r} and {pattern.text!r} are ambiguous: "
                    "some channel name matches both with equal specificity"
                )
        self._wildcards.append((pattern, value))
        self._wildcards.sort(key=lambda item: -item[0].literal_length)

    def resolve(self, name: str) -> tuple[T, str] | None:
        """Return ``(value, wildcard)`` for the best match of ``name``, or None."""
        value = self._exact.get(name)
        if value is not None:
            return value, ""
        for pattern, candidate in self._wildcards:
            wildcard = pattern.match(name)
            if wildcard is not None:
                return candidate, wildcard
        return None

    def __iter__(self) -> Iterator[T]:
        yield from self._exact.values()
        for _, value in self._wildcards:
            yield value
