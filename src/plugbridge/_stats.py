"""A handle's statistics: what ``PluginHandle.stats()`` reports, and how calls are counted.

Counting is always on, so it must cost the fast call path almost nothing (an in-process
sync call is ~1.5 µs) and stay exact when many threads call at once. CPython's
``counter += 1`` is a read, an add and a write: two threads can both read 41 and both write
42. Measured in place (a call between each step, so caches are what a real call leaves):
a lock around it ~+150 ns, a ``threading.local`` shard ~+40 ns, ``list.append`` plus the
length check that bounds it ~+60 ns, ``count.__next__()`` ~+70 ns (a slot wrapper), and
``next(itertools.repeat(None, n))`` ~+18 ns: one builtin call, atomic under the GIL,
allocating nothing, and its remaining length (``operator.length_hint``) says how many
calls took one. That is the call counter: ``finished``.

Durations cost more than counts: one ``time.perf_counter()`` is ~+60 ns in place, so two
per call are already over the budget (5 % or 0.1 µs). So calls are *timed* by sampling,
decided by ``next(sampler)`` (~+23 ns, an ``itertools.cycle`` over a fixed jittered
pattern: no period of the workload aliases with it), and the rate adapts: while the handle
serves fewer than ``TIMED_PER_S`` calls a second every call is timed (so ``latency_max_ms``
is exact then), above it one call in 2**k, k chosen for about ``TIMED_PER_S`` timed calls a
second (1 in 256 at most). The rate is looked at again on timed calls and on every
``snapshot()``. A timed call appends its duration to ``latencies`` (``timed``, off the fast
path); once ``FOLD_AT`` are pending the durations are *folded* into a fixed-size
histogram (one folder at a time, by a non-blocking try of the fold lock; the others go on
appending). A fold removes exactly the durations it counted (``del latencies[:n]`` after
reading the first ``n``, both atomic), so appends landing meanwhile wait for the next fold.

Failures are rarer and take a slower path (``failed``: a lock and a dict); a call refused
by the concurrency limit is counted where it is refused (``rejected``), never as a call,
and one refused before it ran for another reason (``refused``) only as an error.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import random
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._calls.limiter import _MAX_SLOTS
from ._errors import ErrorCode, PluginError
from ._transport import ProcessUsage, Release

FOLD_AT = 1024
"""Pending durations (or unlimited-mode releases) that make a timed call fold them."""
TIMED_PER_S = 2000
"""Timed calls a second the sampling aims at: below that rate, every call is timed."""
WINDOW_S = 0.1
"""How often (at most) the call rate is measured and the sampling adapted."""
_MOST_SPARSE = 8
"""At most 1 call in 2**8 is timed, however busy the handle."""
_PATTERN = 4096
"""Calls in one turn of a sampling pattern."""

_SUB_BUCKETS = 16
"""Linear buckets per power of two: a bucket spans at most 1/16 of its lower bound."""
_LOWEST_EXP = 7
"""The first power-of-two range starts at 2**7 ns (128 ns); below it, one bucket."""
_HIGHEST_EXP = 45
"""The last range ends at 2**45 ns (~9.8 hours); above it, one overflow bucket."""

_clock = time.perf_counter


@dataclass(frozen=True, slots=True)
class PluginStats:
    """A snapshot of one handle's statistics since it was loaded (reloads included).

    Plain values only (ints, floats, None, a ``dict[str, int]``) so it serialises to JSON as
    it is (``dataclasses.asdict``, ``msgspec.json.encode``).
    """

    calls: int
    """Calls that ran and finished, whether they succeeded or failed (with any
    ``PluginError``, or cancelled while awaited); exact. Calls refused before they ran are
    not counted here: by the concurrency limit, by an instance that is not ACTIVE
    (``InvalidState``: shut down, an optional plugin that failed to load), or for an
    argument found wrong before the call was admitted (its timeout, a zero timeout, a
    request or message id no call can carry); nor a call its thread abandoned on
    ``KeyboardInterrupt``."""
    errors: dict[str, int]
    """``ErrorCode`` name -> count of calls that failed with it, refused calls included:
    by the limit as ``TOO_MANY_REQUESTS`` (the same number as ``rejected``), the others
    by their own code. Codes never seen are absent."""
    rejected: int
    """Calls refused by the concurrency limit (``PluginHandle.rejected_request_count``)."""
    in_flight: int
    """Calls holding a concurrency slot now (a call that timed out holds it until its
    handler really returns), whether the limit is on or off."""
    latency_p50_ms: float | None
    """Median duration of the timed calls that finished, as their caller saw it, within
    3.2 % (the histogram's resolution); None until one has finished. Every call is timed
    while the handle serves under 2000 calls a second; above, a sample of about 2000 a
    second (see ``latency_samples``)."""
    latency_p99_ms: float | None
    """99th percentile, as ``latency_p50_ms``."""
    latency_max_ms: float | None
    """The longest timed call (exact while every call is timed); None until one finished."""
    latency_samples: int
    """How many finished calls were timed (the percentiles are over these)."""
    reloads: int
    """Successful reloads (a reload that failed left the old instance serving: not counted)."""
    restarts: int
    """Crashed workers replaced by the restart policy (isolation="process"), across reloads."""
    uptime_s: float
    """Seconds since the handle was loaded (a reload does not reset it)."""
    pid: int | None
    """The worker process's pid; None in-process, with replicas, or while no worker runs."""
    rss_bytes: int | None
    """The worker's resident memory; None when ``pid`` is None."""
    cpu_seconds: float | None
    """The worker's CPU time so far (user + system); None when ``pid`` is None."""


def _bucket_bounds() -> list[float]:
    """Lower bounds (seconds) of every bucket but the first, which starts at 0."""
    bounds = []
    for exp in range(_LOWEST_EXP, _HIGHEST_EXP):
        for sub in range(_SUB_BUCKETS):
            bounds.append((1.0 + sub / _SUB_BUCKETS) * 2.0**exp * 1e-9)
    bounds.append(2.0**_HIGHEST_EXP * 1e-9)
    return bounds


class LatencyHistogram:
    """Call durations in log-linear buckets, the way HdrHistogram keeps them.

    Each power of two of nanoseconds (128 ns to ~9.8 h) is split into 16 equal buckets, so
    a bucket is at most 1/16 as wide as the values in it: a percentile reported at its
    bucket's midpoint is within 1/32 (3.2 %) of the true value (within 64 ns below 128 ns;
    above ~9.8 h, the exact maximum). 610 counters, whatever the number of calls.
    """

    BOUNDS = _bucket_bounds()

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0
        self.max = 0.0

    def add(self, durations: list[float]) -> None:
        """Count ``durations`` (seconds); the bucketing loop runs in C (bisect, Counter)."""
        counts = self.counts
        for index, n in Counter(map(_bucket_of, durations)).items():
            counts[index] += n
        self.total += len(durations)
        self.max = max(self.max, *durations)

    def percentiles(self, *shares: float) -> list[float | None]:
        """The durations (seconds) at or under which each ``share`` of the calls fall."""
        if not self.total:
            return [None] * len(shares)
        below = list(itertools.accumulate(self.counts))
        bounds = self.BOUNDS
        found: list[float | None] = []
        for share in shares:
            rank = max(1, math.ceil(share * self.total))  # at least that many calls
            index = bisect_left(below, rank)
            low = 0.0 if index == 0 else bounds[index - 1]
            high = bounds[index] if index < len(bounds) else self.max
            found.append(min((low + high) / 2.0, self.max))
        return found


_bucket_of = functools.partial(bisect_right, LatencyHistogram.BOUNDS)
"""A duration's bucket index (a builtin: ``map`` runs it in C)."""


@functools.cache
def _pattern(sparseness: int) -> tuple[bool, ...]:
    """One turn of the sampling pattern timing 1 call in ``2**sparseness``: one True at a
    random place in each run of ``2**sparseness`` calls (the same places every run of the
    program), so timed calls are never more than two runs apart."""
    if sparseness == 0:
        return (True,)
    run = 1 << sparseness
    chosen = random.Random(sparseness)
    pattern = [False] * _PATTERN
    for start in range(0, _PATTERN, run):
        pattern[start + chosen.randrange(run)] = True
    return tuple(pattern)


def _sampler(sparseness: int) -> Iterator[bool]:
    return itertools.cycle(_pattern(sparseness))


class CallStats:
    """The counters a ``PluginHandle`` keeps for its whole life, across reloads.

    The call forms decide whether to time a call with ``next(sampler)``, count it with
    ``next(finished)`` when it returns and pass a timed one to ``timed``; failures go
    through ``failed``. When the handle has no concurrency limit, ``take`` and
    ``new_release`` stand in for the limiter's so that calls in flight are still counted
    (``in_use``), with the same builtin-only shape.
    """

    def __init__(self, max_ops: int) -> None:
        self.finished = itertools.repeat(None, sys.maxsize)
        """One item taken per finished call: ``sys.maxsize`` minus what is left counts them."""
        self.sampler = _sampler(0)
        self._sparseness = 0
        self.latencies: list[float] = []
        self._fold_lock = threading.Lock()
        self._histogram = LatencyHistogram()
        self._errors: dict[str, int] = {}
        self._errors_lock = threading.Lock()
        self._loaded_at = time.monotonic()
        self._window_start = _clock()
        self._window_calls = 0
        self.reloads = 0
        self.counts_slots = not 0 < max_ops <= _MAX_SLOTS
        """No limit: the limiter counts no slots, so these counters do (``in_use``)."""
        self._taken = itertools.repeat(None, sys.maxsize)
        self.take: Callable[[], object] = functools.partial(next, self._taken)
        self._released: list[None] = []
        self._released_before = 0
        self.new_release: Callable[[object], Release] = functools.partial(
            functools.partial, self._released.extend
        )

    @property
    def calls(self) -> int:
        return sys.maxsize - operator.length_hint(self.finished)

    def timed(self, started: float) -> None:
        """A timed call that started at ``started`` (``time.perf_counter``) returned."""
        ended = _clock()
        latencies = self.latencies
        latencies.append(ended - started)
        if len(latencies) >= FOLD_AT or ended - self._window_start >= WINDOW_S:
            self._maintain(ended, wait=False)

    def failed(self, error: BaseException, started: float | None) -> None:
        """A call ended with ``error`` (a ``PluginError``, or ``CancelledError`` for a
        cancelled ``acall``); ``started`` is None unless it was timed."""
        if isinstance(error, PluginError):
            code = error.code
            if code is ErrorCode.TOO_MANY_REQUESTS:
                return  # refused inside the instance: counted in ``rejected``, not a call
        else:
            code = ErrorCode.CANCELLED
        next(self.finished)
        with self._errors_lock:
            self._errors[code.name] = self._errors.get(code.name, 0) + 1
        if started is not None:
            self.timed(started)

    def refused(self, error: PluginError) -> None:
        """A call was refused before it ran (a bad argument, an instance not ACTIVE): an
        error by its code, neither a call nor timed."""
        code = error.code.name
        with self._errors_lock:
            self._errors[code] = self._errors.get(code, 0) + 1

    def _maintain(self, now: float, *, wait: bool) -> None:
        """Fold what is pending and, once a window has passed, adapt the sampling; one
        thread at a time (``wait=False``: skip it if another is at it)."""
        if not self._fold_lock.acquire(blocking=wait):
            return
        try:
            self._fold()
            if now - self._window_start >= WINDOW_S:
                self._adapt(now)
        finally:
            self._fold_lock.release()

    def _fold(self) -> None:
        """Move the first ``n`` pending durations into the histogram (appends landing
        meanwhile stay for the next fold), and the same for unlimited-mode releases."""
        pending = self.latencies
        n = len(pending)
        if n:
            batch = pending[:n]
            del pending[:n]
            self._histogram.add(batch)
        released = self._released
        n = len(released)
        if n:
            del released[:n]
            self._released_before += n

    def _adapt(self, now: float) -> None:
        """Time every call below ``TIMED_PER_S`` calls a second, 1 in 2**k above."""
        calls = self.calls
        rate = (calls - self._window_calls) / (now - self._window_start)
        sparseness = 0
        while rate > TIMED_PER_S << sparseness and sparseness < _MOST_SPARSE:
            sparseness += 1
        if sparseness != self._sparseness:
            self._sparseness = sparseness
            self.sampler = _sampler(sparseness)
        self._window_start, self._window_calls = now, calls

    @property
    def in_use(self) -> int:
        """Calls holding a slot when there is no limit (``take`` minus releases)."""
        with self._fold_lock:
            released = self._released_before + len(self._released)
            taken = sys.maxsize - operator.length_hint(self._taken)
        if released > FOLD_AT:
            self._maintain(_clock(), wait=False)
        return max(0, taken - released)

    def after_fork(self) -> None:
        """In a forked child: locks a vanished thread may hold are made afresh, and the
        parent's calls in flight, which never end here, are no longer counted."""
        self._fold_lock = threading.Lock()
        self._errors_lock = threading.Lock()
        self._taken = itertools.repeat(None, sys.maxsize)
        self.take = functools.partial(next, self._taken)
        self._released.clear()
        self._released_before = 0

    def snapshot(
        self, rejected: int, in_flight: int, restarts: int, usage: ProcessUsage | None
    ) -> PluginStats:
        """The statistics now; the handle supplies what its limiter and transport know."""
        self._maintain(_clock(), wait=True)
        with self._fold_lock:
            histogram = self._histogram
            samples = histogram.total
            p50, p99 = histogram.percentiles(0.50, 0.99)
            longest = histogram.max if samples else None
        with self._errors_lock:
            errors = dict(self._errors)
        if rejected:
            errors[ErrorCode.TOO_MANY_REQUESTS.name] = rejected
        return PluginStats(
            calls=self.calls,
            errors={name: errors[name] for name in sorted(errors, key=ErrorCode.__getitem__)},
            rejected=rejected,
            in_flight=in_flight,
            latency_p50_ms=_ms(p50),
            latency_p99_ms=_ms(p99),
            latency_max_ms=_ms(longest),
            latency_samples=samples,
            reloads=self.reloads,
            restarts=restarts,
            uptime_s=time.monotonic() - self._loaded_at,
            pid=None if usage is None else usage.pid,
            rss_bytes=None if usage is None else usage.rss_bytes,
            cpu_seconds=None if usage is None else usage.cpu_seconds,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3
