"""Reload: fresh code from disk, no failed call, rollback on a bad edit, packages and helpers."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import LogCapture

VERSIONED = """
    from plugbridge import Plugin, handler
    COUNTER = []

    class Versioned(Plugin):
        name = "versioned"
        version = "{v}.0.0"

        @handler("version")
        def version_tag(self, ctx, req):
            COUNTER.append(1)
            return {{"v": {v}, "calls": len(COUNTER)}}
"""


def test_reload_picks_up_the_file_as_it_is_now(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    path = write_plugin(VERSIONED.format(v=1))
    with plugbridge.load(path, isolation=isolation) as plugin:
        assert plugin.call("version") == {"v": 1, "calls": 1}
        assert plugin.call("version") == {"v": 1, "calls": 2}
        write_plugin(VERSIONED.format(v=2))
        plugin.reload()
        assert plugin.metadata.version == "2.0.0"
        assert plugin.call("version") == {"v": 2, "calls": 1}  # fresh module globals
        assert plugin.state is plugbridge.LifecycleState.ACTIVE


def test_same_second_same_size_edits_are_seen(
    write_plugin: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bytecode writing on: the default loader's mtime+size check would serve stale code.
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = write_plugin(VERSIONED.format(v=1))
    stat = path.stat()
    with plugbridge.load(path) as plugin:
        for v in range(2, 10):  # single digit: every edit keeps the file size
            write_plugin(VERSIONED.format(v=v))
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime too
            assert path.stat().st_size == stat.st_size
            plugin.reload()
            assert plugin.call("version")["v"] == v


def test_bad_edit_keeps_the_old_instance(write_plugin: Callable[..., Path], isolation: str) -> None:
    path = write_plugin(VERSIONED.format(v=1))
    with plugbridge.load(path, isolation=isolation) as plugin:
        write_plugin("this is not python")
        with pytest.raises(plugbridge.InitializationFailed):
            plugin.reload()
        assert plugin.call("version")["v"] == 1
        write_plugin(
            """
            from plugbridge import Plugin
            class P(Plugin):
                async def on_start(self, ctx):
                    raise RuntimeError("new code fails to start")
            """
        )
        with pytest.raises(plugbridge.InitializationFailed, match="new code fails"):
            plugin.reload()
        assert plugin.call("version")["v"] == 1
        assert plugin.state is plugbridge.LifecycleState.ACTIVE


def test_reload_under_load_fails_no_call(write_plugin: Callable[..., Path], isolation: str) -> None:
    path = write_plugin(VERSIONED.format(v=1))
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    with plugbridge.load(path, isolation=isolation) as plugin:

        def caller() -> None:
            while not stop.is_set():
                try:
                    seen.add(plugin.call("version")["v"])
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for v in range(2, 8):
                time.sleep(0.05)
                write_plugin(VERSIONED.format(v=v))
                plugin.reload()
            time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert errors == []
    assert 7 in seen and len(seen) >= 3


def test_reload_lets_old_calls_finish(write_plugin: Callable[..., Path], isolation: str) -> None:
    path = write_plugin(
        """
        import asyncio
        from plugbridge import Plugin, handler
        class Slow(Plugin):
            @handler("slow")
            async def slow(self, ctx, req):
                await asyncio.sleep(0.3)
                return "old"
        """
    )
    with plugbridge.load(path, isolation=isolation) as plugin:
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(plugin.call("slow")))
        t.start()
        time.sleep(0.1)
        plugin.reload()
        t.join()
        assert result == ["old"]


def test_old_instance_failing_to_stop_warns(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    path = write_plugin(
        """
        from plugbridge import Plugin, handler
        class P(Plugin):
            name = "stubborn"
            async def on_stop(self, ctx):
                raise RuntimeError("refuse to stop")
            @handler("ping")
            def ping(self, ctx, req):
                return "pong"
        """
    )
    capture = LogCapture()
    plugin = plugbridge.load(path, log_callback=capture, isolation=isolation)
    plugin.reload()
    assert plugin.call("ping") == "pong"
    warnings = [(t, m) for lvl, t, m in capture.records if lvl == LogLevel.WARN]
    assert any("refuse to stop" in m for _, m in warnings), capture.records
    with pytest.raises(plugbridge.ShutdownFailed):
        plugin.shutdown()


def test_level_and_callback_survive_reload(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    path = write_plugin(
        """
        import logging
        from plugbridge import Plugin, handler
        log = logging.getLogger(__name__)
        class P(Plugin):
            @handler("log")
            def log_it(self, ctx, req):
                log.debug("debug %s", req)
                log.info("info %s", req)
        """,
        name="lvl.py",
    )
    capture = LogCapture()
    with plugbridge.load(path, log_callback=capture, isolation=isolation) as plugin:
        plugin.set_log_level("debug")
        plugin.reload()
        plugin.call("log", "after")
        plugin.set_log_level("info")
        plugin.call("log", "later")
    assert [m for m in capture.messages() if "after" in m or "later" in m] == [
        "debug after",
        "info after",
        "info later",
    ]


PACKAGE_INIT = """
    from plugbridge import Plugin, handler
    from . import helpers
    from .sub.deep import depth

    class PkgPlugin(Plugin):
        name = "pkgplug"

        @handler("info")
        def info(self, ctx, req):
            helpers.say("hello from helper")
            package = __package__.rpartition(".")[2]
            return {"helper": helpers.VALUE, "depth": depth(), "pkg": package}
