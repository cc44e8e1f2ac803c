"""Watch latency: from saving a plugin file to the new code serving, through
``PluginHost.watch(debounce_s=0.2)``; and the bare ``SourceWatcher``'s save-to-callback time
for comparison (with the same debounce, and with none: detection alone).

The caller polls the handle in a tight loop that yields the GIL on each round
(``time.sleep(0)``), as a thread serving requests does between them. A loop that never
releases the GIL (also measured) makes the reload on the watcher's thread wait a switch
interval (5 ms) at each of its system calls: tens of milliseconds that are the caller's,
not the watcher's."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from plugbridge import PluginHost
from plugbridge._watch import SourceWatcher

from .harness import Row, median, ms, p99, verdict

SECTION = "watch"
DEBOUNCE_S = 0.2
TARGET_S = 0.300
DEADLINE_S = 10.0

PLUGIN = """
from plugbridge import Plugin, handler

class Versioned(Plugin):
    name = "versioned"

    @handler("version")
    def version(self, ctx, req):
        return {version}
"""


def _save_in_place(path: Path, text: str) -> None:
    path.write_text(text)


def _save_by_rename(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _host_latencies(
    root: Path,
    save: Callable[[Path, str], None],
    rounds: int,
    isolation: str = "inprocess",
    yields: bool = True,
) -> list[float]:
    """Seconds from a save to the first call answered by the new code (a tight call loop,
    yielding the GIL between calls unless ``yields`` is false)."""
    path = root / f"versioned_{save.__name__.strip('_')}_{isolation}_{yields}.py"
    path.write_text(PLUGIN.format(version=0))
    out: list[float] = []
    with PluginHost() as host:
        host.add("versioned", str(path), isolation=isolation)
        host.watch(debounce_s=DEBOUNCE_S)
        handle = host["versioned"]
        for version in range(1, rounds + 1):
            text = PLUGIN.format(version=version)
            start = time.perf_counter()
            save(path, text)
            end = start + DEADLINE_S
            while handle.call("version") != version:
                if yields:
                    time.sleep(0)
                if time.perf_counter() > end:
                    raise RuntimeError(f"version {version} never served")
            out.append(time.perf_counter() - start)
    return out


def _watcher_latencies(root: Path, debounce_s: float, rounds: int) -> list[float]:
    """Seconds from a save to ``on_change`` on the watcher's thread."""
    path = root / f"bare_{debounce_s}.py"
    path.write_text("0")
    called = threading.Event()
    stamp = [0.0]

    def on_change(name: str) -> None:
        stamp[0] = time.perf_counter()
        called.set()

    out: list[float] = []
    with SourceWatcher(on_change, debounce_s=debounce_s) as watcher:
        watcher.watch("bare", [path])
        for version in range(1, rounds + 1):
            called.clear()
            start = time.perf_counter()
            path.write_text(str(version))
            if not called.wait(DEADLINE_S):
                raise RuntimeError("on_change never ran")
            out.append(stamp[0] - start)
    return out


def _row(name: str, values: list[float], target: bool = True) -> Row:
    m = median(values)
    return Row(
        SECTION,
        name,
        ms(m),
        ms(p99(values)),
        f"debounce {m * 1e3 - DEBOUNCE_S * 1e3:+.0f} ms" if target else "",
        "≤ 300 ms" if target else "",
        verdict(m <= TARGET_S) if target else "",
    )


def run(quick: bool = False) -> list[Row]:
    rounds = 5 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        in_place = _host_latencies(root, _save_in_place, rounds)
        renamed = _host_latencies(root, _save_by_rename, rounds)
        hogged = _host_latencies(root, _save_in_place, rounds, yields=False)
        worker = _host_latencies(root, _save_in_place, rounds, isolation="process")
        bare = _watcher_latencies(root, DEBOUNCE_S, rounds)
        detection = _watcher_latencies(root, 0.0, rounds)
    return [
        _row("host.watch(0.2): save (in place) → new code serving", in_place),
        _row("host.watch(0.2): save (write-rename) → new code serving", renamed),
        _row("host.watch(0.2): save → new code, caller never yields the GIL", hogged, False),
        _row("host.watch(0.2), process isolation: save → new code serving", worker, False),
        _row("SourceWatcher(0.2): save → on_change", bare),
        _row("SourceWatcher(0): save → on_change (detection alone)", detection, False),
    ]
