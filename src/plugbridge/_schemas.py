"""The JSON Schemas of a plugin's handlers, from their request and return annotations.

Made once when an instance starts (in this process or in its worker, by the same code), and
kept in ``PluginMetadata.schemas`` as JSON text, so that the gateway can describe every Python
plugin whatever its isolation without touching plugin code, and calls never pay for it.
msgspec writes the schemas: the same library that validates the requests, so a schema says
exactly what the handler accepts. All the types of one instance are described together, so a
name in their ``$defs`` means one type across its handlers; each handler's schema then keeps
only the definitions it reaches, which makes it a standalone JSON Schema.

Describing never fails a start: an annotation msgspec cannot describe (or resolve) gives that
handler no schema, like a missing annotation (any JSON value).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ._transport import HandlerSchema

_encode = msgspec.json.Encoder().encode
_LOCAL_REF = "#/$defs/"


def handler_schemas(
    handlers: Iterable[tuple[str, Callable[..., Any], Any]],
) -> tuple[HandlerSchema, ...]:
    """The schemas of ``(type_tag, method, request_type)`` handlers (``request_type``: the
    annotation the route validates against, ``Any`` when there is none)."""
    rows = [(tag, request, return_annotation(method)) for tag, method, request in handlers]
    wanted = [t for _, request, response in rows for t in (request, response) if t is not None]
    described = _describe([t for t in dict.fromkeys(_hashable(wanted)) if t is not Any])
    return tuple(
        HandlerSchema(tag, described.get(_key(request)), described.get(_key(response)))
        for tag, request, response in rows
    )


def return_annotation(method: Callable[..., Any]) -> Any:
    """The resolved return annotation of ``method``; None if it has none (or it cannot be
    resolved: the response is then any JSON value)."""
    try:
        hints = typing.get_type_hints(method)
    except Exception:
        return None
    return hints.get("return")


def _describe(types: list[Any]) -> dict[object, str]:
    """Each type's standalone schema as JSON text, all described at once (one name space);
    only when that fails, the ones msgspec can describe, and at worst one at a time."""
    try:
        return _described(types, *msgspec.json.schema_components(types))
    except Exception:  # TypeError mostly; a broken annotation may raise anything
        pass
    types = [t for t in types if _describable(t)]
    try:
        return _described(types, *msgspec.json.schema_components(types))
    except Exception:  # two types whose names msgspec cannot tell apart
        return {_key(t): _standalone(*_alone(t)) for t in types}


def _described(
    types: list[Any], schemas: tuple[dict[str, Any], ...], definitions: dict[str, Any]
) -> dict[object, str]:
    return {_key(t): _standalone(s, definitions) for t, s in zip(types, schemas, strict=True)}


def _describable(annotation: Any) -> bool:
    """Whether msgspec can describe ``annotation`` alone."""
    try:
        msgspec.json.schema(annotation)
    except Exception:
        return False
    return True


def _alone(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    (schema,), definitions = msgspec.json.schema_components([annotation])
    return schema, definitions


def _standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    """``schema`` with the definitions it reaches as its ``$defs``, as JSON text."""
    reached: dict[str, Any] = {}
    pending = list(_local_refs(schema))
    while pending:
        name = pending.pop()
        if name in reached or name not in definitions:
            continue
        reached[name] = definitions[name]
        pending.extend(_local_refs(definitions[name]))
    if reached:
        schema = {**schema, "$defs": reached}
    return _encode(schema).decode()


def _local_refs(node: Any) -> Iterable[str]:
    """The names of the ``#/$defs/...`` references anywhere in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_LOCAL_REF):
                yield value.removeprefix(_LOCAL_REF)
            else:
                yield from _local_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _local_refs(item)


def _hashable(types: list[Any]) -> list[Any]:
    return [t for t in types if _key(t) is not None]


def _key(annotation: Any) -> object:
    """``annotation`` as a dictionary key; None when it is not hashable (not described)."""
    try:
        hash(annotation)
    except TypeError:
        return None
    return annotation
