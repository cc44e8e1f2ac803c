"""Hardening (issue 7): odd inputs, hostile callbacks and odd file names get one clear answer.

Every test here runs once per isolation mode (the ``isolation`` fixture) unless it says why
it is in-process only.
"""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import plugbridge

from ..conftest import LogCapture, wait_until

DEEP = 100_000
UTF8 = re.compile("utf-8", re.IGNORECASE)

DEEP_PLUGIN = """
    from __future__ import annotations
    import msgspec
    from plugbridge import Plugin, handler

    class Node(msgspec.Struct):
        child: Node | None = None

    class Deep(Plugin):
        name = "deep"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("aecho")
        async def aecho(self, ctx, req):
            return req

        @handler("typed")
        def typed(self, ctx, req: Node) -> int:
            return 1

        @handler("make")
        def make(self, ctx, depth):
            value = None
            for _ in range(depth):
                value = [value]
            return value

        @handler("amake")
        async def amake(self, ctx, depth):
            value = None
            for _ in range(depth):
                value = [value]
            return value
"""

RAW_PLUGIN = """
    from plugbridge import Plugin

    class Raw(Plugin):
        name = "raw"

        def handle_request(self, ctx, type_tag, payload):
            if type_tag == "latin1":
                return b'{"name": "caf\\xe9"}'
            if type_tag == "surrogate":
                return b'["\\xed\\xa0\\x80"]'
            if type_tag == "deep":
                return b"[" * 100_000 + b"]" * 100_000
            return payload
"""


def deep_list(depth: int = DEEP) -> object:
    value: object = None
    for _ in range(depth):
        value = [value]
    return value


def assert_serves(plugin: plugbridge.PluginHandle, tag: str, request: object = 1) -> None:
    """Nothing was left behind: no slot, no gate entry, and the next call is answered."""
    assert plugin.in_flight == 0
    assert plugin.call(tag, request) == request


@pytest.fixture
def deep(write_plugin: Callable[..., Path], isolation: str) -> Iterator[plugbridge.PluginHandle]:
    plugin = plugbridge.load(
        write_plugin(DEEP_PLUGIN, "deep_plugin.py"),
        isolation=isolation,
        config={"max_concurrent_ops": 4},
    )
    yield plugin
    plugin.shutdown()


@pytest.fixture
def raw(write_plugin: Callable[..., Path], isolation: str) -> Iterator[plugbridge.PluginHandle]:
    plugin = plugbridge.load(write_plugin(RAW_PLUGIN, "raw_plugin.py"), isolation=isolation)
    yield plugin
    plugin.shutdown()


# -- defect 4: values nested too deeply ------------------------------------------------


@pytest.mark.parametrize("tag", ["echo", "aecho"])
@pytest.mark.parametrize("timeout", [None, 30.0])
def test_deep_request_is_a_serialization_error(
    deep: plugbridge.PluginHandle, tag: str, timeout: float | None
) -> None:
    value = deep_list()
    for _ in range(6):  # more times than there are slots: none may leak
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call(tag, value, timeout=timeout)
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call_json(tag, "[" * DEEP + "]" * DEEP, timeout=timeout)
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            asyncio.run(deep.acall(tag, value, timeout=timeout))
    assert_serves(deep, tag)


def test_deep_request_for_a_typed_handler(deep: plugbridge.PluginHandle) -> None:
    value: object = None
    for _ in range(DEEP):
        value = {"child": value}
    for timeout in (None, 30.0):
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call_json("typed", '{"child":' * DEEP + "null" + "}" * DEEP, timeout=timeout)
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call("typed", value, timeout=timeout)
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            asyncio.run(deep.acall("typed", value, timeout=timeout))
    assert deep.call("typed", {"child": {}}) == 1
    assert deep.in_flight == 0


