"""isolation="process": faults a process boundary contains, with real workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import LifecycleState, LogLevel

from ..conftest import LogCapture, wait_until
from ..native.build import build_hello_c

FAULTY = """
    import asyncio, ctypes, os, sys, time
    from plugbridge import Plugin, handler

    class Faulty(Plugin):
        name = "faulty"

        @handler("pid")
        def pid(self, ctx, req):
            return os.getpid()

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("segfault")
        def segfault(self, ctx, req):
            ctypes.string_at(0)

        @handler("exit")
        def exit(self, ctx, req):
            os._exit(req)

        @handler("spin")
        def spin(self, ctx, req):
            end = time.monotonic() + req
            while time.monotonic() < end:
                pass
            return "spun"

        @handler("sleep")
        async def sleep(self, ctx, req):
            await asyncio.sleep(req)
            return "slept"

        @handler("print")
        def print_(self, ctx, req):
            print(req)
            print("err:" + req, file=sys.stderr)
            os.write(1, b"raw:" + req.encode() + b"\\n")

        @handler("write_channel")
        def write_channel(self, ctx, req):
            fd = int(sys.argv[sys.argv.index("--channel-fd") + 1])
            os.write(fd, bytes.fromhex(req["hex"]))
            if req.get("exit"):
                os._exit(0)
