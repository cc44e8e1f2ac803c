"""Closing and loading again, any number of times, leaks nothing."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import plugbridge

from ..conftest import LogCapture, wait_until

LEAKY_LOOKING = """
    import asyncio, logging
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)
    SENTINEL = object()          # the test holds a weakref-able stand-in for module globals

    class Sentinel:
        pass

    GLOBAL_SENTINEL = Sentinel()

    class P(Plugin):
        name = "cycler"

        async def on_start(self, ctx):
            self.task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))

        @handler("echo")
        def echo(self, ctx, req):
            log.info("echo %s", req)
            return req

        @handler("aecho")
        async def aecho(self, ctx, req):
            return await asyncio.to_thread(lambda: req)
"""


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def namespace_modules() -> set[str]:
    return {m for m in sys.modules if m.startswith("_plugbridge_")}


def test_200_cycles_leak_nothing(write_plugin: Callable[..., Path]) -> None:
    path = write_plugin(LEAKY_LOOKING, name="cycler.py")
    # Warm up once so lazily created process-wide things (loggers, codecs) exist already.
    with plugbridge.load(path) as warm:
        warm.call("echo", 1, timeout=5)
        warm.call("aecho", 1)
    gc.collect()
    threads, fds = threading.active_count(), fd_count()
    modules = set(sys.modules)
    loggers = set(logging.Logger.manager.loggerDict)
    root_handlers = list(logging.getLogger().handlers)
    meta_path = list(sys.meta_path)

    module_refs: list[weakref.ref[object]] = []
    sentinel_refs: list[weakref.ref[object]] = []
    capture = LogCapture()
    for i in range(100):
        plugin = plugbridge.load(path, log_callback=capture)
        plugin.call("echo", i)
        plugin.call("echo", i, timeout=5)  # uses the sync worker pool
        plugin.call("aecho", i)  # uses the loop and to_thread
        module = sys.modules[plugin._transport._namespace.name + ".cycler"]  # type: ignore[attr-defined]
        module_refs.append(weakref.ref(module))
        sentinel_refs.append(weakref.ref(module.GLOBAL_SENTINEL))
        plugin.reload()  # second instance per cycle: 200 instances in all
        del module
        plugin.shutdown()
        del plugin

    gc.collect()
    assert wait_until(lambda: threading.active_count() == threads), threading.enumerate()
    assert fd_count() == fds
    assert set(sys.modules) == modules
    assert namespace_modules() == set()
    assert set(logging.Logger.manager.loggerDict) == loggers
    assert logging.getLogger().handlers == root_handlers
    assert sys.meta_path == meta_path
    assert all(ref() is None for ref in module_refs), "old plugin modules are still alive"
    assert all(ref() is None for ref in sentinel_refs), "old module globals are still alive"
    assert sum(m.startswith("echo") for m in capture.messages()) == 200