@pytest.mark.parametrize("tag", ["make", "amake"])
def test_deep_response_is_a_serialization_error(deep: plugbridge.PluginHandle, tag: str) -> None:
    for _ in range(6):
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call(tag, DEEP)
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call(tag, DEEP, timeout=30)
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            deep.call_json(tag, str(DEEP))
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            asyncio.run(deep.acall(tag, DEEP))
    assert deep.call(tag, 2) == [[None]]
    assert_serves(deep, "echo")


def test_deep_raw_response_is_a_serialization_error(raw: plugbridge.PluginHandle) -> None:
    for _ in range(3):
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            raw.call("deep")
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            raw.call_json("deep", "1")
    assert_serves(raw, "echo", {"a": 1})


# -- defect 5: invalid UTF-8 inside JSON strings -----------------------------------------


@pytest.mark.parametrize("payload", [b'{"a": "\xff"}', b'["caf\xe9"]', b'"\xed\xa0\x80"'])
def test_call_json_request_with_invalid_utf8(deep: plugbridge.PluginHandle, payload: bytes) -> None:
    for tag in ("echo", "aecho"):
        with pytest.raises(plugbridge.SerializationError, match=UTF8):
            deep.call_json(tag, payload)
        with pytest.raises(plugbridge.SerializationError, match=UTF8):
            deep.call_json(tag, payload, timeout=30)
    assert_serves(deep, "echo")


@pytest.mark.parametrize("tag", ["latin1", "surrogate"])
def test_raw_response_with_invalid_utf8(raw: plugbridge.PluginHandle, tag: str) -> None:
    for _ in range(3):
        with pytest.raises(plugbridge.SerializationError, match=UTF8):
            raw.call(tag)
        with pytest.raises(plugbridge.SerializationError, match=UTF8):
            raw.call_json(tag, "1")
        with pytest.raises(plugbridge.SerializationError, match=UTF8):
            asyncio.run(raw.acall(tag))
    assert_serves(raw, "echo", "ok")


def test_raw_request_with_invalid_utf8_echoed(raw: plugbridge.PluginHandle) -> None:
    with pytest.raises(plugbridge.SerializationError, match=UTF8):
        raw.call_json("echo", b'["\xff"]')
    assert raw.in_flight == 0


# -- defect 8: a log callback raising SystemExit or KeyboardInterrupt ---------------------

