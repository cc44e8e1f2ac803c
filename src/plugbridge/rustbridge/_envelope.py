"""``ResponseEnvelope``: rustbridge's reading of the JSON envelope a plugin answers with.

The facade's calls never need it (plugbridge's native transport decodes envelopes itself);
it is here because rustbridge exports it and its users parse envelopes with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._exception import PluginException


@dataclass
class ResponseEnvelope:
    """``{"status": "success", "payload": ...}`` or ``{"status": "error", "error_code": N,
    "error_message": "..."}``, with an optional ``request_id``."""

    status: str
    payload: Any | None = None
    error_code: int | None = None
    error_message: str | None = None
    request_id: int | None = None

    @property
    def is_success(self) -> bool:
        return self.status == "success"

    @classmethod
    def from_json(cls, json_str: str) -> ResponseEnvelope:
        """Parse an envelope; ``PluginException`` (code 1) if the text is not JSON. A
        missing ``status`` reads as ``"error"``."""
        try:
            data = json.loads(json_str)
        except json.JSONDecodeError as exc:
            raise PluginException(f"Failed to parse response JSON: {exc}") from exc
        return cls(
            status=data.get("status", "error"),
            payload=data.get("payload"),
            error_code=data.get("error_code"),
            error_message=data.get("error_message"),
            request_id=data.get("request_id"),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ResponseEnvelope:
        """``from_json`` of UTF-8 bytes."""
        return cls.from_json(data.decode("utf-8"))

    def get_payload_json(self) -> str:
        """The payload as JSON text; ``"null"`` when there is none."""
        if self.payload is None:
            return "null"
        return json.dumps(self.payload)

    def to_exception(self) -> PluginException:
        """The error this envelope carries (``"Unknown error"``, code 1, when it says
        nothing more)."""
        return PluginException(
            message=self.error_message or "Unknown error",
            error_code=self.error_code or 1,
        )

    def unwrap(self) -> Any:
        """The payload, or raise the error this envelope carries."""
        if not self.is_success:
            raise self.to_exception()
        return self.payload
