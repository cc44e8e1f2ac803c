"""A package plugin: the handlers live in plugin.py, the text work in helpers.py."""

from .plugin import TextKit

plugin = TextKit
