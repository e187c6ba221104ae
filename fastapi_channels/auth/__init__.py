"""JWT authentication for channels and HTTP routes, and the websocket ``Origin`` check.

One concept per module:

- `keys`: keys bound to their algorithms, key sets with ``kid``.
- `jwks`: keys fetched from an identity provider's JWKS URL, cached and refreshed.
- `verifier`: verifying and issuing tokens.
- `tokens`: where a token travels; which subprotocol to echo.
- `origin`: the ``Origin`` allow-list.
- `users`: turning claims into the application's user.
- `context`: the record of who a connection is.
- `lifetime`: expiry and in-band renewal on live connections.
- `dependency`: `JWTAuth`, the FastAPI dependency.

A typical set-up:

```python
verifier = TokenVerifier(Key.hmac(secret), issuer="my-app", audience="my-app")
auth = JWTAuth(verifier, user_loader=load_user)
channels = Channels(user=auth)

@app.get("/me")
async def me(user: User = Depends(auth.required)) -> User: ...
```
"""

from fastapi_channels.auth.context import Authentication, get_authentication
from fastapi_channels.auth.dependency import JWTAuth
from fastapi_channels.auth.jwks import JWKS
from fastapi_channels.auth.keys import Key, KeySet
from fastapi_channels.auth.lifetime import TokenLifetime
from fastapi_channels.auth.origin import OriginPolicy
from fastapi_channels.auth.tokens import TokenSource, select_subprotocol
from fastapi_channels.auth.users import TokenUser, UserLoader
from fastapi_channels.auth.verifier import TokenVerifier, VerifiedToken
from fastapi_channels.wire.errors import AuthenticationError, AuthFailure

__all__ = [
    "JWKS",
    "AuthFailure",
    "Authentication",
    "AuthenticationError",
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
]
