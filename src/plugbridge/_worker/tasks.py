"""Inside the worker: calls an asyncio caller may cancel, run as tasks on a loop of their own.

The instance's ``acall`` is awaited in a task; ``Cancel`` cancels that task, which cancels
the plugin's work exactly as cancelling an in-process ``acall`` would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import Cancelled
from .._json import decode_json, encode_json
from .._transport import Transport
from .protocol import Call, RawCall

if TYPE_CHECKING:
    from .server import CallSlot


class CancellableCalls:
    """A loop thread (started on first use) running one task per cancellable call."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, call: Call | RawCall, slot: CallSlot, done: Callable[[], None]) -> None:
        self._running_loop().call_soon_threadsafe(self._create, call, slot, done)

    def cancel(self, call_id: int) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel, call_id)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="plugbridge-cancellable", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def _create(self, call: Call | RawCall, slot: CallSlot, done: Callable[[], None]) -> None:
        assert self._loop is not None
        body = self._run_raw(call, slot) if isinstance(call, RawCall) else self._run(call, slot)
        task = self._loop.create_task(body)
        self._tasks[call.id] = task

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.pop(call.id, None)
            if task.cancelled():  # cancelled before its first step: ``_run`` never ran
                slot.release()
                slot.fail(Cancelled("call cancelled by the caller"))
            done()

        task.add_done_callback(finished)

    def _cancel(self, call_id: int) -> None:
        task = self._tasks.get(call_id)
        if task is not None:
            task.cancel()

    async def _run_raw(self, call: RawCall, slot: CallSlot) -> None:
        try:
            payload = await self._transport.acall_raw(
                call.message_id, call.payload, call.timeout, slot.release
            )
        except asyncio.CancelledError:
            slot.fail(Cancelled("call cancelled by the caller"))
        except BaseException as exc:
            slot.fail(exc)
        else:
            slot.succeed(payload)

    async def _run(self, call: Call, slot: CallSlot) -> None:
        try:
            try:
                request = decode_json(call.payload)
            except BaseException:
                slot.release()  # the instance never saw the call
                raise
            result = await self._transport.acall(call.type_tag, request, call.timeout, slot.release)
            payload = encode_json(result)
        except asyncio.CancelledError:
            slot.fail(Cancelled("call cancelled by the caller"))
        except BaseException as exc:
            slot.fail(exc)
        else:
            slot.succeed(payload)
