"""The actor: one plugin instance, run by the in-process (or native) transport inside it.

``PluginActor`` is a plain class; ``_ray.session`` makes it a Ray actor class on first use
(so this module needs Ray only where it runs). It is an *async* actor: every call is a
coroutine awaiting the instance's ``acall``, so thousands can wait at once without a thread
each, sync handlers run on the instance's own threads as in-process, and the host can
cancel one call (``cancel``) exactly as cancelling an in-process ``acall`` would.

A call's answer is returned only once the plugin's work for it has ended (its ``release``):
the host gives the call's slot back when the answer arrives, so a call that timed out keeps
its slot until its handler really returns (the host stops waiting at its own deadline).
A call and its answer cross Ray as one msgpack ``bytes`` value each (``_ray.wire``); an
answer holds an error code, never an exception, so nothing of Ray's error wrapping reaches
the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._config import PluginConfig
from .._errors import Cancelled, ErrorCode, PluginError, describe_exception
from .._json import decode_json, encode_json
from .._levels import LogLevel
from .._transport import PluginMetadata, Transport
from .._worker.output import OutputPump
from .._worker.server import call_error
from .records import BufferSink, OutputLog, RecordBuffer, capture_output
from .shipping import ShippedCode, UnpackedCode
from .wire import CallAnswer, pack, unpack_request


def _named(key: str | int) -> str:
    """A call as error messages name it: its type tag, or ``raw message N``."""
    return key if type(key) is str else f"raw message {key}"


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

    def __init__(self, max_threads: int) -> None:
        self._records = RecordBuffer()
        self._sink = BufferSink(self._records, LogLevel.INFO)
        stdout_fd, stderr_fd = capture_output()
        self._output = OutputPump(stdout_fd, stderr_fd, OutputLog(self._sink), "plugbridge-ray")
        self._transport: Transport | None = None
        self._code: UnpackedCode | None = None
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._threads = ThreadPoolExecutor(max_threads, thread_name_prefix="plugbridge-ray-call")
        """Runs calls from host threads; grows to the number running at once (like the
        worker's leader/follower threads) and is never waited for at exit."""

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
    #
    # As with a worker: a call from a host thread runs the instance's ``call_json`` /
    # ``call_raw`` on a thread here (the response bytes exactly as the plugin made them),
    # a call from an asyncio caller runs its ``acall`` / ``acall_raw`` as a task, which
    # ``cancel`` can cancel.

    async def call(self, packed: bytes) -> bytes:
        """A call from a host thread (a packed ``CallRequest``); its packed answer."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._call, packed)

    def _call(self, packed: bytes) -> bytes:
        transport = self._transport
        assert transport is not None
        call = unpack_request(packed)
        key = call.key
        end = threading.Event()
        try:
            if type(key) is str:
                response = transport.call_json(key, call.payload, call.timeout, end.set)
            else:
                response = transport.call_raw(int(key), call.payload, call.timeout, end.set)
        except BaseException as exc:
            end.wait()
            return self._error_answer(key, exc)
        end.wait()
        return self._answer(bytes(response))

    async def acall(self, packed: bytes) -> bytes:
        """A call from an asyncio caller (a packed ``CallRequest``): a task that ``cancel``
        may cancel; its packed answer."""
        transport = self._transport
        assert transport is not None
        call = unpack_request(packed)
        key, timeout = call.key, call.timeout
        end = _WorkEnd()
        self._tasks[call.call_id] = asyncio.current_task()  # type: ignore[assignment]
        try:
            if type(key) is str:
                try:
                    request = decode_json(call.payload)
                except BaseException:
                    end.release()  # the instance never saw the call
                    raise
                result = await transport.acall(key, request, timeout, end.release)
                response = encode_json(result)
            else:
                response = bytes(
                    await transport.acall_raw(int(key), call.payload, timeout, end.release)
                )
        except asyncio.CancelledError:
            await end.wait()
            return self._error_answer(key, Cancelled("call cancelled by the caller"))
        except BaseException as exc:
            await end.wait()
            return self._error_answer(key, exc)
        finally:
            self._tasks.pop(call.call_id, None)
        await end.wait()
        return self._answer(response)

    def _answer(self, response: bytes) -> bytes:
        transport = self._transport
        rejected = 0 if transport is None else transport.rejected_count
        return pack(CallAnswer(True, response, 0, "", self._records.count, rejected))

    def _error_answer(self, key: str | int, exc: BaseException) -> bytes:
        """A failed call's answer: its error's code and message (``call_error`` maps an
        exception that is not a plugbridge error as a worker would)."""
        error = call_error(_named(key), exc)
        transport = self._transport
        rejected = 0 if transport is None else transport.rejected_count
        count = self._records.count
        return pack(CallAnswer(False, b"", int(error.code), error.message, count, rejected))

    async def cancel(self, call_id: int) -> None:
        """An asyncio caller was cancelled: cancel its call's task (if still running)."""
        task = self._tasks.get(call_id)
        if task is not None:
            task.cancel()

    # -- control -----------------------------------------------------------------------

    async def named(self) -> str | None:
        """The plugin's name once its class is known (its start hook runs after): the
        host names a start that missed its deadline by it."""
        return self._sink.plugin_name

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