"""


@pytest.fixture
def faulty(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(FAULTY, name="faulty.py")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def crash_with(plugin: plugbridge.PluginHandle, tag: str, request: object = None) -> str:
    with pytest.raises(plugbridge.PluginCrashed) as info:
        plugin.call(tag, request)
    assert info.value.code == 14
    return info.value.message


@pytest.mark.parametrize(
    ("tag", "request_value", "named"),
    [("segfault", None, "SIGSEGV"), ("exit", 7, "exited with code 7")],
)
def test_worker_death_fails_calls_and_reload_recovers(
    faulty: Path, capture: LogCapture, tag: str, request_value: object, named: str
) -> None:
    with plugbridge.load(faulty, isolation="process", log_callback=capture) as plugin:
        old_pid = plugin.call("pid")
        message = crash_with(plugin, tag, request_value)
        assert named in message
        assert plugin.state is LifecycleState.FAILED
        assert any(level == LogLevel.ERROR and named in text for level, _, text in capture.records)
        assert named in crash_with(plugin, "echo", 1)  # later calls fail the same way
        assert not alive(old_pid)
        plugin.reload()
        assert plugin.state is LifecycleState.ACTIVE
        assert plugin.call("echo", "back") == "back"
        assert plugin.call("pid") != old_pid


def test_sigkill_from_outside_fails_calls_in_flight(faulty: Path) -> None:
    with plugbridge.load(faulty, isolation="process") as plugin:
        pid = plugin.call("pid")
        errors: list[BaseException] = []

        def waiting_call() -> None:
            try:
                plugin.call("sleep", 60)
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=waiting_call)
        caller.start()
        assert wait_until(lambda: plugin._transport._current._pending != {})  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        caller.join(10)
        assert not caller.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], plugbridge.PluginCrashed)
        assert "SIGKILL" in str(errors[0])
        assert plugin.state is LifecycleState.FAILED


def test_async_caller_sees_the_crash(faulty: Path) -> None:
    import asyncio

    with plugbridge.load(faulty, isolation="process") as plugin:

        async def main() -> str:
            with pytest.raises(plugbridge.PluginCrashed) as info:
                await plugin.acall("exit", 3)
            return info.value.message

        assert "exited with code 3" in asyncio.run(main())


def test_spinning_handler_times_out_and_keeps_its_slot(faulty: Path) -> None:
    config = {"max_concurrent_ops": 1}
    with plugbridge.load(faulty, config=config, isolation="process") as plugin:
        with pytest.raises(plugbridge.Timeout):
            plugin.call("spin", 1.0, timeout=0.1)
        with pytest.raises(plugbridge.TooManyRequests):
            plugin.call("echo", 1)  # the spinning handler still holds the only slot
        assert wait_until(lambda: _echo_ok(plugin), timeout=10)
        assert plugin.state is LifecycleState.ACTIVE


def _echo_ok(plugin: plugbridge.PluginHandle) -> bool:
    try:
        return bool(plugin.call("echo", 1) == 1)
    except plugbridge.TooManyRequests:
        return False


@pytest.mark.parametrize("hang", ["time.sleep(60)", "while True: pass"])
def test_hung_on_stop_is_ended_on_time(write_plugin: Callable[..., Path], hang: str) -> None:
    source = write_plugin(
        f"""
        import os, time
        from plugbridge import Plugin, handler

        class Hung(Plugin):
            name = "hung"
            def on_stop(self, ctx):
                {hang}

            @handler("pid")
            def pid(self, ctx, req):
                return os.getpid()
        """
    )
    plugin = plugbridge.load(source, config={"shutdown_timeout": 1.0}, isolation="process")
    pid = plugin.call("pid")
    start = time.monotonic()
    with pytest.raises(plugbridge.ShutdownFailed) as info:
        plugin.shutdown()
    assert time.monotonic() - start < 3.0
    assert "on_stop" in info.value.message
    assert not alive(pid)
    assert plugin.state is LifecycleState.FAILED


def test_a_shutdown_interrupted_by_ctrl_c_still_ends_the_worker(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    # shutdown() is one-shot: if Ctrl-C cuts it short (here while the worker runs a slow
    # on_stop), the worker must not be left running until the host exits.
    stopping = tmp_path / "stopping"
    source = write_plugin(
        f"""
        import os, time
        from pathlib import Path
        from plugbridge import Plugin, handler

        class SlowStop(Plugin):
            name = "slow_stop"
            def on_stop(self, ctx):
                Path({str(stopping)!r}).touch()
                time.sleep(30)

            @handler("pid")
            def pid(self, ctx, req):
                return os.getpid()
        """
    )
    assert threading.current_thread() is threading.main_thread()
    threads = threading.active_count()
    # Generous bounds: under heavy load the worker may take many seconds to reach on_stop,
    # and shutdown must still be running (not failed on its timeout) when Ctrl-C comes.
    plugin = plugbridge.load(source, config={"shutdown_timeout": 120}, isolation="process")
    pid = plugin.call("pid")

    def interrupt_once_stopping() -> None:
        if wait_until(stopping.exists, timeout=100):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_once_stopping)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        plugin.shutdown()
    interrupter.join()
    assert wait_until(lambda: not alive(pid)), "the worker outlived its interrupted shutdown"
    assert wait_until(lambda: threading.active_count() == threads)


def test_a_call_the_stopping_worker_never_read_goes_to_the_reloaded_instance(
    faulty: Path,
) -> None:
    # The race a reload under load can hit: a call admitted by the old worker's session
    # whose frame is written only after Stop (here: after the worker has gone), so the
    # worker never reads it. It never ran: the handle must send it to the new instance,
    # not fail it as cancelled.
    plugin = plugbridge.load(faulty, isolation="process")
    old = plugin._transport._current  # type: ignore[attr-defined]
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(plugin.call("pid"))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    with old.channel._send_lock:  # the call is admitted, its frame waits for the channel
        caller.start()
        assert wait_until(lambda: len(old._pending) == 1)
        plugin.reload()  # Stop goes first (this thread holds the lock): the worker ends
    caller.join(10)
    assert outcome == [plugin.call("pid")], outcome  # answered by the new worker
    assert old.process.pid not in outcome
    plugin.shutdown()


def test_frozen_worker_is_terminated_then_killed(faulty: Path) -> None:
    plugin = plugbridge.load(faulty, isolation="process")
    pid = plugin.call("pid")
    os.kill(pid, signal.SIGSTOP)  # cannot read, cannot answer, ignores SIGTERM
    start = time.monotonic()
    with pytest.raises(plugbridge.ShutdownFailed) as info:
        plugin.shutdown(timeout=0.5)
    assert time.monotonic() - start < 2.5
    assert "did not stop" in info.value.message
    assert not alive(pid)


HOST_SCRIPT = """
import sys, threading, time
import plugbridge

plugin = plugbridge.load(sys.argv[1], isolation="process")
if sys.argv[2] == "thread":   # the worker must outlive the thread that started it
    box = []
    load = lambda: box.append(plugbridge.load(sys.argv[1], isolation="process"))
    t = threading.Thread(target=load)
    t.start(); t.join()
    plugin = box[0]
