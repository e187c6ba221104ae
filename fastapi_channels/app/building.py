"""Building the classes the library instantiates: one way, through the ``injector`` container.

Listener classes, middleware classes and JWT user-loader classes are all built here. A class
whose constructor takes services gets them by its type hints, with or without ``@inject``
(the constructor is made injectable the first time, as ``injector.inject`` would). A class
the container cannot build fails with `ConfigurationError` naming it, at start-up for
listeners and middleware, at the handshake for user loaders.
"""

from __future__ import annotations

from typing import TypeVar

import injector

from fastapi_channels.wire.errors import ConfigurationError

__all__ = ["build", "make_injectable"]

_T = TypeVar("_T")


def make_injectable(cls: type) -> None:
    """Let the container fill ``cls``'s constructor (its own, or the one it inherits).

    A constructor already marked with ``@inject`` is left as it is; ``object.__init__`` needs
    nothing.
    """
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is not object and not hasattr(init, "__bindings__"):
            klass.__init__ = injector.inject(init)  # type: ignore[misc]
        return


def build(container: injector.Injector, cls: type[_T]) -> _T:
    """Build ``cls`` with ``container`` (constructor injection by type hints).

    Raises:
        ConfigurationError: the container cannot build it (a parameter without a type hint or
            binding, a constructor that raised); the message names the class and the cause.
    """
    make_injectable(cls)
    try:
        return container.get(cls)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot build {cls.__qualname__} ({cls.__module__}): {type(exc).__name__}: {exc}"
        ) from exc
