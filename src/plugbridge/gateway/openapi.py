"""``GET /openapi.json``: the OpenAPI 3.1 document of a host's plugins.

One operation per plugin and type tag (``POST /v1/plugins/{name}/call/{tag}`` with the name
and tag written into the path), whatever the plugin's isolation. The request and response
schemas come from ``PluginMetadata.schemas``, which each instance made once when it started
(in this process or in its worker), so building the document never touches plugin code and
costs the calls nothing. Each handler schema is standalone (its own ``$defs``); here its
definitions move to ``components/schemas`` under names prefixed with the plugin's name, so
two plugins' ``Request`` types never meet. Every error answer refers to one ``Error`` schema:
the JSON error body of every route.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from .. import __version__
from .._host import PluginHost
from .._host_status import PluginStatus
from .._transport import HandlerSchema

OPENAPI_VERSION = "3.1.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The gateway's error body, the same on every route.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": ["integer", "null"],
                    "description": "The plugin error code; null when no plugin answered.",
                },
                "name": {"type": "string", "examples": ["UNKNOWN_MESSAGE_TYPE"]},
                "message": {"type": "string"},
            },
            "required": ["code", "name", "message"],
        }
    },
    "required": ["error"],
}

ERROR_RESPONSES: dict[str, str] = {
    "400": "The request is not valid JSON or does not match the handler's request type",
    "401": "A bearer token is required (the gateway has one) and was missing or wrong",
    "404": "No plugin of that name, or no handler for that type tag",
    "409": "The plugin is not active (starting, reloading, stopping or failed)",
    "413": "The request body is over the gateway's limit",
    "429": "The plugin's concurrency limit is reached",
    "500": "Any other failure of the call",
    "502": "The plugin's worker process crashed",
    "504": "The call timed out",
}
"""Every error status a call can answer, each with the ``Error`` body."""

_ANY: dict[str, Any] = {}
_DATA = frozenset({"const", "default", "enum", "examples"})
"""Schema keywords whose values are data, not schemas: a ``$ref`` inside them is data too."""
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs"})
"""Schema keywords whose values map names (a field may be called ``default``) to schemas."""
_PATH_SAFE = "!$&'()*+,;=:@"
"""Characters kept as they are in a path segment (RFC 3986 ``pchar``); braces, slashes and
the rest are percent-encoded, so a name or tag is never read as a template or two segments."""
_decode = msgspec.json.decode


def openapi_document(host: PluginHost) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``host``'s plugins as they are now."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for status in host.status():
        paths.update(_plugin_paths(status, schemas))
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {
            "title": "plugbridge gateway",
            "version": __version__,
            "description": "The plugins of one plugbridge host, callable over HTTP.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                status: {
                    "description": description,
                    "content": {"application/json": {"schema": _component_ref("Error")}},
                }
                for status, description in ERROR_RESPONSES.items()
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


def _plugin_paths(status: PluginStatus, schemas: dict[str, Any]) -> dict[str, Any]:
    """The call operations of one plugin; its schemas' definitions go into ``schemas``."""
    name = status.name
    by_tag = {entry.type_tag: entry for entry in status.metadata.schemas}
    paths: dict[str, Any] = {}
    for tag in status.metadata.type_tags:
        entry = by_tag.get(tag, HandlerSchema(tag, None, None))
        request = _imported(name, entry.request, schemas)
        response = _imported(name, entry.response, schemas)
        path = f"/v1/plugins/{quote(name, safe=_PATH_SAFE)}/call/{quote(tag, safe=_PATH_SAFE)}"
        paths[path] = {"post": _operation(name, tag, request, response)}
    return paths


def _operation(
    name: str, tag: str, request: dict[str, Any] | None, response: dict[str, Any] | None
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": f"The response of {tag!r}",
            "content": {"application/json": {"schema": _ANY if response is None else response}},
        }
    }
    for status in ERROR_RESPONSES:
        responses[status] = {"$ref": f"#/components/responses/{status}"}
    return {
        "operationId": f"{quote(name, safe='')}/{quote(tag, safe='')}",
        "summary": f"Call {tag!r} of plugin {name!r}",
        "tags": [name],
        "requestBody": {
            # an empty body is the request ``null``: fine for an un-annotated handler
            "required": request is not None,
            "content": {"application/json": {"schema": _ANY if request is None else request}},
        },
        "responses": responses,
    }


def _imported(plugin: str, text: str | None, schemas: dict[str, Any]) -> dict[str, Any] | None:
    """A standalone handler schema with its ``$defs`` moved into ``schemas`` (prefixed with
    the plugin's name) and its references pointed there; None if it has none."""
    if text is None:
        return None
    schema = _decode(text)
    if not isinstance(schema, dict):
        return None
    definitions = schema.pop("$defs", None) or {}
    renamed = {local: component_name(plugin, local) for local in definitions}
    while clashes := [  # only when msgspec described an instance's types one at a time
        local
        for local, definition in definitions.items()
        if renamed[local] in schemas and schemas[renamed[local]] != _pointed(definition, renamed)
    ]:
        for local in clashes:  # a fresh name, never clashing again: this ends
            renamed[local] = _unused(renamed[local], schemas)
    for local, definition in definitions.items():
        schemas.setdefault(renamed[local], _pointed(definition, renamed))
    pointed: dict[str, Any] = _pointed(schema, renamed)
    return pointed


def _unused(name: str, schemas: dict[str, Any]) -> str:
    """``name-dupN-``, free in ``schemas`` (never an escape: ``u`` and ``p`` are not hex)."""
    count = 2
    while f"{name}-dup{count}-" in schemas:
        count += 1
    return f"{name}-dup{count}-"


def _pointed(node: Any, renamed: dict[str, str]) -> Any:
    """The schema ``node`` with every ``#/$defs/X`` reference turned into its component's."""
    if isinstance(node, list):
        return [_pointed(item, renamed) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            local = value.removeprefix("#/$defs/")
            out[key] = _component_ref(renamed.get(local, local))["$ref"]
        elif key in _NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {field: _pointed(schema, renamed) for field, schema in value.items()}
        elif key in _DATA:
            out[key] = value
        else:
            out[key] = _pointed(value, renamed)
    return out


def component_name(plugin: str, local: str) -> str:
    """``{plugin}.{local}`` in the characters OpenAPI allows (``[A-Za-z0-9._-]``), the
    encoding injective: the plugin part never holds a ``.``, so two plugins' names never
    meet, and ``Error`` (no ``.``) is never one of them."""
    return f"{_escaped(plugin, '')}.{_escaped(local, '.')}"


def _escaped(text: str, also: str) -> str:
    """``text`` with every character but ASCII letters, digits, ``_`` and ``also`` written
    as ``-hex-`` (a ``-`` too, so the escape cannot be forged)."""
    return "".join(
        c if (c.isascii() and (c.isalnum() or c == "_")) or c in also else f"-{ord(c):x}-"
        for c in text
    )


def _component_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
