"""Invocation plans: how to call a handler, decided once from its signature at registration.

A handler (or ``is_authorised``) may keep Envuso's positional form, ``(self, connection, user,
packet)`` (``(self, connection, user)`` for ``is_authorised``), or ask for what it needs by
annotation and name, in any order:

- annotated ``SocketConnection`` (or a subclass): the connection;
- annotated ``SocketPacket``: the packet;
- named ``user``: the connection's user (the annotation is not read);
- annotated with a pydantic model, a dataclass or a ``TypedDict`` (or an optional/union of
  those): the packet's ``data`` validated into it;
- named ``data``: the packet's ``data`` validated into its annotation (unvalidated without one).

A parameter with a default that none of these rules claims is left to its default.

The signature and its type hints are read once, into an `InvocationPlan` holding a
``pydantic.TypeAdapter`` for the data; nothing is inspected per message. Invalid data raises
`InvalidData` before the handler runs, with a bounded list of
``{loc, msg, type}`` problems that never holds the input's values.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
import weakref
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Union, get_args, get_origin

import typing_extensions
from pydantic import BaseModel, TypeAdapter, ValidationError

from fastapi_channels.core.connection import SocketConnection
from fastapi_channels.wire.errors import ConfigurationError, InvalidData
from fastapi_channels.wire.protocol import SocketPacket

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

__all__ = [
    "HANDLER",
    "IS_AUTHORISED",
    "BoundHandler",
    "InvocationPlan",
    "Source",
    "plan_for",
]

MAX_ERRORS: Final = 20
"""At most this many validation problems are sent back; the message gives the total."""
_MAX_MESSAGE = 200
_MAX_LOC_ITEMS = 10
_MAX_LOC_TEXT = 64


class Source(IntEnum):
    """What one handler parameter receives."""

    CONNECTION = 0
    USER = 1
    PACKET = 2
    DATA = 3


HANDLER: Final = (Source.CONNECTION, Source.USER, Source.PACKET)
"""The positional form of event handlers and ``handle``: ``(self, connection, user, packet)``."""
IS_AUTHORISED: Final = (Source.CONNECTION, Source.USER)
"""The positional form of ``is_authorised``: ``(self, connection, user)``."""

_LEGACY_TEXT = {
    HANDLER: "(self, connection, user, packet)",
    IS_AUTHORISED: "(self, connection, user)",
}
_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class _Unresolved:
    """An annotation that could not be evaluated (a name imported under TYPE_CHECKING)."""

    def __init__(self, text: str) -> None:
        self.text = text


@dataclasses.dataclass(frozen=True, slots=True)
class InvocationPlan:
    """How to call one handler function; built once per function by `plan_for`.

    Attributes:
        name: the handler's qualified name, for messages.
        positional: what each positional argument after ``self`` receives.
        keywords: ``(name, source)`` for keyword-only parameters.
        payload: the data parameter's annotation (``Any`` when it has none), or ``None`` when
            the handler takes no data parameter (it may still read ``packet.data``).
        returns: the return annotation (``inspect.Parameter.empty`` when there is none); the
            AsyncAPI document uses it to describe replies.
        adapter: validates the data; ``None`` when no validation is declared.
        fast: the call is exactly ``(connection, user, packet)``: no per-call mapping.
    """

    name: str
    positional: tuple[Source, ...]
    keywords: tuple[tuple[str, Source], ...] = ()
    payload: Any = None
    returns: Any = _EMPTY
    adapter: TypeAdapter[Any] | None = None
    fast: bool = False

    def validate(self, data: Any) -> Any:
        """Return ``data`` validated into the declared type (unchanged when none is declared).

        Raises:
            InvalidData: the data does not match; the handler must not run.
        """
        adapter = self.adapter
        if adapter is None:
            return data
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            raise _invalid(exc) from None

    def bind(self, method: Callable[..., Awaitable[Any]]) -> BoundHandler:
        """Pair this plan with a bound method of a started listener."""
        return BoundHandler(method, self)


@dataclasses.dataclass(frozen=True, slots=True)
class BoundHandler:
    """A started listener's method with its plan: what the dispatcher calls per packet."""

    method: Callable[..., Awaitable[Any]]
    plan: InvocationPlan

    def prepare(self, connection: SocketConnection, packet: SocketPacket) -> Callable[[], Any]:
        """Validate ``packet``'s data and return the call to make, ready to await.

        Raises:
            InvalidData: the data does not match the declared type; nothing is called.
        """
        plan = self.plan
        if plan.fast:
            return functools.partial(self.method, connection, connection.user, packet)
        values = (connection, connection.user, packet, plan.validate(packet.data))
        return functools.partial(
            self.method,
            *[values[source] for source in plan.positional],
            **{name: values[source] for name, source in plan.keywords},
        )