CHATTY = """
    import asyncio, logging
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class Chatty(Plugin):
        name = "chatty"

        @handler("say")
        def say(self, ctx, n):
            for i in range(n):
                log.warning("record %d", i)
            return "done"

        @handler("asay")
        async def asay(self, ctx, n):
            for i in range(n):
                log.warning("record %d", i)
                await asyncio.sleep(0)
            return "done"
"""


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_callback_raising_base_exceptions_breaks_nothing(
    write_plugin: Callable[..., Path],
    isolation: str,
    exc_type: type[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def callback(level: object, target: str, message: str) -> None:
        seen.append(message)
        raise exc_type("the callback gives up")

    source = write_plugin(CHATTY, "chatty_plugin.py")
    with (
        caplog.at_level("ERROR", logger="plugbridge"),
        plugbridge.load(source, log_callback=callback, isolation=isolation) as plugin,
    ):
        assert plugin.call("say", 3) == "done"
        assert plugin.call("say", 2, timeout=30) == "done"
        assert asyncio.run(plugin.acall("asay", 2)) == "done"
        assert plugin.call("asay", 1) == "done"
        assert plugin.in_flight == 0
    assert seen == [f"record {i}" for i in (0, 1, 2, 0, 1, 0, 1, 0)]  # none lost
    reports = [r for r in caplog.records if "log callback raised" in r.getMessage()]
    assert len(reports) == 1, reports  # reported once


# -- defect 9: dotted file names are Python plugins ----------------------------------------

DOTTED = """
    import logging
    from plugbridge import Plugin, handler
    from .dotted_helper import twice

    log = logging.getLogger(__name__)

    class Dotted(Plugin):
        @handler("twice")
        def run(self, ctx, n):
            log.warning("twice %d", n)
            return twice(n)
"""


@pytest.mark.parametrize("name", ["hello.v2.py", "weird.so.py", "a.b.c.py", "lib.so.1.py"])
def test_dotted_file_names_load_as_python_plugins(
    write_plugin: Callable[..., Path], isolation: str, name: str, capture: LogCapture
) -> None:
    write_plugin("def twice(n):\n    return 2 * n\n", "dotted_helper.py")
    source = write_plugin(DOTTED, name)
    stem = name.removesuffix(".py")
    with plugbridge.load(source, log_callback=capture, isolation=isolation) as plugin:
        assert plugin.metadata.name == stem
        assert plugin.call("twice", 21) == 42
        assert plugin.call_json("twice", "2") == "4"
        assert asyncio.run(plugin.acall("twice", 3)) == 6
        plugin.reload()
        assert plugin.call("twice", 1) == 2
    assert capture.targets()[:1] == [stem]  # the name the author gave the file
    assert not [m for m in sys.modules if m.startswith("_plugbridge_")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import no_such_module_xyz", "no_such_module_xyz"),
        ("from . import no_such_helper_xyz", "no_such_helper_xyz"),
        ("from .no_such_helper_xyz import thing", "no_such_helper_xyz"),
        ("raise ValueError('boom at import')", "boom at import"),
        ("x = 1", "no plugbridge.Plugin subclass"),
    ],
)
def test_dotted_file_errors_name_no_internal_module(
    write_plugin: Callable[..., Path], isolation: str, body: str, expected: str
) -> None:
    source = write_plugin(body, "broken.v3.py")
    with pytest.raises(plugbridge.InitializationFailed) as info:
        plugbridge.load(source, isolation=isolation)
    assert expected in info.value.message
    assert "_plugbridge_" not in info.value.message
    assert "broken.v3" in info.value.message
    assert not [m for m in sys.modules if m.startswith("_plugbridge_")]


# -- defect 10: durations in messages -------------------------------------------------------

HANGS_ON_STOP = """
    import asyncio
    from plugbridge import Plugin, handler

    class HangsOnStop(Plugin):
        name = "hangs_on_stop"

        async def on_stop(self, ctx):
            await asyncio.sleep(60)

        @handler("x")
        def x(self, ctx, req):
            return 1
"""

NOISE = re.compile(r"\d\.\d{5,}s")
"""A duration printed with five decimals or more: float noise (``seconds()`` keeps four
significant digits)."""


def test_shutdown_failed_prints_durations_without_float_noise(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    source = write_plugin(HANGS_ON_STOP, "hangs_on_stop.py")
    plugin = plugbridge.load(source, isolation=isolation)
    with pytest.raises(plugbridge.ShutdownFailed) as info:
        plugin.shutdown(timeout=0.1 + 0.2)  # 0.30000000000000004
    assert re.search(r"\(0\.\d{1,3}s\)", info.value.message), info.value.message
    assert not NOISE.search(info.value.message), info.value.message


def test_reload_warning_prints_durations_without_float_noise(
    write_plugin: Callable[..., Path], isolation: str, capture: LogCapture
) -> None:
    source = write_plugin(HANGS_ON_STOP, "hangs_on_stop.py")
    plugin = plugbridge.load(source, isolation=isolation, log_callback=capture)
    # The old instance is stopped with what is left of the timeout. A Ray actor takes
    # ~0.6 s to start on a quiet machine, and a new Ray worker process several seconds on
    # busy cores.
    plugin.reload(timeout=10.0 if isolation == "ray" else 1.5)
    warnings = [m for m in capture.messages() if "failed to stop" in m]
    assert len(warnings) == 1, capture.messages()
    assert not NOISE.search(warnings[0]), warnings[0]
    with pytest.raises(plugbridge.ShutdownFailed):  # the new instance hangs too
        plugin.shutdown(timeout=0.2)


# -- defect 17: event loops that awaited acall are not kept alive ---------------------------


def test_caller_event_loops_are_not_kept_alive(
    deep: plugbridge.PluginHandle, isolation: str
) -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one(i: int) -> object:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await deep.acall("echo" if i % 2 else "aecho", i)

    assert [asyncio.run(one(i)) for i in range(300)] == list(range(300))
    gc.collect()
    alive = [ref for ref in loops if ref() is not None]
    assert alive == []
    assert asyncio.run(one(7)) == 7  # a new loop after the old ones are gone


# -- defect 13: hung asyncio.to_thread work never keeps the host from exiting ---------------

TO_THREAD_HANGS = """
    import asyncio, time
    from plugbridge import Plugin, handler

    class Blocks(Plugin):
        name = "blocks"

        @handler("hang")
        async def hang(self, ctx, req):
            await asyncio.to_thread(time.sleep, 3600)

        @handler("ok")
        async def ok(self, ctx, req):
            return await asyncio.to_thread(lambda: req)
"""

HOST = """
    import sys
    import plugbridge

    plugin = plugbridge.load(sys.argv[1], isolation=sys.argv[2], config={"shutdown_timeout": 1})
    assert plugin.call("ok", 5) == 5
    try:
        plugin.call("hang", timeout=0.5)
    except plugbridge.Timeout:
        pass
    plugin.shutdown()
    print("shut down", plugin.state.name, flush=True)
"""


def test_hung_to_thread_work_never_keeps_the_host_alive(
    write_plugin: Callable[..., Path], isolation: str, tmp_path: Path
) -> None:
    source = write_plugin(TO_THREAD_HANGS, "to_thread_hangs.py")
    host = write_plugin(HOST, "host_script.py", where=tmp_path / "host")
    try:
        done = subprocess.run(
            [sys.executable, str(host), str(source), isolation],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,  # the work hangs for an hour: only an exit that waits for it is late
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the host did not exit after shutdown() returned: {exc.stdout!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "shut down STOPPED"


# -- defects 15, 16: the start deadline, and a failed start torn down within it --------------

HANGS_ON_START = """
    import asyncio, os, time
    from plugbridge import Plugin, handler

    RELEASE = {release!r}

    class HangsOnStart(Plugin):
        name = "hangs_on_start"

        {prefix}def on_start(self, ctx):
            end = time.monotonic() + 120
            while not os.path.exists(RELEASE) and time.monotonic() < end:
                {pause}

        @handler("x")
        def x(self, ctx, req):
            return "new"
"""

PAUSES = {"sync": ("", "time.sleep(0.01)"), "async": ("async ", "await asyncio.sleep(0.01)")}


def hangs_on_start(tmp_path: Path, hook: str) -> tuple[str, Path]:
    release = tmp_path / "release-the-hook"
    prefix, pause = PAUSES[hook]
    return textwrap.dedent(HANGS_ON_START).format(
        release=str(release), prefix=prefix, pause=pause
    ), release


def instance_threads(name: str = "hangs_on_start") -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"plugbridge-{name}-")]


@pytest.mark.parametrize("hook", ["sync", "async"])
def test_a_hung_on_start_fails_the_load_at_the_start_deadline(
    tmp_path: Path, isolation: str, hook: str
) -> None:
    code, release = hangs_on_start(tmp_path, hook)
    source = tmp_path / "hangs_on_start.py"
    source.write_text(code)
    # A worker must be spawned and import the plugin before on_start runs: on a loaded
    # machine that alone can take longer than half a second, and the failure would then
    # (rightly) name the import, not on_start. A Ray actor is a new Ray worker process
    # (importing Ray: ~1.5 s of CPU), several seconds on busy cores.
    limit = {"inprocess": 0.5, "process": 5.0}.get(isolation, 12.0)
    started = time.monotonic()
    try:
        with pytest.raises(plugbridge.InitializationFailed) as info:
            plugbridge.load(
                source,
                config={"start_timeout": limit, "shutdown_timeout": 60},
                isolation=isolation,
            )
        elapsed = time.monotonic() - started
        expected = f"on_start did not finish within the start timeout ({limit:g}s)"
        assert expected in info.value.message
        assert elapsed < 20, elapsed  # not 60 s of shutdown timeout on top (defect 16)
        assert not [m for m in sys.modules if m.startswith("_plugbridge_")]
        assert all(t.daemon for t in instance_threads())  # abandoned, never waited for
    finally:
        release.touch()
    assert wait_until(lambda: instance_threads() == [], timeout=10)


@pytest.mark.parametrize("hook", ["sync", "async"])
def test_reload_with_a_hung_on_start_is_bounded_by_its_timeout(
    tmp_path: Path, isolation: str, hook: str
) -> None:
    source = tmp_path / "reloaded.py"
    source.write_text(
        "from plugbridge import Plugin, handler\n\n"
        "class Old(Plugin):\n    name = 'hangs_on_start'\n\n"
        "    @handler('x')\n    def x(self, ctx, req):\n        return 'old'\n"
    )
    code, release = hangs_on_start(tmp_path, hook)
    plugin = plugbridge.load(source, config={"shutdown_timeout": 60}, isolation=isolation)
    try:
        source.write_text(code)
        started = time.monotonic()
        with pytest.raises(plugbridge.InitializationFailed, match=r"start timeout \(1s\)"):
            plugin.reload(timeout=1)
        assert time.monotonic() - started < 20  # not the 60 s shutdown timeout (defect 16)
        assert plugin.call("x") == "old"  # the old instance keeps serving
    finally:
        release.touch()
        plugin.shutdown()
    assert wait_until(lambda: instance_threads() == [], timeout=10)


# -- absolute self-imports inside a package plugin resolve to the instance's own copy --------

SELF_IMPORTING_INIT = """
    import pkgplug.helpers
    import pkgplug.sub.deep as deep
    from pkgplug import helpers as same_helpers
    from pkgplug.helpers import bump
    from plugbridge import Plugin, handler

    class SelfImporting(Plugin):
        name = "selfimporting"

        @handler("bump")
        def run(self, ctx, req):
            import pkgplug
            from pkgplug.sub import deep as again
            assert pkgplug.helpers is same_helpers and again is deep
            assert pkgplug.__name__.endswith(".pkgplug"), pkgplug.__name__
            name = pkgplug.helpers.__name__.partition(".")[2]  # without the namespace
            return {"count": bump(), "seen": deep.seen(), "name": name}
"""


def make_self_importing_package(root: Path) -> Path:
    package = root / "pkgplug"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(SELF_IMPORTING_INIT))
    (package / "helpers.py").write_text(
        "COUNT = 0\n\ndef bump():\n    global COUNT\n    COUNT += 1\n    return COUNT\n"
    )
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text(
        "import os, pkgplug.helpers as helpers, sys\nimport pkgplug.helpers\n\n"
        "def seen():\n    assert os.sep and sys.modules and helpers is pkgplug.helpers\n"
        "    return pkgplug.helpers.COUNT\n"
    )
    return package


@pytest.mark.parametrize("on_sys_path", [False, True])
def test_absolute_self_imports_resolve_to_the_instances_own_copy(
    tmp_path: Path, isolation: str, on_sys_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_self_importing_package(tmp_path)
    if on_sys_path:  # even when the host could import the package itself
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with (
        plugbridge.load(package, isolation=isolation) as first,
        plugbridge.load(package, isolation=isolation) as second,
    ):
        assert first.call("bump") == {"count": 1, "seen": 1, "name": "pkgplug.helpers"}
        assert first.call("bump")["count"] == 2
        assert second.call("bump") == {"count": 1, "seen": 1, "name": "pkgplug.helpers"}
        first.reload()
        assert first.call("bump")["count"] == 1  # a fresh copy
    assert not [m for m in sys.modules if m == "pkgplug" or m.startswith("pkgplug.")]
    assert not [m for m in sys.modules if m.startswith("_plugbridge_")]
