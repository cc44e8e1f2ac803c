"""A single-file plugin: greets by the greeting its host file gives it (``data``)."""

from __future__ import annotations

import logging

import msgspec

from plugbridge import Plugin, PluginContext, handler

log = logging.getLogger(__name__)

STYLE = "plain"
"""examples/host/run.py rewrites this line while the host watches, to show a reload."""


class GreetRequest(msgspec.Struct):
    name: str


class Greeter(Plugin):
    name = "greeter"
    version = "1.0.0"

    @handler("greet")
    def greet(self, ctx: PluginContext, req: GreetRequest) -> dict[str, str]:
        greeting = ctx.data.get("greeting", "Hello") if isinstance(ctx.data, dict) else "Hello"
        text = f"{greeting}, {req.name}!"
        if STYLE == "loud":
            text = text.upper()
        log.info("greeted %s (%s)", req.name, STYLE)
        return {"text": text, "style": STYLE}