_plans: weakref.WeakKeyDictionary[Callable[..., Any], InvocationPlan] = weakref.WeakKeyDictionary()


def plan_for(
    owner: type, name: str, legacy: tuple[Source, ...] = HANDLER, *, strict: bool = True
) -> InvocationPlan | None:
    """Build (once per function) the invocation plan of ``owner.name``.

    Args:
        owner: the class the method is looked up on (named in error messages).
        name: the method's name.
        legacy: the positional form this kind of method has always had.
        strict: when False, return None instead of failing if a type hint names something not
            defined yet (used at class decoration, before the module has finished loading).

    Raises:
        ConfigurationError: a parameter cannot be satisfied, two parameters ask for the data,
            the data type is not one pydantic can validate, or an annotation cannot be resolved.
    """
    func = inspect.getattr_static(owner, name)
    qualname = f"{owner.__qualname__}.{name}"
    if isinstance(func, staticmethod | classmethod):
        raise ConfigurationError(f"{qualname} must be a plain method, not a {type(func).__name__}")
    cached = _plans.get(func)
    if cached is not None:
        return cached
    if not inspect.iscoroutinefunction(func):
        raise ConfigurationError(f"{qualname} must be an async function")
    plan = _build(func, qualname, legacy, strict)
    if plan is not None:
        _plans[func] = plan
    return plan


