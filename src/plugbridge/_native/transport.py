"""The native transport: one instance of a rustbridge-ABI library, hosted in this process.

Each instance maps its own private copy of the library (``library``), so the library's
process-global callback, level and state belong to that instance alone. Calls go
straight into ``plugin_call`` on the caller's thread with the GIL released, so many
threads run in the library at once.

Timeouts: a C call cannot be interrupted. A call with a timeout runs on one of the
instance's threads while the caller waits; when the timeout passes the caller gets
``Timeout`` at once, but the C call runs on and keeps its concurrency slot until it
really returns, when its buffer is freed and its result dropped. ``shutdown`` likewise
stops waiting for calls in flight and for ``plugin_shutdown`` at its timeout; a library
that a thread is still inside is unmapped only when that thread comes out, or never.

Everything a call hands to C (type tag, request) and the config handed to ``plugin_init``
is encoded *before* anything is held: a value with no UTF-8/JSON form is refused with
nothing to undo (no gate entered, no library mapped).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import starmap as _starmap
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .._calls.completion import Completion, LoopCompletion, ThreadCompletion
from .._calls.gate import CallGate
from .._calls.inbox import LoopInboxes
from .._calls.offload import Offload
from .._calls.shutdown import LocalShutdown, hook_failed, hook_late
from .._config import PluginConfig
from .._errors import (
    ConfigError,
    InitializationFailed,
    InternalError,
    InvalidState,
    PluginError,
    call_timed_out,
    cancelled_by_shutdown,
    describe_exception,
    no_binary_transport,
    no_handler,
    not_active,
    not_carried_as_json,
    raw_call_timed_out,
)
from .._levels import LogLevel
from .._lifecycle import Lifecycle, LifecycleState
from .._logsink import LogSink
from .._sources import NativeSource
from .._transport import PluginMetadata, Release, Transport
from .abi import Abi
from .bounded import CallFailed, run_bounded
from .envelope import decode_json, decode_value, raw_error, take, take_raw
from .library import PrivateLibrary
from .trampoline import LogTrampoline

T = TypeVar("T")

_STATES = frozenset(int(state) for state in LifecycleState)
_encode = msgspec.json.encode
_string_at = ctypes.string_at


class NativeTransport(Transport):
    """One native plugin instance in this process. Build it with ``start``."""

    def __init__(self, source: NativeSource, config: PluginConfig, sink: LogSink) -> None:
        self._source = source
        self._config = config
        self._sink = sink
        self._lifecycle = Lifecycle()
        self._gate = CallGate()
        self._trampoline = LogTrampoline(sink.instance_log(), weakref.WeakMethod(self._note_ctrl_c))
        self._library: PrivateLibrary | None = None
        self._abi: Abi | None = None
        self._handle: int | None = None
        self._call: Any = None
        self._free: Any = None
        self._call_raw: Any = None
        """``plugin_call_raw`` while ACTIVE, if the library has the binary transport."""
        self._free_raw: Any = None
        self.metadata = native_metadata(source)
        self._offload = Offload(config.thread_count(), f"plugbridge-{self.metadata.name}-call")
        self._cancelled = False
        self._after_call = False
        """Something to do once a call made on the caller's thread returns from C: raise
        ``Cancelled`` (the shutdown cancelled what was left) or a Ctrl-C that landed in a
        log callback meanwhile (``_ctrl_c``). One flag, so a call tests one attribute."""
        self._ctrl_c = False
        self._caller_loops = LoopInboxes()
        self._shutdown = LocalShutdown(self._lifecycle, self._gate)
        self._stop_returned = False
        """plugin_shutdown has returned: nothing of the plugin's runs in the library now."""
        self._final_rejected = 0

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls, source: NativeSource, config: PluginConfig, sink: LogSink, deadline: float | None
    ) -> NativeTransport:
        """Map a private copy, create and init the plugin; ``InitializationFailed`` if not."""
        transport = cls(source, config, sink)
        transport._start(deadline)
        return transport

    def _start(self, deadline: float | None) -> None:
        self._lifecycle.move(LifecycleState.STARTING)
        self._sink.name_plugin(self.metadata.name)
        try:
            config_json = self._config_json()  # first: a config with no JSON form maps nothing
            library = PrivateLibrary(self._source)
        except BaseException:
            self._fail_start()
            raise
        self._library = library
        try:
            library.keep_alive(self._trampoline)
            abi = library.abi
            callback = self._trampoline.pointer
        except BaseException:
            self._fail_start(unload=True)
            raise

        create_failed: list[str] = []

        def init() -> int | None:
            # A plugin that builds itself from its config (rustbridge's PluginFactory) sees
            # ``data`` only through plugin_create_with_config: preferred when exported.
            if abi.create_with_config is not None:
                plugin = abi.create_with_config(config_json, len(config_json))
            else:
                plugin = abi.create()
            if not plugin:
                create_failed.append(
                    "plugin_create_with_config" if abi.create_with_config else "plugin_create"
                )
                return None
            handle: int | None = abi.init(plugin, config_json, len(config_json), callback)
            return handle

        label = f"native plugin {self.metadata.name!r}"
        timeout = None if deadline is None else deadline - time.monotonic()
        try:
            finished, handle = run_bounded(
                init, timeout, f"plugbridge-{self.metadata.name}-init", late=self._late_init
            )
        except CallFailed as failed:  # nothing runs in the library
            self._fail_start(unload=True)
            raise InitializationFailed(f"{label}: plugin_init failed: {failed.error!r}") from None
        except BaseException:  # interrupted: _late_init unmaps it once plugin_init returns
            self._fail_start()
            raise
        if not finished:
            self._fail_start()  # unmapped by _late_init once plugin_init returns
            raise InitializationFailed(f"{label} did not finish plugin_init in time")
        if not handle:
            self._fail_start(unload=True)
            why = f"{create_failed[0]} returned NULL" if create_failed else "returned NULL"
            raise InitializationFailed(f"{label}: plugin_init failed ({why})")
        self._abi, self._handle = abi, handle
        self._call, self._free = abi.call, abi.free_buffer
        self._call_raw, self._free_raw = abi.call_raw, abi.free_response
        self.metadata = replace(self.metadata, binary_transport=abi.call_raw is not None)
        self._gate.open()
        self._lifecycle.move(LifecycleState.ACTIVE)

    def _config_json(self) -> bytes:
        """The config ``plugin_init`` gets; ``ConfigError`` if it has no JSON form."""
        try:
            wire = self._config.to_wire()
            wire["log_level"] = self._sink.level.name.lower()  # the handle's, across reloads
            return _encode(wire)
        except Exception as exc:
            raise ConfigError(
                f"the config of native plugin {self.metadata.name!r} has no JSON form: "
                f"{describe_exception(exc)}"
            ) from None

    def _fail_start(self, unload: bool = False) -> None:
        self._lifecycle.try_move(LifecycleState.FAILED)
        self._trampoline.close()
        if unload and self._library is not None:
            self._library.close()

    def _late_init(self, handle: int | None) -> None:
        """plugin_init returned after ``start`` gave up: stop what it started, then unmap."""
        assert self._library is not None
        if handle:
            self._library.abi.shutdown(handle)
        self._library.close()

    @property
    def state(self) -> LifecycleState:
        state = self._lifecycle.state
        if state is not LifecycleState.ACTIVE:
            return state
        raw = self._ask(lambda abi, handle: int(abi.get_state(handle)), None)
        if raw is None:  # closed meanwhile
            return self._lifecycle.state
        return LifecycleState(raw) if raw in _STATES else LifecycleState.FAILED

    @property
    def rejected_count(self) -> int:
        count = self._ask(lambda abi, handle: int(abi.get_rejected_count(handle)), None)
        return self._final_rejected if count is None else count

    def set_log_level(self, level: LogLevel) -> None:
        self._ask(lambda abi, handle: abi.set_log_level(handle, int(level)), None)

    def _ask(self, ask: Callable[[Abi, int | None], T], otherwise: T) -> T:
        """``ask(abi, handle)`` from inside the gate; ``otherwise`` if it is closed.

        The caller's thread may be interrupted between any two steps (Ctrl-C), so it counts
        itself in and out with one builtin call each, the first inside the ``try`` and the
        second first in the ``finally`` (see ``CallGate``).
        """
        gate = self._gate
        try:
            gate.arrive(None)
            if not gate.is_open:
                return otherwise
            assert self._abi is not None
            return ask(self._abi, self._handle)
        finally:
            try:
                gate.depart()
            finally:
                gate.after_depart()

    def shutdown(self, timeout: float) -> None:
        self._shutdown.run(
            timeout,
            what=f"plugin {self.metadata.name!r}",
            cancel_left=self._cancel_left,
            stop=self._stop_hook,
            teardown=self._teardown,
        )

    def _cancel_left(self) -> None:
        self._cancelled = self._after_call = True
        self._offload.cancel_all()

    def _note_ctrl_c(self) -> None:
        """A Ctrl-C landed while the main thread delivered a record from inside C (the log
        trampoline cannot raise through C): the call raises it once C returns."""
        self._ctrl_c = self._after_call = True

    def _settle_after_call(self) -> None:
        """What ``_after_call`` flagged: a Ctrl-C on the main thread first, then Cancelled."""
        if self._ctrl_c and threading.current_thread() is threading.main_thread():
            self._ctrl_c = False
            self._after_call = self._cancelled
            raise KeyboardInterrupt
        if self._cancelled:
            raise cancelled_by_shutdown()

    def _stop_hook(self, deadline: float, timeout: float) -> Sequence[str]:
        """Run ``plugin_shutdown`` by ``deadline``; once it has returned, teardown unmaps."""
        abi, handle = self._abi, self._handle
        assert abi is not None
        self._final_rejected = int(abi.get_rejected_count(handle))
        try:
            finished, stopped = run_bounded(
                lambda: bool(abi.shutdown(handle)),
                deadline - time.monotonic(),
                f"plugbridge-{self.metadata.name}-shutdown",
                late=self._late_shutdown,
            )
        except CallFailed as failed:  # not running (it raised, or its thread never started)
            self._stop_returned = True
            return [hook_failed("plugin_shutdown", f"failed: {describe_exception(failed.error)}")]
        # Interrupted: _late_shutdown unmaps the copy once plugin_shutdown returns.
        if not finished:
            return [hook_late("plugin_shutdown", timeout, "the library stays mapped until it does")]
        self._stop_returned = True
        return [] if stopped else [hook_failed("plugin_shutdown", "reported failure")]

    def _teardown(self, deadline: float, drained: bool) -> None:
        self._trampoline.close()  # no record reaches the callback once shutdown returns
        if self._stop_returned:
            self._gate.when_idle(self._unload)
        self._offload.shutdown(deadline if drained else time.monotonic())

    def _late_shutdown(self, stopped: bool | None) -> None:
        self._gate.when_idle(self._unload)

    def _unload(self) -> None:
        """Unmap the private copy: plugin_shutdown has returned and no thread is inside."""
        self._call = self._free = self._call_raw = self._free_raw = self._abi = None
        if self._library is not None:
            self._library.close()

    # -- calls -------------------------------------------------------------------------

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        tag = self._tag_bytes(type_tag, release)
        payload = _request_json(request, type_tag, release)
        return self._send(tag, payload, timeout, release, decode_value)

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        tag = self._tag_bytes(type_tag, release)
        result: bytes = self._send(tag, payload, timeout, release, decode_json)
        return result

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        tag = self._tag_bytes(type_tag, release)
        payload = _request_json(request, type_tag, release)
        if not self._gate.is_open:
            release()
            raise self._not_active()
        try:
            completion = LoopCompletion(self._caller_loops.get(asyncio.get_running_loop()))
        except BaseException:
            release()
            raise
        self._offload_call(tag, payload, completion, release, decode_value)
        return await completion.result(timeout, lambda: call_timed_out(type_tag, timeout))

    def _send(
        self, tag: bytes, payload: bytes, timeout: float | None, release: Release, decode: Any
    ) -> Any:
        """One call with its inputs encoded; ``release`` is called once it has ended."""
        if timeout is None:  # the fast path: straight into C on the caller's thread
            # A Ctrl-C may land after any call below; each step that holds something is
            # one builtin call inside the ``try`` that undoes it (see ``CallGate``).
            gate = self._gate
            try:
                gate.arrive(None)
                if not gate.is_open:
                    raise self._not_active()
                # plugin_call runs while the unpacking iterates (no call instruction, so no
                # interrupt) and its buffer is held at once: a Ctrl-C landing as it returns
                # cannot drop the buffer unfreed (as ``buffer = self._call(...)`` would).
                (buffer,) = _starmap(self._call, ((self._handle, tag, payload, len(payload)),))
                try:  # envelope.take(), inlined: this is the hot path
                    code = buffer.error_code
                    address = buffer.data  # NULL with a length would be an ABI breach
                    data = _string_at(address, buffer.len) if address else b""
                finally:
                    self._free(buffer)
            finally:
                try:
                    gate.depart()
                finally:
                    release()
                    gate.after_depart()
            if self._after_call:
                self._settle_after_call()
            return decode(code, data)
        if not self._gate.is_open:
            release()
            raise self._not_active()
        completion = ThreadCompletion()
        self._offload_call(tag, payload, completion, release, decode)
        return completion.result(timeout, lambda: call_timed_out(tag.decode(), timeout))

    def _offload_call(
        self, tag: bytes, payload: bytes, completion: Completion, release: Release, decode: Any
    ) -> None:
        """Run a call on the instance's threads; the caller waits on ``completion``.

        The call enters the gate on the pool thread, so the caller's thread holds nothing
        an interrupt could strand: if the gate closed meanwhile, the caller gets
        ``InvalidState`` through the completion (and the handle retries after a reload).
        """
        gate = self._gate

        def work() -> Any:
            if not gate.enter():
                raise self._not_active()
            try:
                code, data = take(self._call(self._handle, tag, payload, len(payload)), self._free)
            finally:
                gate.leave()
            return decode(code, data)

        def done() -> None:
            release()

        self._offload.run(completion, work, done, _host_failure)

    # -- the binary transport ----------------------------------------------------------
    #
    # The same gate, slot and timeout machinery as ``call``; the state is checked before
    # the export, so a closed handle is ``InvalidState`` whether or not the library has the
    # binary transport. Each response is freed with ``rb_response_free`` exactly once.

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        if timeout is None:  # straight into C on the caller's thread, as ``_send`` does
            gate = self._gate
            try:
                gate.arrive(None)
                if not gate.is_open:
                    raise self._not_active()
                call_raw = self._call_raw
                if call_raw is None:
                    raise no_binary_transport(self.metadata.name)
                (response,) = _starmap(
                    call_raw, ((self._handle, message_id, payload, len(payload)),)
                )
                try:
                    code = response.error_code
                    address = response.data
                    data = _string_at(address, response.len) if address else b""
                finally:
                    self._free_raw(response)
            finally:
                try:
                    gate.depart()
                finally:
                    release()
                    gate.after_depart()
            if self._after_call:
                self._settle_after_call()
            if code:
                raise raw_error(code, data)
            return data
        self._admit_raw(release)
        completion = ThreadCompletion()
        self._offload_raw(message_id, payload, completion, release)
        result: bytes = completion.result(timeout, lambda: raw_call_timed_out(message_id, timeout))
        return result

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        self._admit_raw(release)
        try:
            completion = LoopCompletion(self._caller_loops.get(asyncio.get_running_loop()))
        except BaseException:
            release()
            raise
        self._offload_raw(message_id, payload, completion, release)
        result: bytes = await completion.result(
            timeout, lambda: raw_call_timed_out(message_id, timeout)
        )
        return result

    def _admit_raw(self, release: Release) -> None:
        """Before handing a raw call to a thread: refuse it at once (slot given back) if the
        instance is not ACTIVE, or if the library has no binary transport."""
        if not self._gate.is_open:
            release()
            raise self._not_active()
        if self._call_raw is None:
            release()
            raise no_binary_transport(self.metadata.name)

    def _offload_raw(
        self, message_id: int, payload: bytes, completion: Completion, release: Release
    ) -> None:
        """``_offload_call`` for the binary transport."""
        gate = self._gate

        def work() -> bytes:
            if not gate.enter():
                raise self._not_active()
            try:
                call_raw = self._call_raw
                if call_raw is None:
                    raise no_binary_transport(self.metadata.name)
                response = call_raw(self._handle, message_id, payload, len(payload))
                code, data = take_raw(response, self._free_raw)
            finally:
                gate.leave()
            if code:
                raise raw_error(code, data)
            return data

        def done() -> None:
            release()

        self._offload.run(completion, work, done, _host_failure)

    def _not_active(self) -> InvalidState:
        return not_active(self.metadata.name, self._lifecycle.state.name)

    def _tag_bytes(self, type_tag: str, release: Release) -> bytes:
        """The type tag as C gets it (UTF-8, NUL-terminated); else ``UnknownMessageType``:
        no handler can be named by a tag with no such form."""
        if isinstance(type_tag, str) and "\0" not in type_tag:
            try:
                return str.encode(type_tag)  # a str subclass is its text, as in other transports
            except UnicodeEncodeError:  # a lone surrogate
                pass
        release()
        raise no_handler(self.metadata.name, type_tag)


def _host_failure(exc: BaseException) -> PluginError:
    return InternalError(f"native call failed in the host: {exc!r}")


def native_metadata(source: NativeSource) -> PluginMetadata:
    """A bundle's library is named by its manifest (name, version, trust); a bare library
    by its file."""
    bundle = source.bundle
    if bundle is None:
        return PluginMetadata(plugin_name(source.path), "", ())
    return PluginMetadata(bundle.name, bundle.version, (), bundle.trust)


def plugin_name(path: Path) -> str:
    """``libhello_c.so`` / ``libfoo.so.1`` / ``foo.dll`` -> ``hello_c`` / ``foo`` / ``foo``."""
    name = path.name
    for suffix in (".so", ".dylib", ".dll"):
        head, found, _ = name.partition(suffix)
        if found:
            name = head
            break
    return name.removeprefix("lib") or name


def _request_json(request: Any, type_tag: str, release: Release) -> bytes:
    try:
        return _encode(request)
    except Exception as exc:  # TypeError, a lone surrogate, nesting too deep, a huge int
        release()
        raise not_carried_as_json(f"request for {type_tag!r}", exc) from None
    except BaseException:
        release()
        raise
