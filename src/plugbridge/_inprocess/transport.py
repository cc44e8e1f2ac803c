"""The in-process transport: a Python plugin instance living in the host's own process.

The instance owns a private module namespace, an event loop on its own thread (async
handlers, hooks and the tasks they spawn), an ``Offload`` pool for sync handlers that must
not block their caller, and a log router. Sync handlers without a timeout run inline on the
caller's thread: the fastest path, with the instance's log attribution set around them.

Interrupts: a ``KeyboardInterrupt`` (SIGINT) may land on the calling thread between any
two steps. The caller's bookkeeping is therefore made of single builtin calls, each undone
first thing in a ``finally`` whose ``try`` began before it: the gate count (``arrive`` /
``depart``), the attribution ContextVar (set, then set back to what it was), and for calls
handed to another thread a reservation that exactly one side, the caller or the work, takes
back (see ``CallGate``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

import msgspec

from .._calls.completion import Completion, LoopCompletion, ThreadCompletion
from .._calls.gate import CallGate
from .._calls.inbox import LoopInboxes
from .._calls.offload import Offload
from .._calls.shutdown import LocalShutdown, hook_failed, hook_late
from .._config import PluginConfig
from .._errors import (
    Cancelled,
    HandlerError,
    InitializationFailed,
    InvalidState,
    PluginError,
    cancelled_by_shutdown,
    describe_exception,
    no_handler,
    no_raw_handler,
    not_active,
    seconds,
)
from .._levels import LogLevel
from .._lifecycle import Lifecycle, LifecycleState
from .._logsink import LogSink, attributed_instance
from .._plugin import Plugin, PluginContext
from .._sources import PythonSource
from .._transport import PluginMetadata, Release, Transport
from .logrouting import InstanceLogRouter
from .loopthread import LoopThread
from .namespace import PluginNamespace
from .routes import PLAIN_TYPES, Route, RouteTable

Encode = Callable[[Any], Any]

_get_attribution = attributed_instance.get
_set_attribution = attributed_instance.set
_convert = msgspec.convert

STOP_GRACE = 0.25
"""Seconds a failed start may still spend stopping what it started once its deadline has
passed: enough for a responsive loop to stop, not enough to matter; hung threads are
abandoned, never waited for."""


class InProcessTransport(Transport):
    """One Python plugin instance in this process. Build it with ``start``."""

    def __init__(self, source: PythonSource, config: PluginConfig, sink: LogSink) -> None:
        self._config = config
        self._sink = sink
        self._lifecycle = Lifecycle()
        self._gate = CallGate()
        self._arrive = self._gate.arrive
        self._depart = self._gate.depart
        self._reserve = self._gate.reserve
        self._unreserve = self._gate.unreserve
        self._shutdown = LocalShutdown(self._lifecycle, self._gate)
        self._namespace = PluginNamespace(source)
        self._router = InstanceLogRouter(self._namespace, sink.instance_log(), sink.level)
        self._context = contextvars.Context()
        self._context.run(attributed_instance.set, self._router)
        self._plugin: Plugin | None = None
        self._routes: RouteTable | None = None
        self._get_route: Callable[[str], Route | None] = _no_route
        self._get_binary: Callable[[int], Route | None] = _no_route
        self._ctx: PluginContext | None = None
        self._loop: LoopThread | None = None
        self._offload: Offload | None = None
        self._cancelled = False
        self._caller_loops = LoopInboxes()
        self.metadata = PluginMetadata(source.module, "", ())

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls, source: PythonSource, config: PluginConfig, sink: LogSink, deadline: float | None
    ) -> InProcessTransport:
        """Import, construct and start a fresh instance; ``InitializationFailed`` if not.

        ``deadline`` (monotonic) bounds ``on_start``; a start that fails is torn down within
        what is left of it (hung threads are abandoned).
        """
        began = time.monotonic()
        transport = cls(source, config, sink)
        transport._start(deadline, began)
        return transport

    def _start(self, deadline: float | None, began: float) -> None:
        self._lifecycle.move(LifecycleState.STARTING)
        try:
            plugin_class, plugin, routes = self._construct()
            name = str(plugin_class.name or self._namespace.source.module)
            self._sink.name_plugin(name)
            self.metadata = PluginMetadata(
                name,
                str(plugin_class.version),
                routes.type_tags,
                schemas=routes.schemas(),
                binary_transport=bool(routes.binary),
            )
            self._plugin, self._routes = plugin, routes
            self._get_route = routes.get if routes.raw else routes.routes.get
            self._get_binary = routes.binary.get
            self._ctx = PluginContext(
                self._config, self._router.context_logger(name), self._lifecycle
            )
            threads = self._config.thread_count()
            label = f"plugbridge-{name}-{self._namespace.name.rpartition('_')[2]}"
            self._offload = Offload(threads, f"{label}-sync")
            self._loop = LoopThread(label, self._context, threads)
            try:
                self._run_hook("on_start", deadline)
            except TimeoutError:
                raise InitializationFailed(
                    f"{name}.on_start did not finish within the start timeout"
                    f" ({self._start_limit(deadline, began)}); the instance was abandoned"
                ) from None
            except BaseException as exc:
                raise InitializationFailed(
                    f"{name}.on_start raised {describe_exception(exc)}"
                ) from None
        except BaseException:
            self._lifecycle.try_move(LifecycleState.FAILED)
            self._teardown(self._failed_start_deadline(deadline), True)
            raise
        self._gate.open()
        self._lifecycle.move(LifecycleState.ACTIVE)

    def _start_limit(self, deadline: float | None, began: float) -> str:
        """The limit ``deadline`` stood for: ``start_timeout``, or a reload's shorter timeout."""
        if deadline is None:
            return seconds(None)
        budget = deadline - began  # what the handle allowed, less a moment's bookkeeping
        configured = self._config.start_timeout
        return seconds(configured if budget > configured - 0.25 else round(budget, 2))

    def _failed_start_deadline(self, deadline: float | None) -> float:
        """A failed start stops what it started by its own deadline (plus ``STOP_GRACE``),
        and never later than the shutdown timeout would allow."""
        now = time.monotonic()
        latest = now + self._config.shutdown_timeout
        if deadline is None:
            return latest
        return min(latest, max(deadline, now + STOP_GRACE))

    def _construct(self) -> tuple[type[Plugin], Plugin, RouteTable]:
        """Import the module and build the plugin object (module code is the plugin's)."""
        token = attributed_instance.set(self._router)
        try:
            plugin_class = self._namespace.load()
            try:
                plugin = plugin_class()
                return plugin_class, plugin, RouteTable(plugin)
            except InitializationFailed:
                raise
            except BaseException as exc:
                raise InitializationFailed(
                    f"cannot create plugin {plugin_class.__qualname__}: {describe_exception(exc)}"
                ) from None
        finally:
            attributed_instance.reset(token)

    def _run_hook(self, name: str, deadline: float | None) -> None:
        assert self._loop is not None
        hook = getattr(self._plugin, name)
        ctx = self._ctx

        async def run_hook() -> None:
            result = hook(ctx)
            if inspect.isawaitable(result):
                await result

        self._loop.run(run_hook(), deadline)

    @property
    def state(self) -> LifecycleState:
        return self._lifecycle.state

    def set_log_level(self, level: LogLevel) -> None:
        self._router.set_log_level(level)

    def shutdown(self, timeout: float) -> None:
        self._shutdown.run(
            timeout,
            what=f"plugin {self.metadata.name!r}",
            cancel_left=self._cancel_left,
            stop=self._stop_hook,
            teardown=self._teardown,
        )

    def _cancel_left(self) -> None:
        self._cancelled = True
        assert self._offload is not None
        self._offload.cancel_all()

    def _stop_hook(self, deadline: float, timeout: float) -> Sequence[str]:
        try:
            self._run_hook("on_stop", deadline)
        except TimeoutError:
            return [hook_late("on_stop", timeout)]
        except BaseException as exc:
            return [hook_failed("on_stop", f"raised {describe_exception(exc)}")]
        return []

    def _teardown(self, deadline: float, drained: bool) -> None:
        """Release everything the instance holds; say (WARN) what had to be abandoned."""
        leftovers: list[str] = []
        if self._loop is not None and not self._loop.stop(deadline):
            leftovers.append("its event loop thread did not stop in time and was abandoned")
        if self._offload is not None and not self._offload.shutdown(deadline):
            leftovers.append("a sync handler thread still running was abandoned")
        if leftovers:
            self._router.log.emit(
                LogLevel.WARN,
                "plugbridge",
                f"plugin {self.metadata.name!r}: {'; '.join(leftovers)}",
            )
        self._router.close()
        self._namespace.unload()
        self._get_route = self._get_binary = _no_route
        if self._routes is not None:
            self._routes.clear()
        self._plugin = None

    # -- calls -------------------------------------------------------------------------
    #
    # Admission and release, the same on every path: the route is looked up first (no
    # state yet). A sync handler without a timeout then runs inline (``_run_inline``);
    # anything else is handed to the instance's threads (``_hand_off``). Either way the
    # gate is entered inside a ``try`` and left first thing in its ``finally``, and
    # ``release`` is called once the plugin's work for the call has ended.

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        try:
            route = self._get_route(type_tag)
        except TypeError:  # an unhashable type tag
            route = None
        if route is None:
            self._refuse(type_tag, release)
        if timeout is not None or route.is_async:
            completion = ThreadCompletion()
            return self._hand_off(route, request, completion, release, timeout, is_json=False)
        try:
            if route.convert_to is not None and type(request) in PLAIN_TYPES:
                value = _convert(request, route.convert_to)
            else:
                value = route.request_from_object(request)
        except Exception as exc:
            release()
            raise route.bad_request(exc) from None
        return route.response_to_object(self._run_inline(route, value, release))

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        try:
            route = self._get_route(type_tag)
        except TypeError:
            route = None
        if route is None:
            self._refuse(type_tag, release)
        if timeout is not None or route.is_async:
            completion = ThreadCompletion()
            data: bytes = self._hand_off(route, payload, completion, release, timeout, is_json=True)
            return data
        try:
            value = route.request_from_json(payload)
        except BaseException:
            release()
            raise
        return route.response_to_json(self._run_inline(route, value, release))

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        try:
            route = self._get_route(type_tag)
        except TypeError:
            route = None
        if route is None:
            self._refuse(type_tag, release)
        return await self._await_offloaded(route, request, timeout, release)

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        route = self._get_binary(message_id)
        if route is None:
            self._refuse(message_id, release, raw=True)
        if timeout is not None or route.is_async:
            completion = ThreadCompletion()
            data: bytes = self._hand_off(route, payload, completion, release, timeout, is_json=True)
            return data
        result: bytes = route.response_to_json(self._run_inline(route, payload, release))
        return result

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        route = self._get_binary(message_id)
        if route is None:
            self._refuse(message_id, release, raw=True)
        data: bytes = await self._await_offloaded(route, payload, timeout, release)
        return data

    async def _await_offloaded(
        self, route: Route, request: Any, timeout: float | None, release: Release
    ) -> Any:
        """An async caller's call (``acall``, ``acall_raw``: a ``BinaryRoute`` takes and
        gives bytes on this object path as on the JSON one): run on the instance's threads,
        awaited on the caller's loop. The take-back is ``_hand_off``'s, kept inline in both:
        a helper's own entry would come before its first builtin call."""
        completion = LoopCompletion(self._caller_loops.get(asyncio.get_running_loop()))
        try:
            self._reserve(completion)
            if not self._gate.is_open:
                raise self._not_active()
            self._start_work(route, route.request_from_object(request), completion, release, False)
            return await completion.result(timeout, lambda: route.timed_out(timeout))
        except BaseException:
            try:  # first, and one builtin: the reservation is taken back, or it was claimed
                self._unreserve(completion)
            except KeyError:
                self._stop_waiting(completion)
            else:
                self._withdrawn(completion, release)
            raise

    def _run_inline(self, route: Route, value: Any, release: Release) -> Any:
        """Run a sync handler on the caller's thread, attributed to this instance."""
        previous = _get_attribution()
        try:
            self._arrive(None)
            if not self._gate.is_open:
                raise self._not_active()
            try:
                _set_attribution(self._router)
                result = route.method(self._ctx, value)
            except (PluginError, KeyboardInterrupt):
                raise
            except BaseException as exc:
                raise HandlerError(describe_exception(exc)) from exc
            finally:
                _set_attribution(previous)
        finally:
            self._depart()
            release()
        if self._cancelled:
            raise cancelled_by_shutdown()
        return result

    def _hand_off(
        self,
        route: Route,
        request: Any,
        completion: ThreadCompletion,
        release: Release,
        timeout: float | None,
        *,
        is_json: bool,
    ) -> Any:
        """A sync caller's call that runs on the instance's threads: wait for its outcome."""
        try:
            self._reserve(completion)
            if not self._gate.is_open:
                raise self._not_active()
            if is_json:
                value = route.request_from_json(request)
            elif route.convert_to is not None and type(request) in PLAIN_TYPES:
                try:
                    value = _convert(request, route.convert_to)
                except Exception as exc:
                    raise route.bad_request(exc) from None
            else:
                value = route.request_from_object(request)
            self._start_work(route, value, completion, release, is_json)
            return completion.result(timeout, lambda: route.timed_out(timeout))
        except BaseException:
            try:  # first, and one builtin: the reservation is taken back, or it was claimed
                self._unreserve(completion)
            except KeyError:
                self._stop_waiting(completion)
            else:
                self._withdrawn(completion, release)
            raise

    def _withdrawn(self, completion: Completion, release: Release) -> None:
        """The caller took its call back before the work began: the call ends here."""
        release()
        if self._offload is not None:
            self._offload.pending.discard(completion)
        self._gate.after_depart()

    @staticmethod
    def _stop_waiting(completion: Completion) -> None:
        """The caller leaves while the work runs: the work releases when it ends."""
        completion.give_up(Cancelled("call cancelled: its caller stopped waiting"))

    def _start_work(
        self, route: Route, value: Any, completion: Completion, release: Release, is_json: bool
    ) -> None:
        """Start a reserved call on the instance's loop (async) or offload pool (sync)."""
        assert self._loop is not None
        assert self._offload is not None
        encode = route.response_to_json if is_json else route.response_to_object
        if route.is_async:
            self._offload.pending.add(completion)
            try:
                self._loop.call_soon(self._start_task, route, value, completion, release, encode)
            except RuntimeError:  # the loop is closed: the instance is gone
                self._offload.pending.discard(completion)
                raise self._not_active() from None
            return
        router, ctx, method, gate = self._router, self._ctx, route.method, self._gate

        def work() -> Any:
            token = attributed_instance.set(router)
            try:
                return encode(method(ctx, value))
            finally:
                attributed_instance.reset(token)

        def done() -> None:
            gate.leave()
            release()

        self._offload.run(
            completion, work, done, _handler_error, begin=lambda: gate.claim(completion)
        )

    def _start_task(
        self, route: Route, value: Any, completion: Completion, release: Release, encode: Encode
    ) -> None:
        """On the loop thread: run an async handler as a task of the instance's loop."""
        assert self._loop is not None
        loop = self._loop.loop
        task: asyncio.Task[None] | None = None

        def cancel() -> None:  # runs on the loop thread, after ``task`` is bound
            if task is not None:
                task.cancel()

        completion.on_abandon = lambda: loop.call_soon_threadsafe(cancel)
        task = start_task(loop, self._run_async(route, value, completion, release, encode))

    async def _run_async(
        self, route: Route, value: Any, completion: Completion, release: Release, encode: Encode
    ) -> None:
        """The task body: claims the call, runs it, settles the completion itself.

        The claim is the body's first step, not the task's creator's: a task cancelled
        before its first step never runs its body (nor a ``finally``), so it must not have
        claimed anything; its caller then still holds the reservation and ends the call.
        """
        assert self._offload is not None
        if not self._gate.claim(completion):  # its caller took the call back
            self._offload.pending.discard(completion)
            return
        result: Any = None
        error: PluginError | None = None
        try:
            if completion.settled:  # the caller gave up before the task could start
                return
            result = encode(await route.method(self._ctx, value))
        except asyncio.CancelledError:
            error = cancelled_by_shutdown()
            raise
        except PluginError as exc:
            error = exc
        except BaseException as exc:
            error = _handler_error(exc)
        finally:
            self._offload.pending.discard(completion)
            self._gate.leave()
            release()
            # Settled last: a caller that has its answer finds its slot free.
            completion.settle(result, error)

    def _refuse(self, type_tag: object, release: Release, *, raw: bool = False) -> NoReturn:
        """No route: ``InvalidState`` if the instance is not ACTIVE, else ``UnknownMessageType``
        (``raw``: for a binary-transport message id)."""
        try:
            if not self._gate.is_open:
                raise self._not_active()
            if raw:
                raise no_raw_handler(self.metadata.name, type_tag)
            raise no_handler(self.metadata.name, type_tag)
        finally:
            release()

    def _not_active(self) -> InvalidState:
        return not_active(self.metadata.name, self._lifecycle.state.name)


if sys.version_info >= (3, 12):

    def start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Run the first step at once, as 3.12's eager tasks do: one loop iteration saved."""
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]

else:

    def start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return loop.create_task(coro)


def _no_route(key: object) -> Route | None:
    return None


def _handler_error(exc: BaseException) -> PluginError:
    return HandlerError(describe_exception(exc))
