"""The rustbridge drop-in (``plugbridge.rustbridge``): its ``call`` and ``call_raw_bytes``
against plugbridge's own handle (``call_json`` / ``call_raw``: what the facade may add is
at most 0.3 µs) and against rustbridge's own Python host (``rustbridge`` on PyPI).

All three run on the same build of examples/hello-c, in the same run, sampled in
alternating blocks so that drift on a busy machine hits them alike: the echo tag on the
JSON path, rustbridge's MSG_BENCH_SMALL struct (id 1, 76 bytes in, 80 out) on the binary
one. rustbridge's host gets a copy of the library at a path of its own: it maps the file
itself, once per path, and never unmaps it, so it must not share a mapping with anything.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import plugbridge
from plugbridge.rustbridge import NativePluginLoader

from .bench_native import MSG_BENCH_SMALL, build, check_small, small_request
from .harness import Row, median, p99, ratio, sample, us, verdict

SECTION = "rustbridge facade"
ECHO = json.dumps({"message": "hello world"}, separators=(",", ":"))
ECHO_REPLY = {"message": "hello world", "length": 11}
OVERHEAD_TARGET = 0.3e-6
"""Seconds the facade may add to a call over plugbridge's own handle."""
BLOCKS = 10


def _alternating(rounds: int, *fns: Callable[[], object]) -> list[list[float]]:
    """``sample`` each of ``fns`` ``rounds`` times, in ``BLOCKS`` turns taken in order."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(BLOCKS):
        for values, fn in zip(samples, fns, strict=True):
            values.extend(sample(fn, rounds // BLOCKS, warmup=50))
    return samples


def _row(name: str, values: list[float], baseline: float | None = None) -> Row:
    m = median(values)
    return Row(
        SECTION, name, us(m), us(p99(values)), "" if baseline is None else ratio(m, baseline)
    )


def _overhead_row(name: str, facade: list[float], native: list[float]) -> Row:
    extra = median(facade) - median(native)
    return Row(
        SECTION, name, f"{extra * 1e6:+.2f} µs", "", "", f"≤ +{OVERHEAD_TARGET * 1e6:.1f} µs",
        verdict(extra <= OVERHEAD_TARGET),
    )  # fmt: skip


def _rustbridge_host(stack: ExitStack, library: Path) -> Any:
    """rustbridge's own plugin on a private copy of ``library``; None if not installed."""
    if importlib.util.find_spec("rustbridge") is None:
        return None
    from rustbridge import NativePluginLoader as TheirLoader

    directory = Path(tempfile.mkdtemp(prefix="bench-rustbridge-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    copy = directory / library.name
    shutil.copyfile(library, copy)
    theirs = TheirLoader.load(str(copy))
    stack.callback(theirs.close)
    return theirs


def run(quick: bool = False) -> list[Row]:
    rounds = 5_000 if quick else 50_000
    request = bytes(small_request())
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        library = build(Path(tmp))
        handle = stack.enter_context(plugbridge.load(library))
        facade = stack.enter_context(NativePluginLoader.load(library))
        theirs = _rustbridge_host(stack, library)

        # Same answers from every host before any timing.
        for call_json in (handle.call_json, facade.call):
            assert json.loads(call_json("echo", ECHO)) == ECHO_REPLY
        check_small(handle.call_raw(MSG_BENCH_SMALL, request))
        check_small(facade.call_raw_bytes(MSG_BENCH_SMALL, request))

        json_fns: list[Callable[[], object]] = [
            lambda: handle.call_json("echo", ECHO),
            lambda: facade.call("echo", ECHO),
        ]
        raw_fns: list[Callable[[], object]] = [
            lambda: handle.call_raw(MSG_BENCH_SMALL, request),
            lambda: facade.call_raw_bytes(MSG_BENCH_SMALL, request),
        ]
        if theirs is not None:
            assert json.loads(theirs.call("echo", ECHO)) == ECHO_REPLY
            check_small(theirs.call_raw_bytes(MSG_BENCH_SMALL, request))
            json_fns.append(lambda: theirs.call("echo", ECHO))
            raw_fns.append(lambda: theirs.call_raw_bytes(MSG_BENCH_SMALL, request))

        json_samples = _alternating(rounds, *json_fns)
        raw_samples = _alternating(rounds, *raw_fns)
    return _rows("echo", "call_json", "call", json_samples) + _rows(
        "bench.small raw (id 1)", "call_raw", "call_raw_bytes", raw_samples
    )


def _rows(what: str, native: str, method: str, samples: list[list[float]]) -> list[Row]:
    """The rows of one transport: [native, facade] samples, and rustbridge's if it ran."""
    ours, facade = samples[0], samples[1]
    theirs = samples[2] if len(samples) > 2 else None
    base = None if theirs is None else median(theirs)
    rows = []
    if theirs is None:
        rows.append(Row(SECTION, f"rustbridge (PyPI) {method} {what}", "n/a",
                        note="rustbridge not installed"))  # fmt: skip
    else:
        rows.append(_row(f"rustbridge (PyPI) plugin.{method} {what}, same library (baseline)",
                         theirs))  # fmt: skip
    rows += [
        _row(f"plugbridge handle.{native} {what}", ours, base),
        _row(f"facade plugin.{method} {what}", facade, base),
        _overhead_row(f"facade plugin.{method} over handle.{native}, {what}", facade, ours),
    ]
    return rows


if __name__ == "__main__":
    for row in run(True):
        print(row)