print(plugin.call("pid"), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_worker_exits_when_its_host_is_killed(
    faulty: Path, tmp_path: Path, started_from: str
) -> None:
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT)
    host = subprocess.Popen(
        [sys.executable, str(script), str(faulty), started_from], stdout=subprocess.PIPE
    )
    try:
        assert host.stdout is not None
        worker_pid = int(host.stdout.readline())
        time.sleep(0.3)
        assert alive(worker_pid)  # started from a thread that has ended: still serving
        host.kill()
        host.wait()
        assert wait_until(lambda: not alive(worker_pid), timeout=5.0)
    finally:
        host.kill()
        host.wait()


def test_prints_become_log_records_not_host_output(
    faulty: Path, capture: LogCapture, capfd: pytest.CaptureFixture[str]
) -> None:
    with plugbridge.load(faulty, isolation="process", log_callback=capture) as plugin:
        plugin.call("print", "hello")
        expected = {
            (LogLevel.INFO, "stdout", "hello"),
            (LogLevel.WARN, "stderr", "err:hello"),
            (LogLevel.INFO, "stdout", "raw:hello"),
        }
        assert wait_until(lambda: expected <= set(capture.records))
    out, err = capfd.readouterr()
    assert "hello" not in out and "hello" not in err


def test_no_threads_or_fds_left_after_a_crash(faulty: Path) -> None:
    with plugbridge.load(faulty, isolation="process") as warm:
        warm.call("echo", 1)
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        plugin = plugbridge.load(faulty, isolation="process")
        crash_with(plugin, "exit", 1)
        plugin.reload()
        crash_with(plugin, "segfault")
        plugin.shutdown()
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) == fds


def test_worker_is_a_separate_process_with_its_own_globals(faulty: Path) -> None:
    with (
        plugbridge.load(faulty, isolation="process") as one,
        plugbridge.load(faulty, isolation="process") as two,
    ):
        assert one.call("pid") != two.call("pid") != os.getpid()
        crash_with(one, "exit", 1)
        assert two.call("echo", 2) == 2


def test_start_failure_leaves_no_process(write_plugin: Callable[..., Path]) -> None:
    source = write_plugin(
        textwrap.dedent(
            """
            from plugbridge import Plugin
            class Bad(Plugin):
                def on_start(self, ctx):
                    raise RuntimeError("nope")
            """
        )
    )
    before = threading.active_count()
    with pytest.raises(plugbridge.InitializationFailed, match="nope"):
        plugbridge.load(source, isolation="process")
    assert threading.active_count() == before


def test_sync_callers_read_in_turn_time_out_on_time_and_see_crashes(faulty: Path) -> None:
    # Each sync caller may read the channel itself while it waits: answers must reach the
    # right callers, a reading caller must stop on its timeout, and a crash seen by a
    # reading caller must fail every call in flight.
    with plugbridge.load(faulty, isolation="process") as plugin:
        answered: list[bool] = []

        def caller(index: int) -> None:
            values = [{"caller": index, "round": round_} for round_ in range(30)]
            answered.append([plugin.call("echo", value) for value in values] == values)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        with pytest.raises(plugbridge.Timeout):
            plugin.call("sleep", 5, timeout=0.2)
        for thread in threads:
            thread.join(30)
        assert answered == [True] * 6
        begin = time.monotonic()
        with pytest.raises(plugbridge.Timeout):
            plugin.call("sleep", 10, timeout=0.1)  # nobody else calls: this caller reads
        assert time.monotonic() - begin < 5.0  # it left at its deadline, not with the answer
        assert plugin.call("echo", "after") == "after"
        assert "exited with code 5" in crash_with(plugin, "exit", 5)


HUNG_START = """
    import asyncio, os, time
    from pathlib import Path
    from plugbridge import Plugin, handler

    class HungStart(Plugin):
        name = "hung_start"

        {kind} on_start(self, ctx):
            Path(ctx.data["pidfile"]).write_text(str(os.getpid()))
            if Path(ctx.data["marker"]).exists():  # hang only once the test asks for it
                {hang}

        @handler("exit")
        def exit(self, ctx, req):
            os._exit(req)
"""

HANGS = {
    "sleep": ("def", "time.sleep(60)"),
    "spin": ("def", "while True: pass"),
    "async": ("async def", "await asyncio.sleep(60)"),
}


