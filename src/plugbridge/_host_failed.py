"""The stand-in instance of an optional plugin that failed to load.

``PluginHost`` keeps such a plugin listed, FAILED, behind a real ``PluginHandle``: the
handle holds this transport, whose calls are refused with the load error, until
``host.reload(name)`` starts a real instance — which the same handle then serves, as after
any reload. Nothing runs here, so there is nothing to stop.
"""

from __future__ import annotations

from typing import Any

from ._errors import InvalidState
from ._levels import LogLevel
from ._lifecycle import LifecycleState
from ._transport import PluginMetadata, Release, Transport


class FailedTransport(Transport):
    """Refuses every call at once (after giving the slot back) with why the plugin is not
    running; FAILED; holds nothing."""

    def __init__(self, name: str, error: str) -> None:
        self.metadata = PluginMetadata(name=name, version="", type_tags=())
        self._refusal = (
            f"plugin {name!r} failed to load and is not running (reload it once fixed): {error}"
        )

    @property
    def state(self) -> LifecycleState:
        return LifecycleState.FAILED

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        release()
        raise InvalidState(self._refusal)

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        release()
        raise InvalidState(self._refusal)

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        release()
        raise InvalidState(self._refusal)

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        release()
        raise InvalidState(self._refusal)

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        release()
        raise InvalidState(self._refusal)

    def set_log_level(self, level: LogLevel) -> None:
        pass  # the handle keeps the level; the next real instance gets it

    def shutdown(self, timeout: float) -> None:
        pass  # nothing was started
