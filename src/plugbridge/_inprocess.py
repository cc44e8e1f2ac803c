"""The in-process transport: a Python plugin instance living in the host's own process.

The instance owns a private module namespace, an event loop on its own thread (async
handlers, hooks and the tasks they spawn), a small daemon pool for sync handlers that must
not block their caller, and a log router. Sync handlers without a timeout run inline on the
caller's thread: the fastest path, with the instance's log attribution set around them.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from ._completion import Completion, LoopCompletion, ThreadCompletion
from ._config import PluginConfig
from ._errors import (
    Cancelled,
    HandlerError,
    InitializationFailed,
    InvalidState,
    PluginError,
    ShutdownFailed,
    Timeout,
    UnknownMessageType,
    describe_exception,
)
from ._levels import LogLevel
from ._lifecycle import Lifecycle, LifecycleState
from ._logrouting import InstanceLogRouter
from ._logsink import LogSink, attributed_instance
from ._loopthread import LoopThread
from ._namespace import PluginNamespace
from ._plugin import Plugin, PluginContext
from ._routes import PLAIN_TYPES, Route, RouteTable
from ._sources import PythonSource
from ._threadpool import DaemonThreadPool
from ._transport import PluginMetadata, Release, Transport

DRAIN_SHARE = 0.75
"""Share of the shutdown timeout given to calls in flight; the rest is for ``on_stop``."""

Encode = Callable[[Any], Any]


def default_worker_threads() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


class InProcessTransport(Transport):
    """One Python plugin instance in this process. Build it with ``start``."""

    def __init__(self, source: PythonSource, config: PluginConfig, sink: LogSink) -> None:
        self._config = config
        self._sink = sink
        self._lifecycle = Lifecycle()
        self._namespace = PluginNamespace(source)
        self._router = InstanceLogRouter(self._namespace, sink.instance_log(), sink.level)
        self._context = contextvars.Context()
        self._context.run(attributed_instance.set, self._router)
        self._plugin: Plugin | None = None
        self._routes: RouteTable | None = None
        self._get_route: Callable[[str], Route | None] = _no_route
        self._ctx: PluginContext | None = None
        self._loop: LoopThread | None = None
        self._pool: DaemonThreadPool | None = None
        self._inflight: list[None] = []
        self._pending: set[Completion] = set()
        self._accepting = False
        self._cancelled = False
        self.metadata = PluginMetadata(source.module, "", ())

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls, source: PythonSource, config: PluginConfig, sink: LogSink, deadline: float | None
    ) -> InProcessTransport:
        """Import, construct and start a fresh instance; ``InitializationFailed`` if not."""
        transport = cls(source, config, sink)
        transport._start(deadline)
        return transport

    def _start(self, deadline: float | None) -> None:
        self._lifecycle.move(LifecycleState.STARTING)
        try:
            token = attributed_instance.set(self._router)  # module code is the plugin's
            try:
                plugin_class = self._namespace.load()
                try:
                    plugin = plugin_class()
                    routes = RouteTable(plugin)
                except InitializationFailed:
                    raise
                except BaseException as exc:
                    raise InitializationFailed(
                        f"cannot create plugin {plugin_class.__qualname__}: "
                        f"{describe_exception(exc)}"
                    ) from None
            finally:
                attributed_instance.reset(token)
            name = str(plugin_class.name or self._namespace.source.module)
            self._sink.name_plugin(name)
            self.metadata = PluginMetadata(name, str(plugin_class.version), routes.type_tags)
            self._plugin, self._routes = plugin, routes
            self._get_route = routes.get if routes.raw else routes.routes.get
            self._ctx = PluginContext(
                self._config, self._router.context_logger(name), self._lifecycle
            )
            threads = self._config.worker_threads or default_worker_threads()
            number = self._namespace.name.rpartition("_")[2]
            self._pool = DaemonThreadPool(threads, f"plugbridge-{name}-{number}-sync")
            self._loop = LoopThread(f"plugbridge-{name}-{number}", self._context, threads)
            try:
                self._run_hook("on_start", deadline)
            except TimeoutError:
                raise InitializationFailed(f"{name}.on_start did not finish in time") from None
            except BaseException as exc:
                raise InitializationFailed(
                    f"{name}.on_start raised {describe_exception(exc)}"
                ) from None
        except BaseException:
            self._lifecycle.try_move(LifecycleState.FAILED)
            self._teardown(time.monotonic() + self._config.shutdown_timeout)
            raise
        self._accepting = True
        self._lifecycle.move(LifecycleState.ACTIVE)

    def _run_hook(self, name: str, deadline: float | None) -> None:
        assert self._loop is not None and self._plugin is not None
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
        self._router.set_level(level)

    def shutdown(self, timeout: float) -> None:
        if not self._lifecycle.try_move(LifecycleState.STOPPING):
            return  # already stopping or stopped: idempotent
        self._accepting = False
        start = time.monotonic()
        deadline = start + timeout
        if not self._drain(start + timeout * DRAIN_SHARE):
            self._cancel_inflight()
        problems: list[str] = []
        try:
            self._run_hook("on_stop", deadline)
        except TimeoutError:
            problems.append(f"on_stop did not finish within the shutdown timeout ({timeout}s)")
        except BaseException as exc:
            problems.append(f"on_stop raised {describe_exception(exc)}")
        self._teardown(deadline)
        if problems:
            self._lifecycle.move(LifecycleState.FAILED)
            raise ShutdownFailed(f"plugin {self.metadata.name!r}: {'; '.join(problems)}")
        self._lifecycle.move(LifecycleState.STOPPED)

    def _drain(self, deadline: float) -> bool:
        pause = 0.0005
        while self._inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.01)
        return True

    def _cancel_inflight(self) -> None:
        self._cancelled = True
        for completion in list(self._pending):
            completion.settle(None, Cancelled("call cancelled: the plugin is shutting down"))
        if self._loop is not None:
            self._loop.call_soon(_cancel_tasks, list(self._pending))

    def _teardown(self, deadline: float) -> list[str]:
        """Release everything the instance holds; say what had to be abandoned."""
        leftovers: list[str] = []
        if self._loop is not None and not self._loop.stop(deadline):
            leftovers.append("its event loop thread did not stop in time and was abandoned")
        if self._pool is not None and not self._pool.shutdown(deadline):
            leftovers.append("a sync handler thread still running was abandoned")
        if leftovers:
            self._router.log.emit(
                LogLevel.WARN,
                "plugbridge",
                f"plugin {self.metadata.name!r}: {'; '.join(leftovers)}",
            )
        self._router.close()
        self._namespace.unload()
        self._get_route = _no_route
        if self._routes is not None:
            self._routes.clear()
        self._plugin = None
        self._pending.clear()
        return leftovers

    # -- calls -------------------------------------------------------------------------

    def _refusal(self, type_tag: object) -> PluginError:
        if not self._accepting:
            return InvalidState(
                f"plugin {self.metadata.name!r} is {self._lifecycle.state.name}; calls need ACTIVE"
            )
        if type(type_tag) is not str:
            return UnknownMessageType(f"type_tag must be a str, not {type(type_tag).__name__}")
        return UnknownMessageType(f"plugin {self.metadata.name!r} has no handler for {type_tag!r}")

    def _admit(self, type_tag: str, release: Release) -> Route:
        """Admit a call (counted in flight) or raise with everything released."""
        self._inflight.append(None)
        try:
            route = self._get_route(type_tag) if self._accepting else None
        except TypeError:  # an unhashable type tag
            route = None
        if route is None:
            self._leave(release)
            raise self._refusal(type_tag)
        return route

    def _leave(self, release: Release) -> None:
        self._inflight.pop()
        release()

    def _run_inline(self, route: Route, value: Any, release: Release) -> Any:
        """Run a sync handler on the caller's thread, attributed to this instance."""
        token = attributed_instance.set(self._router)
        try:
            result = route.method(self._ctx, value)
        except (PluginError, KeyboardInterrupt):
            raise
        except BaseException as exc:
            raise HandlerError(describe_exception(exc)) from exc
        finally:
            attributed_instance.reset(token)
            self._inflight.pop()
            release()
        if self._cancelled:
            raise Cancelled("call cancelled: the plugin shut down while it ran")
        return result

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        route = self._admit(type_tag, release)
        try:
            if route.convert_to is not None and type(request) in PLAIN_TYPES:
                value = msgspec.convert(request, route.convert_to)
            else:
                value = route.request_from_object(request)
        except msgspec.ValidationError as exc:
            self._leave(release)
            raise route.invalid_request(exc) from None
        except BaseException:
            self._leave(release)
            raise
        if timeout is not None or route.is_async:
            return self._wait(route, value, timeout, release, route.response_to_object)
        result = self._run_inline(route, value, release)
        try:
            return route.to_object(result)
        except (TypeError, msgspec.EncodeError) as exc:
            raise route.invalid_response(exc) from None

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        route = self._admit(type_tag, release)
        try:
            value = route.request_from_json(payload)
        except BaseException:
            self._leave(release)
            raise
        if timeout is not None or route.is_async:
            data: bytes = self._wait(route, value, timeout, release, route.response_to_json)
            return data
        result = self._run_inline(route, value, release)
        try:
            return route.to_json(result)
        except (TypeError, msgspec.EncodeError) as exc:
            raise route.invalid_response(exc) from None

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        route = self._admit(type_tag, release)
        try:
            value = route.request_from_object(request)
            completion = LoopCompletion(asyncio.get_running_loop())
        except BaseException:
            self._leave(release)
            raise
        self._hand_off(route, value, completion, release, route.response_to_object)
        try:
            settled = await completion.wait(timeout)
        except asyncio.CancelledError:
            self._give_up(completion, Cancelled("call cancelled by the caller"))
            raise
        if not settled and not self._give_up(completion, _timeout_error(route, timeout)):
            await completion.wait(None)
        return completion.outcome()

    def _wait(
        self, route: Route, value: Any, timeout: float | None, release: Release, encode: Encode
    ) -> Any:
        """Run the call off the caller's thread and block for it, at most ``timeout``."""
        completion = ThreadCompletion()
        self._hand_off(route, value, completion, release, encode)
        if not completion.wait(timeout) and not self._give_up(
            completion, _timeout_error(route, timeout)
        ):
            completion.wait(None)
        return completion.outcome()

    def _give_up(self, completion: Completion, error: PluginError) -> bool:
        """Settle a call the caller no longer waits for; cancel its task if it has one."""
        if not completion.settle(None, error):
            return False
        task = completion.task
        if task is not None and self._loop is not None:
            self._loop.loop.call_soon_threadsafe(task.cancel)
        return True

    def _hand_off(
        self, route: Route, value: Any, completion: Completion, release: Release, encode: Encode
    ) -> None:
        """Start the call on the instance's loop (async) or pool (sync)."""
        assert self._loop is not None
        assert self._pool is not None
        self._pending.add(completion)
        if route.is_async:
            self._loop.call_soon(self._start_task, route, value, completion, release, encode)
            return
        try:
            self._pool.submit(lambda: self._run_pooled(route, value, completion, release, encode))
        except RuntimeError:
            self._pending.discard(completion)
            self._leave(release)
            completion.settle(None, InvalidState("plugin is shutting down"))

    def _run_pooled(
        self, route: Route, value: Any, completion: Completion, release: Release, encode: Encode
    ) -> None:
        token = attributed_instance.set(self._router)
        try:
            completion.settle(encode(route.method(self._ctx, value)), None)
        except PluginError as exc:
            completion.settle(None, exc)
        except BaseException as exc:
            completion.settle(None, HandlerError(describe_exception(exc)))
        finally:
            attributed_instance.reset(token)
            self._pending.discard(completion)
            self._leave(release)

    def _start_task(
        self, route: Route, value: Any, completion: Completion, release: Release, encode: Encode
    ) -> None:
        """On the loop thread: run an async handler as a task of the instance's loop."""
        assert self._loop is not None
        coro = self._run_async(route, value, completion, release, encode)
        completion.task = start_task(self._loop.loop, coro)

    async def _run_async(
        self, route: Route, value: Any, completion: Completion, release: Release, encode: Encode
    ) -> None:
        """The task body: settles the completion itself (no extra loop iteration)."""
        try:
            if completion.settled:  # the caller gave up before the task could start
                return
            completion.settle(encode(await route.method(self._ctx, value)), None)
        except asyncio.CancelledError:
            completion.settle(None, Cancelled("call cancelled: the plugin is shutting down"))
            raise
        except PluginError as exc:
            completion.settle(None, exc)
        except BaseException as exc:
            completion.settle(None, HandlerError(describe_exception(exc)))
        finally:
            self._pending.discard(completion)
            self._leave(release)


if sys.version_info >= (3, 12):

    def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> Any:
        """Run the first step at once, as 3.12's eager tasks do: one loop iteration saved."""
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]

else:

    def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> Any:
        return loop.create_task(coro)


def _no_route(type_tag: str) -> Route | None:
    return None


def _cancel_tasks(completions: list[Completion]) -> None:
    for completion in completions:
        task = completion.task
        if isinstance(task, asyncio.Task):
            task.cancel()


def _timeout_error(route: Route, timeout: float | None) -> Timeout:
    return Timeout(f"call {route.type_tag!r} exceeded its timeout of {timeout}s")