def hung_start(write_plugin: Callable[..., Path], tmp_path: Path, hang: str) -> dict[str, Any]:
    kind, code = HANGS[hang]
    source = write_plugin(HUNG_START.format(kind=kind, hang=code), name="hung_start.py")
    data = {"pidfile": str(tmp_path / "pid"), "marker": str(tmp_path / "marker")}
    return {"source": source, "data": data}


@pytest.mark.parametrize("hang", sorted(HANGS))
def test_a_hung_on_start_fails_the_load_at_the_start_timeout(
    write_plugin: Callable[..., Path], tmp_path: Path, hang: str
) -> None:
    plugin = hung_start(write_plugin, tmp_path, hang)
    config = {"start_timeout": 1.0, "data": plugin["data"]}
    with plugbridge.load(plugin["source"], config=config, isolation="process"):
        pass  # warm: lazy pools started, so that counts compare
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    Path(plugin["data"]["marker"]).touch()
    begin = time.monotonic()
    with pytest.raises(plugbridge.InitializationFailed) as info:
        plugbridge.load(plugin["source"], config=config, isolation="process")
    assert time.monotonic() - begin < 5.0  # 1 s, not the 60 s the plugin would take
    pid = int(Path(plugin["data"]["pidfile"]).read_text())
    assert info.value.message == (
        "hung_start.on_start did not finish within the start timeout (1s);"
        f" its worker process {pid} was killed"
    )
    assert not alive(int(Path(plugin["data"]["pidfile"]).read_text()))
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_start_late_before_the_instance_has_a_name_names_the_module(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    source = write_plugin(
        f"""
        import os, time
        end = time.monotonic() + 60
        while not os.path.exists({str(release)!r}) and time.monotonic() < end:
            time.sleep(0.01)  # the import itself hangs: no instance, no name yet
        from plugbridge import Plugin

        class Slow(Plugin):
            name = "slow"
        """,
        name="slow_import.py",
    )
    try:
        with pytest.raises(plugbridge.InitializationFailed) as info:
            plugbridge.load(source, config={"start_timeout": 1}, isolation="process")
    finally:
        release.touch()
    assert re.fullmatch(
        r"worker process \d+ did not load plugin module 'slow_import' within the start"
        r" timeout \(1s\) and was killed",
        info.value.message,
    ), info.value.message


def test_a_native_init_past_the_start_deadline_names_plugin_init(tmp_path: Path) -> None:
    library = build_hello_c(tmp_path)
    config = {"start_timeout": 1, "data": {"init_sleep_ms": 3000}}
    with pytest.raises(plugbridge.InitializationFailed) as info:
        plugbridge.load(library, config=config, isolation="process")
    assert re.fullmatch(
        r"native plugin '\w+' did not finish plugin_init within the start timeout \(1s\);"
        r" its worker process \d+ was killed",
        info.value.message,
    ), info.value.message


def test_a_restarted_worker_gets_the_start_timeout_too(
    write_plugin: Callable[..., Path], tmp_path: Path, capture: LogCapture
) -> None:
    plugin = hung_start(write_plugin, tmp_path, "sleep")
    config = {
        "start_timeout": 1.0,
        "data": plugin["data"],
        "restart_on_crash": True,
        "max_restarts": 1,
        "restart_backoff": 0.01,
    }
    handle = plugbridge.load(
        plugin["source"], config=config, isolation="process", log_callback=capture
    )
    Path(plugin["data"]["marker"]).touch()
    first = int(Path(plugin["data"]["pidfile"]).read_text())
    with pytest.raises(plugbridge.PluginCrashed):
        handle.call("exit", 1)
    assert wait_until(lambda: any("restarting its worker failed" in m for m in capture.messages()))
    restarted = int(Path(plugin["data"]["pidfile"]).read_text())
    assert restarted != first and not alive(restarted)
    handle.shutdown()


HOLDS_THE_CANCELLABLE_LOOP = """
    import os, time
    from pathlib import Path
    import msgspec
    from plugbridge import Plugin, handler

    class Hold(msgspec.Struct):
        blocked: str
        release: str

        def __post_init__(self):
            # Runs where the request is converted: in a worker, for an acall, on the loop
            # that runs the tasks of cancellable calls. Holds it until the test says.
            Path(self.blocked).touch()
            end = time.monotonic() + 60
            while not os.path.exists(self.release) and time.monotonic() < end:
                time.sleep(0.01)

    class Holder(Plugin):
        name = "holder"

        @handler("hold")
        async def hold(self, ctx, req: Hold) -> str:
            return "held"

        @handler("echo")
        async def echo(self, ctx, req):
            Path(req).touch()  # it ran
            return req

        @handler("mark")
        def mark(self, ctx, req):
            Path(req).touch()
            return req
"""


def test_an_acall_cancelled_before_its_task_starts_gives_its_slot_back(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    # The worker's loop for cancellable calls is held (by a request's conversion), so the
    # task of a second acall, whose Call frame has arrived, has not started when its
    # Cancel (its caller timed out) arrives: the task is cancelled before its first step
    # and its body never runs. The call must still be answered, its slot given back.
    import asyncio

    source = write_plugin(HOLDS_THE_CANCELLABLE_LOOP, name="holder.py")
    blocked, release = tmp_path / "blocked", tmp_path / "release"
    ran, marked = tmp_path / "echo-ran", tmp_path / "marked"
    plugin = plugbridge.load(source, config={"max_concurrent_ops": 3}, isolation="process")
    session = plugin._transport._current  # type: ignore[attr-defined]

    async def scenario() -> None:
        hold = {"blocked": str(blocked), "release": str(release)}
        holding = asyncio.ensure_future(plugin.acall("hold", hold))
        assert await asyncio.to_thread(wait_until, blocked.exists, 10)
        with pytest.raises(plugbridge.Timeout):  # sent at once, given up (Cancel) after 0.1 s
            await plugin.acall("echo", str(ran), timeout=0.1)
        # A sync call read after that Cancel: once it ran, the Cancel waits on the held loop.
        assert await asyncio.to_thread(plugin.call, "mark", str(marked)) == str(marked)
        release.touch()
        assert await holding == "held"

    try:
        asyncio.run(scenario())
        assert wait_until(lambda: plugin.in_flight == 0 and not session._pending)
        assert not ran.exists()  # cancelled before its first step: the handler never ran
        assert plugin.call("echo", str(marked)) == str(marked)
    finally:
        release.touch()
        plugin.shutdown()


# -- a call's slot is back before its caller has its answer -----------------------------------


class SlowRelease:
    """A transport ``release`` that takes a while: a caller answered before it has ended
    would find its slot still taken (``in_flight`` not yet down)."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def __call__(self) -> None:
        time.sleep(0.3)  # not a wait for anything: the window a wrong order would show
        self.ended.set()


def test_an_answered_acall_has_given_its_slot_back(faulty: Path) -> None:
    import asyncio

    with plugbridge.load(faulty, isolation="process") as plugin:
        session = plugin._transport._current  # type: ignore[attr-defined]
        release = SlowRelease()
        assert asyncio.run(session.acall("echo", b'"x"', None, release)) == b'"x"'
        assert release.ended.is_set()


def test_calls_failed_by_a_crash_have_given_their_slots_back(faulty: Path) -> None:
    plugin = plugbridge.load(faulty, isolation="process")
    session = plugin._transport._current  # type: ignore[attr-defined]
    release = SlowRelease()
    with pytest.raises(plugbridge.PluginCrashed):
        session.call("exit", b"1", None, release)
    assert release.ended.is_set()
    plugin.shutdown()


def test_calls_cancelled_by_shutdown_have_given_their_slots_back(faulty: Path) -> None:
    # A worker that ignores Stop (it is frozen) is ended; the calls it still had are
    # cancelled by the host.
    plugin = plugbridge.load(faulty, isolation="process")
    session = plugin._transport._current  # type: ignore[attr-defined]
    pid = plugin.call("pid")
    release = SlowRelease()
    outcome: list[tuple[type[BaseException], bool]] = []

    def call() -> None:
        try:
            session.call("spin", b"60", None, release)
        except BaseException as exc:
            outcome.append((type(exc), release.ended.is_set()))  # as its caller sees it

    caller = threading.Thread(target=call)
    caller.start()
    assert wait_until(lambda: len(session._pending) == 1)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(plugbridge.ShutdownFailed):
            plugin.shutdown(timeout=1)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
    caller.join(10)
    assert outcome == [(plugbridge.Cancelled, True)]
