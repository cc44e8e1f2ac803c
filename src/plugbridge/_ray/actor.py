"""The actor: one plugin instance, run by the in-process (or native) transport inside it.

``PluginActor`` is a plain class; ``_ray.session`` makes it a Ray actor class on first use
(so this module needs Ray only where it runs). It is an *async* actor: every call is a
coroutine awaiting the instance's ``acall``, so thousands can wait at once without a thread
each, sync handlers run on the instance's own threads as in-process, and the host can
cancel one call (``cancel``) exactly as cancelling an in-process ``acall`` would.

A call's answer is returned only once the plugin's work for it has ended (its ``release``):
the host gives the call's slot back when the answer arrives, so a call that timed out keeps
its slot until its handler really returns (the host stops waiting at its own deadline).
Answers are plain tuples of builtins and error codes, never exceptions, so nothing of
Ray's error wrapping reaches the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any

from .._config import PluginConfig
from .._errors import Cancelled, ErrorCode, PluginError, describe_exception
from .._json import decode_json, encode_json
from .._levels import LogLevel
from .._transport import PluginMetadata, Transport
from .records import BufferSink, OutputLog, RecordBuffer, capture_output
from .shipping import ShippedCode, UnpackedCode

Answer = tuple[bool, Any, str, int, int]
"""(ok, response bytes or error code, error message, records produced so far, refusals
counted inside the instance)."""

StartAnswer = tuple[PluginMetadata | None, int, str]
"""(metadata, or None with an error code and message)."""

OUTPUT_FINISH = 0.5
"""Seconds a stop waits for the output pump to read what the instance wrote."""


class _WorkEnd:
    """A call's ``release`` inside the actor, which its coroutine can await."""

    __slots__ = ("_lock", "_waiter", "ended")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.ended = False

    def release(self) -> None:
        with self._lock:
            if self.ended:
                return
            self.ended = True
            waiter = self._waiter
        if waiter is not None:
            loop, event = waiter
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        with self._lock:
            if self.ended:
                return
            event = asyncio.Event()
            self._waiter = (asyncio.get_running_loop(), event)
        await event.wait()


class PluginActor:
    """Serves one plugin instance (methods are called by ``_ray.session.ActorSession``)."""

    def __init__(self) -> None:
        self._records = RecordBuffer()
        self._sink = BufferSink(self._records, LogLevel.INFO)
        stdout_fd, stderr_fd = capture_output()
        from .._worker.output import OutputPump

        self._output = OutputPump(stdout_fd, stderr_fd, OutputLog(self._sink), "plugbridge-ray")
        self._transport: Transport | None = None
        self._code: UnpackedCode | None = None
        self._tasks: dict[int, asyncio.Task[Any]] = {}

    async def start(self, shipped: ShippedCode, config: dict[str, Any]) -> StartAnswer:
        """Rebuild the code and start the instance (no deadline here: the host kills an
        actor that misses its own)."""
        return await asyncio.to_thread(self._start, shipped, config)

    def _start(self, shipped: ShippedCode, wire_config: dict[str, Any]) -> StartAnswer:
        from .._load import start_local
        from .._worker.child import UnclaimedRecords

        try:
            config = PluginConfig.coerce(wire_config)
            self._sink.level = config.log_level
            logging.lastResort = UnclaimedRecords(self._sink.instance_log())
            self._code = UnpackedCode(shipped)
            self._transport = start_local(self._code.source, config, self._sink, None)
        except PluginError as exc:
            return None, int(exc.code), exc.message
        except BaseException as exc:
            return None, int(ErrorCode.INITIALIZATION_FAILED), describe_exception(exc)
        return self._transport.metadata, 0, ""

    # -- calls -------------------------------------------------------------------------

    async def call(
        self, call_id: int, type_tag: str, payload: bytes, timeout: float | None
    ) -> Answer:
        transport = self._transport
        assert transport is not None
        end = _WorkEnd()
        self._tasks[call_id] = asyncio.current_task()  # type: ignore[assignment]
        try:
            try:
                request = decode_json(payload)
            except BaseException:
                end.release()  # the instance never saw the call
                raise
            response = encode_json(await transport.acall(type_tag, request, timeout, end.release))
        except asyncio.CancelledError:
            return await self._failed(end, type_tag, Cancelled("call cancelled by the caller"))
        except BaseException as exc:
            return await self._failed(end, type_tag, exc)
        finally:
            self._tasks.pop(call_id, None)
        await end.wait()
        return True, response, "", self._records.count, transport.rejected_count

    async def call_raw(
        self, call_id: int, message_id: int, payload: bytes, timeout: float | None
    ) -> Answer:
        transport = self._transport
        assert transport is not None
        end = _WorkEnd()
        self._tasks[call_id] = asyncio.current_task()  # type: ignore[assignment]
        try:
            response = await transport.acall_raw(message_id, payload, timeout, end.release)
        except asyncio.CancelledError:
            error: BaseException = Cancelled("call cancelled by the caller")
            return await self._failed(end, f"raw message {message_id}", error)
        except BaseException as exc:
            return await self._failed(end, f"raw message {message_id}", exc)
        finally:
            self._tasks.pop(call_id, None)
        await end.wait()
        return True, bytes(response), "", self._records.count, transport.rejected_count

    async def _failed(self, end: _WorkEnd, what: str, exc: BaseException) -> Answer:
        from .._worker.server import call_error

        error = call_error(what, exc)
        await end.wait()
        transport = self._transport
        rejected = 0 if transport is None else transport.rejected_count
        return False, int(error.code), error.message, self._records.count, rejected

    async def cancel(self, call_id: int) -> None:
        """An asyncio caller was cancelled: cancel its call's task (if still running)."""
        task = self._tasks.get(call_id)
        if task is not None:
            task.cancel()

    # -- control -----------------------------------------------------------------------

    async def records(self, wait: float) -> tuple[list[tuple[int, str, str]], bool]:
        """The host's log poll: records so far (waiting up to ``wait`` for one), ended?"""
        return await self._records.take(wait)

    async def set_log_level(self, level: int) -> None:
        parsed = LogLevel(level)
        self._sink.level = parsed
        if self._transport is not None:
            self._transport.set_log_level(parsed)

    async def usage(self) -> tuple[int, int | None, float | None]:
        """This process's pid, RSS and CPU seconds, as seen on its node."""
        import psutil

        try:
            me = psutil.Process()
            with me.oneshot():
                return os.getpid(), me.memory_info().rss, sum(me.cpu_times()[:2])
        except psutil.Error:
            return os.getpid(), None, None

    async def stop(self, timeout: float) -> str | None:
        """Stop the instance within ``timeout``; the error, or None. The record stream
        ends once what it printed has been read."""
        return await asyncio.to_thread(self._stop, timeout)

    def _stop(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        error: str | None = None
        try:
            if self._transport is not None:
                self._transport.shutdown(timeout)
        except PluginError as exc:
            error = exc.message
        except BaseException as exc:
            error = describe_exception(exc)
        finally:
            self._finish(deadline)
        return error

    def _finish(self, deadline: float) -> None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self._output.join(min(OUTPUT_FINISH, max(0.0, deadline - time.monotonic())))
        self._records.end()
        if self._code is not None:
            self._code.remove()
