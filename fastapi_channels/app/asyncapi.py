"""An AsyncAPI 3.0 description of every registered channel, event, reply and data type.

Built from the registry and the handlers' invocation plans, without starting anything:

- one channel per channel listener, its address the pattern with ``*`` as ``{wildcard}``;
- a ``receive`` operation per handled event (its payload the handler's data type, its reply
  the handler's return annotation) and per subscribe request (typed ``is_authorised`` data);
- a ``send`` operation per event a listener declares in ``sends``;
- the channel ``events`` for plain events (no channel) and the error packet, and the channel
  ``replies`` for the ``channels:reply`` answers and ``subscribe-channel-response``;
- the data types' JSON schemas (from pydantic) in ``components/schemas``.

Every message payload describes the whole packet (``event``, ``channel``, ``id``, ``data``) as
it travels on the socket.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import TypeAdapter

from fastapi_channels.app.invocation import HANDLER, IS_AUTHORISED, plan_for
from fastapi_channels.app.listeners import ChannelListener, SocketListener, handlers
from fastapi_channels.wire.errors import ErrorCode
from fastapi_channels.wire.protocol import (
    ERROR,
    JOIN,
    LEAVE,
    MAX_ID_LENGTH,
    PRESENCE,
    REPLY,
    SUBSCRIBE_REQUEST,
    SUBSCRIBE_RESPONSE,
)

if TYPE_CHECKING:
    from fastapi_channels.app.registry import ListenerRegistry

__all__ = ["asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
_EVENTS = "events"
_REPLIES = "replies"
_REF_TEMPLATE = "#/components/schemas/{model}"
_Mode = Literal["validation", "serialization"]


def asyncapi_document(
    registry: ListenerRegistry,
    *,
    title: str,
    version: str,
    description: str | None = None,
    host: str | None = None,
    protocol: str = "ws",
    pathname: str = "/ws",
) -> dict[str, Any]:
    """Describe ``registry``'s listeners as an AsyncAPI 3.0 document (a JSON-ready dict).

    Args:
        registry: the registered listeners (started or not).
        title: ``info.title``.
        version: ``info.version``, the application's version.
        description: ``info.description``.
        host: the server's host (and port); without it the document has no ``servers``.
        protocol: ``ws`` or ``wss``.
        pathname: the websocket endpoint's path.

    Raises:
        ConfigurationError: a handler's signature cannot be satisfied (as at registration).
        pydantic.errors.PydanticUserError: a data type has no JSON schema.
    """
    builder = _Builder()
    for cls in registry.classes():
        if issubclass(cls, ChannelListener):
            builder.add_channel_listener(cls)
    builder.add_plain_listeners(c for c in registry.classes() if issubclass(c, SocketListener))
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {"asyncapi": ASYNCAPI_VERSION, "info": info}
    if host:
        document["servers"] = {"main": {"host": host, "protocol": protocol, "pathname": pathname}}
    document["defaultContentType"] = "application/json"
    document.update(builder.finish())
    return document


@dataclass
class _Message:
    """A message whose data schema is filled in once every type is known."""

    body: dict[str, Any]
    envelope: dict[str, Any]
    data: tuple[Any, _Mode] | None
    extra: dict[str, Any] | None = None
    has_data: bool = True


@dataclass
class _Builder:
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[_Message] = field(default_factory=list)
    types: dict[tuple[int, _Mode], tuple[Any, _Mode]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels[_EVENTS] = {
            "address": None,
            "title": "Plain events",
            "description": "Packets without a channel: `{event, data}`, sent on the socket.",
            "messages": {},
        }
        self.channels[_REPLIES] = {
            "address": None,
            "title": "Replies",
            "description": (
                "The server's answers to client packets that carry an `id`: exactly one "
                "`channels:reply` per such packet, and the Envuso `subscribe-channel-response`."
            ),
            "messages": {},
        }
        self._message(_REPLIES, "error", _reply_error(), None, title="Failed reply", has_data=False)
        self._message(
            _REPLIES,
            SUBSCRIBE_RESPONSE,
            _packet(SUBSCRIBE_RESPONSE, channel=False, request=False),
            None,
            extra=_subscribe_response(),
            title="Subscription outcome",
        )
        error = self._message(
            _EVENTS,
            ERROR,
            _packet(ERROR, channel=False, request=False),
            None,
            extra=_error_data(),
            title="Error",
            summary="A client packet without an `id` failed.",
        )
        self._operation(f"{_EVENTS}.error.send", "send", _EVENTS, [error])

    # ------------------------------------------------------------------ listeners

    def add_channel_listener(self, cls: type[ChannelListener]) -> None:
        channel = self._unique(self.channels, _ident(cls.__name__))
        pattern = cls.pattern
        address = (
            pattern.text if pattern.is_exact else f"{pattern.prefix}{{wildcard}}{pattern.suffix}"
        )
        entry: dict[str, Any] = {"address": address, "title": cls.__name__, "messages": {}}
        if doc := _doc(cls):
            entry["description"] = doc
        if not pattern.is_exact:
            entry["parameters"] = {
                "wildcard": {
                    "description": "What the pattern's `*` matches: one or more characters "
                    "other than `:`, whitespace, control characters and `*`."
                }
            }
        self.channels[channel] = entry
        subscribe_plan = plan_for(cls, "is_authorised", IS_AUTHORISED)
        assert subscribe_plan is not None
        request = self._message(
            channel,
            SUBSCRIBE_REQUEST,
            _packet(SUBSCRIBE_REQUEST, channel=False, request=True),
            _data_type(subscribe_plan.payload, "validation"),
            extra=_subscribe_request(),
            title=f"Subscribe to {address}",
        )
        reply = self._reply_message(f"{channel}.subscribe", {"channel": {"type": "string"}}, None)
        response = f"#/channels/{_REPLIES}/messages/{SUBSCRIBE_RESPONSE}"
        self._operation(
            f"{channel}.subscribe",
            "receive",
            channel,
            [request],
            reply=[response, reply],
            summary="Subscribe; answered by subscribe-channel-response (and a reply with an id).",
        )
        for event, name in handlers(cls).items():
            self._handler(channel, event, cls, name, channel_event=True)
        history = cls.history
        for event, payload in cls.sends.items():
            kept = history is not None and history.keeps(event)
            self._sent(channel, event, payload, channel_event=True, position=kept)
        if cls.presence:
            self._presence_events()

    def _presence_events(self) -> None:
        """The plain events of presence channels, described once."""
        if PRESENCE in self.channels[_EVENTS]["messages"]:
            return
        member = {"type": "object", "required": ["id"], "description": "A member's public info."}
        shapes: dict[str, tuple[str, dict[str, Any]]] = {
            PRESENCE: ("Member list", {"members": {"type": "array", "items": member}}),
            JOIN: ("A member joined", {"member": member}),
            LEAVE: ("A member left", {"member": member}),
        }
        for event, (title, fields) in shapes.items():
            data = {
                "type": "object",
                "required": ["channel", *fields],
                "properties": {"channel": {"type": "string"}, **fields},
            }
            envelope = _packet(event, channel=False, request=False)
            message = self._message(_EVENTS, event, envelope, None, extra=data, title=title)
            self._operation(f"{_EVENTS}.{_ident(event)}.send", "send", _EVENTS, [message])

    def add_plain_listeners(self, classes: Iterable[type[SocketListener]]) -> None:
        for cls in classes:
            self._handler(_EVENTS, cls.event, cls, "handle", channel_event=False)
            for event, payload in cls.sends.items():
                self._sent(_EVENTS, event, payload, channel_event=False)

    def _handler(
        self, channel: str, event: str, cls: type, name: str, *, channel_event: bool
    ) -> None:
        plan = plan_for(cls, name, HANDLER)
        assert plan is not None
        handler = getattr(cls, name)
        message = self._message(
            channel,
            f"{event}.received",
            _packet(event, channel=channel_event, request=True),
            _data_type(plan.payload, "validation"),
            name=event,
            summary=_summary(handler),
        )
        returns = None if plan.returns is inspect.Parameter.empty else plan.returns
        op = f"{channel}.{_ident(event)}.receive"
        reply = self._reply_message(op, None, _data_type(returns, "serialization"))
        self._operation(
            op,
            "receive",
            channel,
            [message],
            reply=[reply],
            summary=_summary(handler),
            description=_doc(handler),
        )

    def _sent(
        self, channel: str, event: str, payload: Any, *, channel_event: bool, position: bool = False
    ) -> None:
        envelope = _packet(event, channel=channel_event, request=False)
        if position:
            envelope["properties"]["position"] = _POSITION
        message = self._message(
            channel, f"{event}.sent", envelope, (payload, "serialization"), name=event
        )
        self._operation(f"{channel}.{_ident(event)}.send", "send", channel, [message])

    # ------------------------------------------------------------------ pieces

    def _message(
        self,
        channel: str,
        key: str,
        envelope: dict[str, Any],
        data: tuple[Any, _Mode] | None,
        *,
        extra: dict[str, Any] | None = None,
        name: str | None = None,
        title: str | None = None,
        summary: str | None = None,
        has_data: bool = True,
    ) -> str:
        messages = self.channels[channel]["messages"]
        key = self._unique(messages, _ident(key))
        body: dict[str, Any] = {"name": name or envelope["properties"]["event"]["const"]}
        if title:
            body["title"] = title
        if summary:
            body["summary"] = summary
        messages[key] = body
        if data is not None:
            self.types.setdefault((id(data[0]), data[1]), data)
        self.messages.append(_Message(body, envelope, data, extra, has_data))
        return f"#/channels/{channel}/messages/{key}"

    def _reply_message(
        self, op: str, fixed: dict[str, Any] | None, data: tuple[Any, _Mode] | None
    ) -> str:
        envelope = {
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {"event": {"const": REPLY}, "id": _ID_SCHEMA},
        }
        extra = {"type": "object", "properties": fixed} if fixed else None
        return self._message(
            _REPLIES, f"{op}.reply", envelope, data, extra=extra, name=REPLY, title=f"Reply to {op}"
        )

    def _operation(
        self,
        key: str,
        action: str,
        channel: str,
        messages: list[str],
        *,
        reply: list[str] | None = None,
        summary: str | None = None,
        description: str | None = None,
    ) -> None:
        key = self._unique(self.operations, key)
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": ref} for ref in messages],
        }
        if summary:
            operation["summary"] = summary
        if description and description != summary:
            operation["description"] = description
        if reply is not None:
            error = f"#/channels/{_REPLIES}/messages/error"
            operation["reply"] = {
                "channel": {"$ref": f"#/channels/{_REPLIES}"},
                "messages": [{"$ref": ref} for ref in [*reply, error]],
            }
        self.operations[key] = operation

    @staticmethod
    def _unique(taken: dict[str, Any], key: str) -> str:
        candidate, n = key, 2
        while candidate in taken:
            candidate, n = f"{key}_{n}", n + 1
        return candidate

    def finish(self) -> dict[str, Any]:
        adapters = {key: TypeAdapter(tp) for key, (tp, _) in self.types.items()}
        inputs = [(key, mode, adapters[key]) for key, (_, mode) in self.types.items()]
        schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF_TEMPLATE)
        for message in self.messages:
            if not message.has_data:
                message.body["payload"] = message.envelope
                continue
            data: Any = {}
            required = message.extra is not None
            if message.data is not None:
                tp, mode = message.data
                data = schemas[((id(tp), mode), mode)]
                required = required or not _accepts_none(adapters[(id(tp), mode)])
            if message.extra is not None:
                data = message.extra if data == {} else {"allOf": [message.extra, data]}
            payload = dict(message.envelope)
            payload["properties"] = {**payload["properties"], "data": data}
            if required and "data" not in payload["required"]:
                payload["required"] = [*payload["required"], "data"]
            message.body["payload"] = _to_asyncapi(payload)
        components = {
            name: _to_asyncapi(schema) for name, schema in definitions.get("$defs", {}).items()
        }
        components[_ID] = _REQUEST_ID
        components[_ERROR] = _error_object()
        return {
            "channels": self.channels,
            "operations": self.operations,
            "components": {"schemas": components},
        }


def _data_type(payload: Any, mode: _Mode) -> tuple[Any, _Mode] | None:
    return None if payload is None or payload is Any else (payload, mode)


_ID = "fastapi_channels.RequestId"
_ERROR = "fastapi_channels.Error"
_ID_SCHEMA: dict[str, Any] = {"$ref": f"#/components/schemas/{_ID}"}
_ERROR_SCHEMA: dict[str, Any] = {"$ref": f"#/components/schemas/{_ERROR}"}
_REQUEST_ID: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        {"type": "integer", "minimum": -(2**53 - 1), "maximum": 2**53 - 1},
    ],
    "description": "A request id; the server answers with a channels:reply carrying it.",
}


def _packet(event: str, *, channel: bool, request: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"event": {"const": event}}
    required = ["event"]
    if channel:
        properties["channel"] = {"type": "string", "description": "The concrete channel name."}
        required.append("channel")
    if request:
        properties["id"] = _ID_SCHEMA
    return {"type": "object", "required": required, "properties": properties}


_POSITION: dict[str, Any] = {
    "type": "object",
    "required": ["offset", "epoch"],
    "description": "Where an event stands in a history channel: an offset within an epoch.",
    "properties": {
        "offset": {"type": "integer", "minimum": 0},
        "epoch": {"type": "string", "minLength": 1, "maxLength": 64},
    },
}


def _subscribe_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["channel"],
        "properties": {
            "channel": {"type": "string", "description": "The concrete channel."},
            "since": {
                **_POSITION,
                "description": "On a history channel: the last position seen, to recover from.",
            },
        },
    }


def _subscribe_response() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["channel", "successful"],
        "properties": {
            "channel": {"type": "string", "description": "Exactly the requested string."},
            "successful": {"type": "boolean"},
            "reason": {"type": "string"},
            "position": {
                **_POSITION,
                "description": "On a history channel: where the subscriber's events continue.",
            },
            "recovered": {
                "type": "boolean",
                "description": "When since was sent: whether every missed event is replayed.",
            },
        },
    }


def _problem_list() -> dict[str, Any]:
    return {
        "type": "array",
        "description": "Validation problems (code invalid-data); never the input's values.",
        "items": {
            "type": "object",
            "required": ["loc", "msg", "type"],
            "properties": {
                "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            },
        },
    }


def _error_object() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": [code.value for code in ErrorCode]},
            "message": {"type": "string"},
            "errors": _problem_list(),
        },
    }


def _error_data() -> dict[str, Any]:
    return {
        "allOf": [
            _ERROR_SCHEMA,
            {
                "type": "object",
                "properties": {
                    "event": {"type": "string", "description": "The failed packet's event."},
                    "channel": {"type": "string", "description": "The failed packet's channel."},
                },
            },
        ]
    }


def _reply_error() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "id", "error"],
        "properties": {"event": {"const": REPLY}, "id": _ID_SCHEMA, "error": _ERROR_SCHEMA},
    }


def _accepts_none(adapter: TypeAdapter[Any]) -> bool:
    """Whether a packet may leave ``data`` out (it is then ``None``)."""
    try:
        adapter.validate_python(None)
    except Exception:
        return False
    return True


_IDENT_RE = re.compile(r"[^A-Za-z0-9_.\-]+")


def _ident(text: str) -> str:
    """A key safe for AsyncAPI maps and ``$ref`` pointers."""
    return _IDENT_RE.sub("_", text).strip("_") or "_"


def _doc(obj: object) -> str | None:
    """``obj``'s own docstring (never one inherited from a base class)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _summary(obj: object) -> str | None:
    doc = _doc(obj)
    return doc.split("\n\n", 1)[0].replace("\n", " ") if doc else None


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions", "$defs"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "additionalItems", "not", "if", "then", "else"}
    | {"contains", "propertyNames"}
)


def _to_asyncapi(node: Any) -> Any:
    """Adapt one pydantic JSON Schema (2020-12) to AsyncAPI's Schema Object (draft-07 based).

    ``discriminator`` becomes the property name AsyncAPI expects, and tuples' ``prefixItems``
    become draft-07's array form of ``items``. Only subschemas are walked, never values such
    as ``default``, ``const`` or ``examples``.
    """
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _to_asyncapi(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [_to_asyncapi(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            is_list = isinstance(value, list)
            value = [_to_asyncapi(sub) for sub in value] if is_list else _to_asyncapi(value)
        result[key] = value
    discriminator = result.get("discriminator")
    if isinstance(discriminator, dict):
        result["discriminator"] = discriminator.get("propertyName", "")
    if "prefixItems" in result:
        rest = result.pop("items", None)
        result["items"] = result.pop("prefixItems")
        if rest is not None:
            result["additionalItems"] = rest
    return result
