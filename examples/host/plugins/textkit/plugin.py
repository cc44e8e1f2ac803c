"""The textkit plugin class."""

from __future__ import annotations

import logging

import msgspec

from plugbridge import Plugin, PluginContext, handler

from .helpers import slug, word_count

log = logging.getLogger(__name__)


class Text(msgspec.Struct):
    text: str


class TextKit(Plugin):
    name = "textkit"
    version = "1.2.0"

    @handler("words")
    def words(self, ctx: PluginContext, req: Text) -> dict[str, int]:
        return {"words": word_count(req.text)}

    @handler("slug")
    async def slug(self, ctx: PluginContext, req: Text) -> dict[str, str]:
        log.debug("slug of %d characters", len(req.text))
        return {"slug": slug(req.text)}
