"""DaemonThreadPool, DaemonExecutor and loop inboxes: nothing kept alive, nothing waited for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
import weakref

import pytest

from plugbridge._calls.inbox import LoopInbox, LoopInboxes
from plugbridge._calls.threadpool import DaemonExecutor, DaemonThreadPool


def test_a_pool_abandons_a_hung_thread_at_its_deadline() -> None:
    pool = DaemonThreadPool(2, "test-pool")
    release = threading.Event()
    pool.submit(lambda: None)
    pool.submit(release.wait)
    started = time.monotonic()
    assert not pool.shutdown(time.monotonic() + 0.1)
    assert time.monotonic() - started < 5
    release.set()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_an_idle_pool_thread_keeps_no_job_alive() -> None:
    pool = DaemonThreadPool(1, "test-pool")

    class Job:
        def __init__(self, done: threading.Event) -> None:
            self.done = done

        def __call__(self) -> None:
            self.done.set()

    done = threading.Event()
    job = Job(done)
    ref = weakref.ref(job)
    pool.submit(job)
    assert done.wait(10)
    del job
    deadline = time.monotonic() + 5
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    assert ref() is None
    assert pool.shutdown(time.monotonic() + 5)


def test_daemon_executor_is_a_loops_default_executor_of_daemon_threads() -> None:
    executor = DaemonExecutor(2, "test-to_thread")
    loop = asyncio.new_event_loop()
    try:
        loop.set_default_executor(executor)  # 3.11 insists on a ThreadPoolExecutor

        async def main() -> tuple[bool, str]:
            def where() -> tuple[bool, str]:
                thread = threading.current_thread()
                return thread.daemon, thread.name

            return await asyncio.to_thread(where)

        daemon, name = loop.run_until_complete(main())
    finally:
        loop.close()
    assert daemon
    assert name.startswith("test-to_thread")
    assert executor.stop(time.monotonic() + 5)


def test_daemon_executor_reports_errors_and_cancels_queued_work() -> None:
    executor = DaemonExecutor(1, "test-to_thread")
    release = threading.Event()

    def fail() -> None:
        raise SystemExit("from to_thread work")

    with pytest.raises(SystemExit):
        executor.submit(fail).result(10)
    running = threading.Event()

    def block() -> bool:
        running.set()
        return release.wait()

    blocker = executor.submit(block)
    queued = executor.submit(lambda: "never")
    assert running.wait(10)
    assert not executor.stop(time.monotonic() + 0.1)  # the blocked thread is abandoned
    release.set()
    assert blocker.result(10) is True
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(10)


def test_inboxes_do_not_keep_loops_alive() -> None:
    inboxes = LoopInboxes()
    refs = []
    for _ in range(20):
        loop = asyncio.new_event_loop()
        inbox = inboxes.get(loop)
        assert inboxes.get(loop) is inbox
        refs.append(weakref.ref(loop))
        loop.close()
    del loop, inbox
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


def test_an_inbox_whose_loop_is_gone_refuses_posts() -> None:
    loop = asyncio.new_event_loop()
    inbox = LoopInbox(loop)
    loop.close()
    del loop
    gc.collect()
    with pytest.raises(RuntimeError):
        inbox.post(print, "nobody is waiting")
    with pytest.raises(RuntimeError):
        inbox.post(print, "still nobody")  # not stuck with a drain that never comes
