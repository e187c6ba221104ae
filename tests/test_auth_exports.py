import fastapi_channels
import fastapi_channels.auth

EXPORTED = {
    "AuthFailure",
    "Authentication",
    "AuthenticationError",
    "JWKS",
    "JWTAuth",
    "Key",
    "KeySet",
    "OriginPolicy",
    "TokenLifetime",
    "TokenSource",
    "TokenUser",
    "TokenVerifier",
    "UserLoader",
    "VerifiedToken",
    "get_authentication",
    "select_subprotocol",
}


def test_auth_public_names_are_pinned() -> None:
    assert set(fastapi_channels.auth.__all__) == EXPORTED
    for name in EXPORTED:
        assert getattr(fastapi_channels.auth, name) is not None


def test_authentication_error_is_a_reject() -> None:
    error = fastapi_channels.auth.AuthenticationError
    assert issubclass(error, fastapi_channels.Reject)
    assert issubclass(error, fastapi_channels.ChannelsError)
