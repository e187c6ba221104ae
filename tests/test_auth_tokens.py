from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import HTTPConnection

from fastapi_channels.auth import AuthenticationError, AuthFailure, TokenSource, select_subprotocol
from fastapi_channels.auth.tokens import PresentedToken, find_token, subprotocol_token

from .auth_support import claims, hs256

TOKEN = hs256(claims())
OTHER = hs256(claims(sub="43"))
ALL = tuple(TokenSource)


def connection(
    kind: str = "websocket",
    *,
    subprotocols: list[str] | None = None,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    query: str = "",
) -> HTTPConnection:
    scope: dict[str, Any] = {
        "type": kind,
        "path": "/ws",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    if subprotocols is not None:
        scope["subprotocols"] = subprotocols
    return HTTPConnection(scope)


@pytest.mark.parametrize(
    ("offered", "token", "echo"),
    [
        ([TOKEN], TOKEN, TOKEN),
        (["bearer", TOKEN], TOKEN, "bearer"),
        (["Bearer", TOKEN], TOKEN, "Bearer"),
        (["chat.v1", "bearer", TOKEN], TOKEN, "bearer"),
        (["bearer"], None, "bearer"),
        (["bearer", "null"], None, "bearer"),
        (["null"], None, "null"),
        (["undefined"], None, "undefined"),
        ([""], None, ""),
        (["chat.v1", TOKEN], TOKEN, "chat.v1"),
        ([TOKEN, "chat.v1"], TOKEN, "chat.v1"),
        (["chat.v1", "graphql-ws"], None, "chat.v1"),
        (["not-a-jwt"], "not-a-jwt", "not-a-jwt"),
        ([], None, None),
    ],
    ids=[
        "envuso-token-alone",
        "bearer-pair",
        "bearer-any-case",
        "bearer-after-app-protocol",
        "bearer-without-token",
        "bearer-null",
        "null",
        "undefined",
        "empty",
        "app-protocol-and-token",
        "token-first",
        "no-token",
        "junk-alone-must-verify",
        "nothing-offered",
    ],
)
def test_subprotocol_token_and_echo(
    offered: list[str], token: str | None, echo: str | None
) -> None:
    assert subprotocol_token(offered) == token
    assert select_subprotocol(offered) == echo


@pytest.mark.parametrize(
    "offered",
    [["bearer", TOKEN, "bearer", OTHER], [TOKEN, OTHER]],
    ids=["marker-twice", "two-tokens"],
)
def test_ambiguous_subprotocol_offers_are_refused(offered: list[str]) -> None:
    with pytest.raises(AuthenticationError) as caught:
        subprotocol_token(offered)
    assert caught.value.failure is AuthFailure.MALFORMED


@given(st.lists(st.text(max_size=40), max_size=5))
def test_echo_is_always_an_offered_value_and_never_the_token_after_a_marker(
    offered: list[str],
) -> None:
    echo = select_subprotocol(offered)
    assert echo is None if not offered else echo in offered
    if any(value.strip().lower() == "bearer" for value in offered):
        assert echo is not None and echo.strip().lower() == "bearer"
    try:
        token = subprotocol_token(offered)
    except AuthenticationError as exc:
        assert exc.failure is AuthFailure.MALFORMED
    else:
        assert token is None or token in [value.strip() for value in offered]


def test_sources_are_tried_in_the_configured_order() -> None:
    conn = connection(
        subprotocols=[TOKEN],
        headers=[("Authorization", f"Bearer {OTHER}"), ("Cookie", "access_token=c")],
        query="token=q",
    )
    assert find_token(conn, ALL) == PresentedToken(TOKEN, TokenSource.SUBPROTOCOL)
    order = (TokenSource.QUERY, TokenSource.COOKIE, TokenSource.HEADER)
    assert find_token(conn, order) == PresentedToken("q", TokenSource.QUERY)
    assert find_token(conn, order[1:]) == PresentedToken("c", TokenSource.COOKIE)
    assert find_token(conn, order[2:]) == PresentedToken(OTHER, TokenSource.HEADER)


def test_an_empty_source_falls_through_to_the_next() -> None:
    conn = connection(
        subprotocols=["null"], headers=[("Authorization", "Bearer undefined")], query="token="
    )
    assert find_token(conn, ALL) is None
    conn = connection(subprotocols=["undefined"], query=f"token={TOKEN}")
    assert find_token(conn, ALL) == PresentedToken(TOKEN, TokenSource.QUERY)


def test_query_and_cookie_are_read_only_when_listed() -> None:
    conn = connection(headers=[("Cookie", f"session={TOKEN}")], query=f"token={TOKEN}")
    assert find_token(conn, (TokenSource.SUBPROTOCOL, TokenSource.HEADER)) is None
    found = find_token(conn, (TokenSource.COOKIE,), cookie_name="session")
    assert found == PresentedToken(TOKEN, TokenSource.COOKIE)
    found = find_token(connection(query="jwt=x"), (TokenSource.QUERY,), query_param="jwt")
    assert found == PresentedToken("x", TokenSource.QUERY)


def test_subprotocol_is_ignored_on_http() -> None:
    conn = connection("http", subprotocols=[TOKEN])
    assert find_token(conn, ALL) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer   {TOKEN}  ", TOKEN),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer null", None),
        ("", None),
    ],
)
def test_authorization_header(header: str, expected: str | None) -> None:
    found = find_token(connection("http", headers=[("Authorization", header)]), ALL)
    assert (found.token if found else None) == expected


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([("Authorization", "Bearer a"), ("Authorization", "Bearer b")], ""),
        ([("Authorization", "Bearer a b")], ""),
        ([], "token=a&token=b"),
    ],
    ids=["two-authorization-headers", "space-in-credentials", "repeated-query"],
)
def test_ambiguous_sources_are_refused(headers: list[tuple[str, str]], query: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        find_token(connection("http", headers=headers, query=query), ALL)
    assert caught.value.failure is AuthFailure.MALFORMED


def test_presented_token_hides_the_token_in_repr() -> None:
    presented = PresentedToken(TOKEN, TokenSource.HEADER)
    assert TOKEN not in repr(presented) and "header" in repr(presented)


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@given(
    authorization=st.lists(HEADER_TEXT, max_size=2),
    cookie=HEADER_TEXT,
    query=HEADER_TEXT,
    offered=st.lists(HEADER_TEXT, max_size=3),
)
def test_find_token_never_fails_other_than_with_a_refusal(
    authorization: list[str], cookie: str, query: str, offered: list[str]
) -> None:
    headers = [("Authorization", value) for value in authorization] + [("Cookie", cookie)]
    conn = connection(subprotocols=offered, headers=headers, query=query)
    try:
        found = find_token(conn, ALL)
    except AuthenticationError as exc:
        assert exc.failure is AuthFailure.MALFORMED
    else:
        assert found is None or (found.token and found.token.lower() not in {"null", "undefined"})
