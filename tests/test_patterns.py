import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_channels import ConfigurationError
from fastapi_channels.wire.patterns import ChannelPattern, PatternTable


@pytest.mark.parametrize(
    ("pattern", "name", "wildcard"),
    [
        ("user:chat.*", "user:chat.1", "1"),
        ("user:chat.*", "user:chat.abc-def", "abc-def"),
        ("user:chat.*", "user:chat.", None),
        ("user:chat.*", "user:chat.1:x", None),
        ("user:chat.*", "user:chats.1", None),
        ("*.room", "lobby.room", "lobby"),
        ("a*z", "abcz", "bc"),
        ("a*z", "az", None),
        ("global-chat", "global-chat", ""),
        ("global-chat", "global-chat2", None),
        ("user:*", "user:1", "1"),
        ("user:*", "user:1:2", None),
    ],
)
def test_match(pattern: str, name: str, wildcard: str | None) -> None:
    assert ChannelPattern.parse(pattern).match(name) == wildcard


@pytest.mark.parametrize("bad", ["", "a**", "*a*", "a b*", "x\n*", "x" * 201])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        ChannelPattern.parse(bad)


def table(*patterns: str) -> PatternTable[str]:
    result: PatternTable[str] = PatternTable()
    for pattern in patterns:
        result.add(ChannelPattern.parse(pattern), pattern)
    return result


def test_exact_beats_wildcard_and_longest_literal_wins() -> None:
    t = table("user:*", "user:chat.*", "user:chat.1")
    assert t.resolve("user:chat.1") == ("user:chat.1", "")
    assert t.resolve("user:chat.2") == ("user:chat.*", "2")
    assert t.resolve("user:9") == ("user:*", "9")
    assert t.resolve("other") is None


@pytest.mark.parametrize(
    ("first", "second"),
    [("a.*", "*.b"), ("user:*", "user:*"), ("x*", "*y"), ("room.*", "room.*")],
)
def test_ambiguous_or_duplicate_registration_fails(first: str, second: str) -> None:
    with pytest.raises(ConfigurationError):
        table(first, second)


@pytest.mark.parametrize(
    ("first", "second"),
    [("a:*", "*.b"), ("user:chat.*", "user:*"), ("a*", "b*"), ("a:x*", "*:y")],
)
def test_patterns_that_cannot_collide_coexist(first: str, second: str) -> None:
    table(first, second)


def test_duplicate_exact_name_fails() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        table("lobby", "lobby")


segment = st.text(alphabet="abc.:-", min_size=0, max_size=4)


@given(p1=segment, s1=segment, p2=segment, s2=segment, middle=st.text("abc.:-", max_size=6))
def test_overlap_is_exact(p1: str, s1: str, p2: str, s2: str, middle: str) -> None:
    """If some name matches both patterns, overlaps() must say so (and the converse holds for
    the names we can build)."""
    a = ChannelPattern.parse(p1 + "*" + s1)
    b = ChannelPattern.parse(p2 + "*" + s2)
    for name in (p1 + middle + s1, p2 + middle + s2, p1 + p2 + middle + s2 + s1):
        if a.match(name) is not None and b.match(name) is not None:
            assert a.overlaps(b)
            assert b.overlaps(a)


@given(p1=segment, s1=segment, p2=segment, s2=segment)
def test_overlap_has_a_witness(p1: str, s1: str, p2: str, s2: str) -> None:
    a = ChannelPattern.parse(p1 + "*" + s1)
    b = ChannelPattern.parse(p2 + "*" + s2)
    if a.overlaps(b):
        name = max(p1, p2, key=len) + "x" + max(s1, s2, key=len)
        assert a.match(name) is not None
        assert b.match(name) is not None
