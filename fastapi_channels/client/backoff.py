"""When to reconnect, and how long to wait first: capped exponential backoff with jitter.

After a close that carried reconnect advice (a restart's ``disconnect`` with
``reconnect_after``), the first wait is the advised delay instead (`Backoff.advised`): the
server spreads its clients' returns over a window, and a client that came back sooner would
undo it. Later attempts, if the first fails, follow the backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ADVICE_JITTER", "MAX_ADVICE", "STOP_CODES", "Backoff", "advice_of", "should_reconnect"]

STOP_CODES = frozenset({1000, 1005, 1008})
"""Close codes after which the client does not reconnect: the server ended the connection on
purpose (1000, or a close frame without a code) or for a policy violation (1008)."""


ADVICE_JITTER = 0.1
"""The share of an advised delay added at random (see `Backoff.advised`)."""
MAX_ADVICE = 3600.0
"""The longest advised delay taken, in seconds; a larger one is ignored."""


def advice_of(data: object) -> float | None:
    """The ``reconnect_after`` of a ``disconnect`` packet's data, when it is a usable number.

    Anything else (missing, negative, not a number, above `MAX_ADVICE`) gives None: the
    client then waits its backoff delay, as after any other loss.
    """
    value = data.get("reconnect_after") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= MAX_ADVICE else None


def should_reconnect(code: int) -> bool:
    """The default rule: reconnect after any close but those in `STOP_CODES`.

    An abnormal drop (1006), a server restart (1012), ``try again later`` (1013) and going away
    (1001) all reconnect.
    """
    return code not in STOP_CODES


@dataclass(frozen=True, slots=True)
class Backoff:
    """The reconnect policy.

    Attributes:
        initial: the delay before the first attempt after a drop, in seconds.
        maximum: the cap of any delay.
        factor: the growth of the delay per failed attempt.
        jitter: the share of each delay (0..1) randomly taken off, so that many clients dropped
            together do not come back together.
        max_attempts: consecutive failed attempts before giving up; ``None`` never gives up.
        should_reconnect: decides from the close code whether a lost connection is
            re-established at all.
    """

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    should_reconnect: Callable[[int], bool] = field(default=should_reconnect)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before attempt ``attempt`` (0 first): capped, less up to ``jitter`` of it."""
        # the exponent is bounded: a client that fails for days must not overflow a float
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return max(0.0, base * (1 - self.jitter * rand()))

    def advised(self, seconds: float, rand: Callable[[], float] = random.random) -> float:
        """The wait before reconnecting when the server advised ``seconds`` (at a restart).

        Never less than advised, and up to a tenth more at random, so that clients advised
        the same delay still come back apart.
        """
        return seconds * (1 + ADVICE_JITTER * rand())

    def gives_up_after(self, failures: int) -> bool:
        """Whether ``failures`` consecutive failed attempts exhaust the policy."""
        return self.max_attempts is not None and failures >= self.max_attempts
