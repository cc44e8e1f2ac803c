"""``PluginException``: rustbridge's one exception class, with its numeric error code.

Every ``plugbridge.PluginError`` that reaches a caller of the facade becomes one of these,
with the same message and ``int(code)`` (see ``from_plugin_error``): rustbridge's callers
catch ``PluginException`` and read ``error_code``, and plugbridge's codes are rustbridge's.
"""

from __future__ import annotations

from .._errors import PluginError


class PluginException(Exception):
    """A failed plugin operation: ``message`` says what, ``error_code`` which kind (the C
    ABI's codes: 1 invalid state … 13 too many requests; plugbridge adds 14, crashed)."""

    def __init__(self, message: str, error_code: int = 1) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.error_code}] {self.message}"

    def __repr__(self) -> str:
        return f"PluginException(message={self.message!r}, error_code={self.error_code})"


def from_plugin_error(exc: PluginError) -> PluginException:
    """The facade's form of a plugbridge failure: same message, same numeric code."""
    return PluginException(exc.message, int(exc.code))
