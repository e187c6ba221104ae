r"""``fastapi-channels publish``: publish an event through a running app's HTTP API.

```bash
export FASTAPI_CHANNELS_API_KEY=...
fastapi-channels publish http://127.0.0.1:8000/ws/api -c room:1 -e message -d '{"text": "hi"}' \
    --key order-42
```

The URL is the API's base (``{path}/api`` of the app, ``/ws/api`` by default). The API key comes
from ``--api-key`` or the ``FASTAPI_CHANNELS_API_KEY`` environment variable and is sent in the
``X-API-Key`` header (``--header`` to change). With ``--key`` the publish is idempotent: running
the same command again (after a timeout, an ``outcome-unknown``) delivers the message once.

Exit status:

* 0: published (the answer, e.g. the position, is printed as JSON);
* 1: the server could not be reached, or answered with an error of its own (503: nothing was
  published; 504: the outcome is unknown, run the command again with the same ``--key``);
* 2: bad arguments (``--data`` is not JSON), or the server refused the input (422, each field
  named);
* 3: the API key is missing or refused (401, 403);
* 4: no listener serves the channel (404); nothing was published.

Standard library only (``urllib``): no extra is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import IO, Any

__all__ = ["API_KEY_ENV", "add_arguments", "publish", "run"]

API_KEY_ENV = "FASTAPI_CHANNELS_API_KEY"
"""The environment variable holding the API key when ``--api-key`` is not given."""

OK, FAILED, BAD_INPUT, UNAUTHORISED, NOT_FOUND = 0, 1, 2, 3, 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``publish`` command's arguments to ``parser``."""
    parser.add_argument("url", help="the API's base URL, e.g. http://127.0.0.1:8000/ws/api")
    parser.add_argument("-c", "--channel", required=True, help="the concrete channel")
    parser.add_argument("-e", "--event", required=True, help="the event name")
    parser.add_argument("-d", "--data", default="null", help="the data, as JSON (default: null)")
    parser.add_argument("--key", help="an idempotency key: the same key is delivered once")
    parser.add_argument("--api-key", help=f"the API key (default: ${API_KEY_ENV})")
    parser.add_argument("--header", default="X-API-Key", help="the API key's header")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")


def run(args: argparse.Namespace) -> int:
    """Run the command with parsed ``args``; returns the exit status."""
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        print(f"fastapi-channels publish: --data is not JSON: {exc}", file=sys.stderr)
        return BAD_INPUT
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    return publish(
        args.url,
        args.channel,
        args.event,
        data,
        key=args.key,
        api_key=api_key,
        header=args.header,
        timeout=args.timeout,
    )


def publish(
    url: str,
    channel: str,
    event: str,
    data: Any = None,
    *,
    key: str | None = None,
    api_key: str | None = None,
    header: str = "X-API-Key",
    timeout: float = 10.0,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """POST ``{url}/publish`` and report the outcome; returns the exit status (see above)."""
    out = out or sys.stdout
    err = err or sys.stderr
    body: dict[str, Any] = {"channel": channel, "event": event, "data": data}
    if key is not None:
        body["key"] = key
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers[header] = api_key
    request = urllib.request.Request(
        url.rstrip("/") + "/publish", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            print(response.read().decode(), file=out)
            return OK
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"fastapi-channels publish: cannot reach {url}: {reason}", file=err)
        if key is not None:
            print(
                "the outcome is unknown if the request was sent; retry with the same --key",
                file=err,
            )
        return FAILED
    return _report(status, answer, err)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"detail": raw.decode(errors="replace")[:200]}


def _report(status: int, answer: Any, err: IO[str]) -> int:
    detail = answer.get("detail") if isinstance(answer, dict) else answer
    prefix = f"fastapi-channels publish: {status}"
    if status in (401, 403):
        print(f"{prefix}: the API key is missing or refused ({detail})", file=err)
        return UNAUTHORISED
    if status == 422:
        problems = detail if isinstance(detail, list) else [{"msg": detail}]
        for problem in problems:
            found = problem if isinstance(problem, dict) else {"msg": problem}
            loc = found.get("loc") or ()
            where = ".".join(str(part) for part in list(loc)[1:]) or "request"
            print(f"{prefix}: {where}: {found.get('msg')}", file=err)
        return BAD_INPUT
    if status == 404:
        print(f"{prefix}: {detail}; nothing was published", file=err)
        return NOT_FOUND
    if status == 504:
        print(f"{prefix}: outcome unknown ({detail}); run again with the same --key", file=err)
        return FAILED
    if status == 503:
        print(f"{prefix}: not published, the broker is unavailable ({detail})", file=err)
        return FAILED
    print(f"{prefix}: {detail}", file=err)
    return FAILED