"""
HELPERS = """
    import logging
    log = logging.getLogger(__name__)
    VALUE = {v}
    def say(text):
        log.warning(text)
"""


def make_package(root: Path, value: int) -> Path:
    pkg = root / "pkgplug"
    (pkg / "sub").mkdir(parents=True, exist_ok=True)
    import textwrap

    (pkg / "__init__.py").write_text(textwrap.dedent(PACKAGE_INIT))
    (pkg / "helpers.py").write_text(textwrap.dedent(HELPERS.format(v=value)))
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text(
        "from .. import helpers\ndef depth():\n    return helpers.VALUE * 10\n"
    )
    return pkg


def test_package_plugin_with_helpers(tmp_path: Path, isolation: str) -> None:
    pkg = make_package(tmp_path, 1)
    capture = LogCapture()
    with plugbridge.load(pkg, log_callback=capture, isolation=isolation) as plugin:
        assert plugin.call("info") == {"helper": 1, "depth": 10, "pkg": "pkgplug"}
        assert (LogLevel.WARN, "pkgplug.helpers", "hello from helper") in capture.records
        make_package(tmp_path, 2)  # edit a helper module only
        plugin.reload()
        assert plugin.call("info") == {"helper": 2, "depth": 20, "pkg": "pkgplug"}


def test_importable_module_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    make_package(tmp_path, 3)
    (tmp_path / "pkgplug" / "extra.py").write_text(
        "from plugbridge import Plugin, handler\n"
        "class A(Plugin):\n    name = 'a'\n"
        "class B(Plugin):\n    name = 'b'\n"
        "    @handler('who')\n    def who(self, ctx, req):\n        return 'b'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # for a worker process
    with plugbridge.load("pkgplug", isolation=isolation) as plugin:
        assert plugin.call("info")["helper"] == 3
    with plugbridge.load("pkgplug.extra:B", isolation=isolation) as plugin:
        assert plugin.call("who") == "b"
    with pytest.raises(plugbridge.InitializationFailed, match="several"):
        plugbridge.load("pkgplug.extra", isolation=isolation)
    with pytest.raises(plugbridge.InitializationFailed, match=r"not a plugbridge\.Plugin"):
        plugbridge.load("pkgplug.extra:Missing", isolation=isolation)
    assert "pkgplug" not in sys.modules  # the host's own import namespace stays clean


def test_two_instances_do_not_share_module_globals(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    path = write_plugin(VERSIONED.format(v=1))
    with (
        plugbridge.load(path, isolation=isolation) as a,
        plugbridge.load(path, isolation=isolation) as b,
    ):
        assert [a.call("version")["calls"] for _ in range(3)] == [1, 2, 3]
        assert b.call("version")["calls"] == 1
        b.shutdown()
        assert a.call("version")["calls"] == 4
