"""A worker OS process: spawned, polled, and stopped for good (terminate, then kill).

Workers are forked from one long-lived *spawner* thread. On Linux a worker asks the kernel
for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), and the kernel counts the thread
that forked it as that parent: forking from a caller's short-lived thread (a ``reload`` in
a helper thread, say) would kill the worker when that thread ends. The spawner thread lives
exactly as long as some worker it forked is not yet reaped, so it never outlives its use.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_Job = tuple[Callable[[], Any], "queue.SimpleQueue[tuple[Any, BaseException | None]]"]


class _Spawner:
    """Runs ``Popen`` on one thread that stays alive while any worker it forked lives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live = 0
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def run(self, job: Callable[[], Any]) -> Any:
        with self._lock:
            self._live += 1
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=_serve_jobs, args=(self._jobs,), name="plugbridge-spawner", daemon=True
                )
                self._thread.start()
            jobs = self._jobs
        answer: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        jobs.put((job, answer))
        result, error = answer.get()
        if error is not None:
            self.forget()
            raise error
        return result

    def forget(self) -> None:
        """A worker forked here is reaped; the last one ends the spawner thread."""
        with self._lock:
            self._live -= 1
            if self._live > 0 or self._jobs is None:
                return
            jobs, thread = self._jobs, self._thread
            self._jobs = self._thread = None
        jobs.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)


def _serve_jobs(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (item := jobs.get()) is not None:
        job, answer = item
        try:
            answer.put((job(), None))
        except BaseException as exc:
            answer.put((None, exc))


_SPAWNER = _Spawner()


class WorkerProcess:
    """One child process with its stdout and stderr pipes."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._forgotten = False
        self._lock = threading.Lock()
        self.pidfd = _open_pidfd(popen.pid)
        """A descriptor readable once the process has ended (Linux 5.3+), else None: the
        host then learns of the end by polling the exit status."""

    @classmethod
    def spawn(
        cls, argv: Sequence[str], pass_fds: Sequence[int], env: Mapping[str, str]
    ) -> WorkerProcess:
        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(pass_fds),
                env=dict(env),
                close_fds=True,
            )

        popen_obj: subprocess.Popen[bytes] = _SPAWNER.run(popen)
        return cls(popen_obj)

    @property
    def stdout_fd(self) -> int:
        assert self._popen.stdout is not None
        return self._popen.stdout.fileno()

    @property
    def stderr_fd(self) -> int:
        assert self._popen.stderr is not None
        return self._popen.stderr.fileno()

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        """The exit status if the process has ended (it is reaped then), else None."""
        code = self._popen.poll()
        if code is not None:
            self._forget()
        return code

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        try:
            code = self._popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None
        self._forget()
        return code

    def end(self, deadline: float) -> int | None:
        """Make sure it is gone: wait until ``deadline``, then SIGTERM, then SIGKILL."""
        code = self.wait(deadline - time.monotonic())
        if code is not None:
            return code
        self.signal(signal.SIGTERM)
        code = self.wait(min(0.2, max(0.02, (deadline - time.monotonic()) / 2)))
        if code is not None:
            return code
        return self.kill()

    def kill(self) -> int | None:
        self.signal(signal.SIGKILL)
        return self.wait(2.0)

    def signal(self, signum: int) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signum)

    def describe(self) -> str:
        return describe_exit(self._popen.returncode)

    def close_pipes(self) -> None:
        for stream in (self._popen.stdout, self._popen.stderr):
            if stream is not None:
                stream.close()

    def close_pidfd(self) -> None:
        """Close ``pidfd`` (once nothing waits on it any more)."""
        pidfd, self.pidfd = self.pidfd, None
        if pidfd is not None:
            os.close(pidfd)

    def _forget(self) -> None:
        with self._lock:
            if self._forgotten:
                return
            self._forgotten = True
        _SPAWNER.forget()


def _open_pidfd(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # a kernel older than 5.3, or a seccomp filter refusing it
        return None
    return fd


def describe_exit(code: int | None) -> str:
    """``"was killed by signal SIGSEGV (11)"``, ``"exited with code 3"``, ``"is running"``."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {name} ({-code})"
    return f"exited with code {code}"
