"""A plugin run in its own worker process: a counter that lives as long as its process."""

from __future__ import annotations

import logging
import os

from plugbridge import Plugin, PluginContext, handler

log = logging.getLogger(__name__)


class Counter(Plugin):
    name = "counter"
    version = "0.3.0"

    def __init__(self) -> None:
        self.count = 0

    @handler("increment")
    def increment(self, ctx: PluginContext, req: dict[str, int] | None) -> dict[str, int]:
        self.count += (req or {}).get("by", 1)
        return {"count": self.count, "pid": os.getpid()}
