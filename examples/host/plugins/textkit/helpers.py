"""Text helpers of the textkit plugin (an edit here reloads the whole package)."""

from __future__ import annotations


def word_count(text: str) -> int:
    return len(text.split())


def slug(text: str) -> str:
    return "-".join(word.lower() for word in text.split())
