"""A worker OS process: spawned, polled, and stopped for good (terminate, then kill), with
the processes it started (its process group).

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
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .channel import poll_ms

_Answer = queue.SimpleQueue[tuple[Any, BaseException | None]]
_Job = tuple[Callable[[], Any], _Answer, list[bool]]

_INTERRUPT_CHECK_S = 0.2
"""Longest a caller waiting for the spawner goes without handling a pending Ctrl-C."""


class _Spawner:
    """Runs ``Popen`` on one thread that stays alive while any worker it forked lives.

    A caller interrupted (Ctrl-C) at any point leaves nothing behind: the thread is known
    only once it has started, a job is counted as it is queued, and a worker spawned for a
    caller that stopped waiting is killed and reaped by whichever of the two sees it last.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live = 0
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def run(self, job: Callable[[], Any]) -> Any:
        answer: _Answer = queue.SimpleQueue()
        abandoned: list[bool] = []
        jobs: queue.SimpleQueue[_Job | None] | None = None
        try:
            with self._lock:
                if self._jobs is None:
                    jobs = queue.SimpleQueue()
                    thread = threading.Thread(
                        target=_serve_jobs,
                        args=(jobs, self),
                        name="plugbridge-spawner",
                        daemon=True,
                    )
                    try:
                        thread.start()
                    except BaseException as exc:
                        jobs.put(None)  # had it started after all, it ends at once
                        if isinstance(exc.__context__, KeyboardInterrupt):
                            # Thread.start's Condition failed as an interrupt unwound it:
                            # what the caller must see is the interrupt.
                            raise exc.__context__ from None
                        raise
                    self._jobs, self._thread = jobs, thread
                self._live += 1  # no call between the count and the queueing
                self._jobs.put((job, answer, abandoned))
            while True:
                # In short waits: a Ctrl-C that lands just before a wait without a timeout
                # blocks is only handled when the wait ends (the C-level lock is not woken
                # by it), so the caller would sit out the whole spawn.
                with contextlib.suppress(queue.Empty):
                    result, error = answer.get(timeout=_INTERRUPT_CHECK_S)
                    break
        except BaseException:
            if jobs is not None and self._jobs is not jobs:
                jobs.put(None)  # its thread started, but was never made known: it ends
            abandoned.append(True)  # first: the spawner thread ends it, if it comes later
            self.discard(answer)
            raise
        if error is not None:
            self.forget()
            raise error
        return result

    def discard(self, answer: _Answer) -> None:
        """A job whose caller stopped waiting: if its answer is there (taken once, by
        whoever comes first), kill and reap the worker it spawned."""
        try:
            process, error = answer.get_nowait()
        except queue.Empty:
            return  # not queued, or not done yet: the spawner thread discards it then
        if error is not None:
            self.forget()
            return
        process.kill()
        process.close_pidfd()
        process.close_pipes()

    def forget_parent(self) -> None:
        """In a forked child: the spawner thread, its queue and the workers it counts are
        the parent's (the thread did not survive the fork, so a job queued for it would wait
        forever): the child's first spawn starts a spawner thread of the child's own. The
        lock is new too: a thread of the parent may have held it at the fork."""
        self._lock = threading.Lock()
        self._live = 0
        self._thread = self._jobs = None

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


def _serve_jobs(jobs: queue.SimpleQueue[_Job | None], spawner: _Spawner) -> None:
    while (item := jobs.get()) is not None:
        job, answer, abandoned = item
        outcome: tuple[Any, BaseException | None]
        try:
            outcome = (job(), None)
        except BaseException as exc:
            outcome = (None, exc)
        answer.put(outcome)
        if abandoned:  # its caller stopped waiting before or while it ran
            spawner.discard(answer)


_SPAWNER = _Spawner()
os.register_at_fork(after_in_child=_SPAWNER.forget_parent)


class WorkerProcess:
    """One child process with its stdout and stderr pipes, leading a process group.

    The worker starts a session of its own (so its pid is its process group's id): the
    processes its plugin starts join that group unless they leave it on purpose, and they
    end with the worker. The group is killed exactly once, on every way a worker ends: when
    the host kills the worker (``kill``), or, if it ended by itself (a crash, a stop), just
    before it is reaped. Never later: until the worker is reaped its pid, the group's id,
    cannot be handed to any other process. So only this class reaps it: it reads the exit
    status without reaping (``WNOWAIT``), kills the group, then reaps; a
    ``KeyboardInterrupt`` between two of those steps loses nothing (the next call goes on).
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._lock = threading.Lock()
        """Serialises reaping and signalling: a signal never reaches a reaped pid."""
        self._status: int | None = None
        """The exit status, once the worker has ended (known before it is reaped)."""
        self._group_ended = False
        self._reaped = False
        self._forgotten = False
        self.pidfd = _open_pidfd(popen.pid)
        """A descriptor readable once the process has ended (Linux 5.3+), else None: the
        host then learns of the end by polling the exit status."""

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        pass_fds: Sequence[int],
        env: Mapping[str, str],
        into: list[WorkerProcess] | None = None,
    ) -> WorkerProcess:
        """Start a worker (on the spawner thread). ``into`` gets it there, before this
        returns: a caller interrupted at any point still finds what it has to end."""

        def start() -> WorkerProcess:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(pass_fds),
                env=dict(env),
                close_fds=True,
                start_new_session=True,  # before exec: its group exists once we know its pid
            )
            process = cls(popen)
            if into is not None:
                into.append(process)
            return process

        process: WorkerProcess = _SPAWNER.run(start)
        return process

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
        """The exit status if the process has ended (its group is killed and it is reaped
        then), else None. Never waits."""
        if self._reaped:
            return self._status
        with self._lock:
            if not self._reaped:
                if self._status is None:
                    ended = os.waitid(os.P_PID, self.pid, _ENDED_NOT_REAPED)
                    if ended is None:
                        return None
                    self._status = _exit_status(ended)
                self._end_group()  # still unreaped: the group's id is still ours
                with contextlib.suppress(ChildProcessError):  # a zombie: at once
                    os.waitpid(self.pid, 0)
                self._popen.returncode = self._status  # Popen must not wait for it either
                self._reaped = True
        self._forget()
        return self._status

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        exited: select.poll | None = None
        pidfd = self.pidfd
        if pidfd is not None:
            exited = select.poll()
            exited.register(pidfd, select.POLLIN)
        pause = 0.0005
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if exited is not None:
                events = exited.poll(poll_ms(left))
                if events and events[0][1] & select.POLLNVAL:  # closed meanwhile
                    exited = None
            else:  # no pidfd: look again after a pause, growing like subprocess's
                pause = min(pause * 2, left, 0.05)
                time.sleep(pause)
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
        """Kill the worker and its group (SIGKILL); its exit status, or None if it has not
        ended within 2 s (not to be expected)."""
        with self._lock:
            if not self._reaped:
                self._end_group()
        return self.wait(2.0)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker alone, unless it has been reaped."""
        with self._lock:
            if not self._reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signum)

    def _end_group(self) -> None:
        """Kill the worker's process group, the first time (with ``_lock``, unreaped)."""
        if not self._group_ended:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self._group_ended = True

    def describe(self) -> str:
        return describe_exit(self._status)

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


_ENDED_NOT_REAPED = os.WEXITED | os.WNOHANG | os.WNOWAIT


def _exit_status(ended: Any) -> int:
    """A ``waitid`` result as a ``returncode``: the exit code, or minus the signal."""
    if ended.si_code == os.CLD_EXITED:
        return int(ended.si_status)
    return -int(ended.si_status)  # CLD_KILLED, CLD_DUMPED


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