def _build(
    func: Callable[..., Any], qualname: str, legacy: tuple[Source, ...], strict: bool
) -> InvocationPlan | None:
    signature = inspect.signature(func)
    params = list(signature.parameters.values())[1:]  # self
    hints = _hints(func, params)
    unresolved = [
        (p.name, hint.text)
        for p, hint in zip(params, hints, strict=True)
        if isinstance(hint, _Unresolved)
    ]
    if unresolved and not strict:
        return None
    returns = _return_hint(func, signature)
    sources = [_source(p, hint) for p, hint in zip(params, hints, strict=True)]
    named = [
        (p, s, hint)
        for p, s, hint in zip(params, sources, hints, strict=True)
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    missing = [
        p.name
        for p, s, _ in named
        if s is None and (p.default is _EMPTY or p.kind is p.POSITIONAL_ONLY)
    ]
    var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    if not missing and not var_positional:
        if len(named) == len(params) and tuple(s for _, s, _ in named) == legacy:
            return InvocationPlan(
                name=qualname, positional=legacy, returns=returns, fast=legacy == HANDLER
            )
        return _typed(qualname, [(p, s, h) for p, s, h in named if s is not None], returns)
    positional = [s for p, s, _ in named if p.kind in _POSITIONAL]
    fits_legacy = (
        (len(positional) == len(legacy) or (var_positional and len(positional) <= len(legacy)))
        and all(s is None or s is legacy[i] for i, s in enumerate(positional))
        and not any(p.kind is p.KEYWORD_ONLY and p.default is _EMPTY for p, _, _ in named)
    )
    if fits_legacy:
        return InvocationPlan(
            name=qualname, positional=legacy, returns=returns, fast=legacy == HANDLER
        )
    detail = (
        f"cannot tell what to pass for {', '.join(map(repr, missing))}"
        if missing
        else "its parameters do not fit the positional form"
    )
    if unresolved:
        names = ", ".join(f"{n!r} ({text!r})" for n, text in unresolved)
        detail += f"; these annotations could not be resolved: {names}"
    raise ConfigurationError(
        f"{qualname} must take {_LEGACY_TEXT[legacy]}, or only parameters annotated with "
        f"SocketConnection, SocketPacket or a pydantic model, or named user or data: {detail}"
    )


def _typed(
    qualname: str, wanted: list[tuple[inspect.Parameter, Source, Any]], returns: Any
) -> InvocationPlan:
    data_params = [p.name for p, s, _ in wanted if s is Source.DATA]
    if len(data_params) > 1:
        raise ConfigurationError(
            f"{qualname}: only one parameter may receive the data, not {', '.join(data_params)}"
        )
    # Positional-only parameters are passed by position, every other one by name, so a
    # parameter left to its default never shifts the others.
    positional = tuple(s for p, s, _ in wanted if p.kind is p.POSITIONAL_ONLY)
    keywords = tuple((p.name, s) for p, s, _ in wanted if p.kind is not p.POSITIONAL_ONLY)
    payload: Any = None
    adapter: TypeAdapter[Any] | None = None
    for _, source, hint in wanted:
        if source is Source.DATA:
            payload = Any if hint is _EMPTY else hint
    if payload is not None and payload is not Any:
        try:
            adapter = TypeAdapter(payload)
        except Exception as exc:
            raise ConfigurationError(
                f"{qualname}: cannot validate data as {payload!r}: {exc}"
            ) from exc
    return InvocationPlan(
        name=qualname,
        positional=positional,
        keywords=keywords,
        payload=payload,
        returns=returns,
        adapter=adapter,
    )


def _source(param: inspect.Parameter, hint: Any) -> Source | None:
    if param.name == "user":
        return Source.USER
    if isinstance(hint, type) and issubclass(hint, SocketConnection):
        return Source.CONNECTION
    if isinstance(hint, type) and issubclass(hint, SocketPacket):
        return Source.PACKET
    if isinstance(hint, _Unresolved):
        tail = hint.text.rsplit(".", 1)[-1]
        if tail in ("SocketConnection", "SocketPacket"):  # imported under TYPE_CHECKING
            return Source.CONNECTION if tail == "SocketConnection" else Source.PACKET
        return None
    if param.name == "data" or _is_payload_type(hint):
        return Source.DATA
    return None


def _is_payload_type(hint: Any) -> bool:
    """Whether ``hint`` is a structured type that marks a parameter as the data by itself."""
    if get_origin(hint) is Annotated:
        return _is_payload_type(get_args(hint)[0])
    if get_origin(hint) in (Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        return bool(members) and all(_is_payload_type(a) for a in members)
    if not isinstance(hint, type):
        return False
    return (
        issubclass(hint, BaseModel)
        or dataclasses.is_dataclass(hint)
        or typing_extensions.is_typeddict(hint)
    )


def _hints(func: Callable[..., Any], params: list[inspect.Parameter]) -> list[Any]:
    """Each parameter's evaluated annotation, ``_EMPTY`` or an `_Unresolved`."""
    try:
        resolved = typing.get_type_hints(func, include_extras=True)
    except Exception:
        resolved = None
    hints: list[Any] = []
    for param in params:
        if param.annotation is _EMPTY:
            hints.append(_EMPTY)
        elif resolved is not None and param.name in resolved:
            hints.append(resolved[param.name])
        else:
            hints.append(_evaluate(func, param.name, param.annotation))
    return hints


def _return_hint(func: Callable[..., Any], signature: inspect.Signature) -> Any:
    annotation = signature.return_annotation
    if annotation is _EMPTY:
        return _EMPTY
    hint = _evaluate(func, "return", annotation)
    if hint is None:
        return type(None)
    return _EMPTY if isinstance(hint, _Unresolved) else hint


def _evaluate(func: Callable[..., Any], name: str, annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    holder = types.SimpleNamespace(__annotations__={name: annotation})
    globalns = getattr(inspect.unwrap(func), "__globals__", {})
    try:
        return typing.get_type_hints(holder, globalns=globalns, include_extras=True)[name]
    except Exception:
        return _Unresolved(annotation)


def _invalid(exc: ValidationError) -> InvalidData:
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    count = len(details)
    message = "1 validation error" if count == 1 else f"{count} validation errors"
    return InvalidData(message, [_problem(item) for item in details[:MAX_ERRORS]])


def _problem(item: ErrorDetails) -> dict[str, object]:
    loc = [
        part if isinstance(part, int) else str(part)[:_MAX_LOC_TEXT]
        for part in item["loc"][:_MAX_LOC_ITEMS]
    ]
    return {"loc": loc, "msg": item["msg"][:_MAX_MESSAGE], "type": item["type"]}
