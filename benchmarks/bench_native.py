"""Native plugins (rustbridge C ABI): echo through plugbridge against raw ctypes calls, and
the binary transport (rustbridge's MSG_BENCH_SMALL struct) the same way; against rustbridge's
own Python host (``rustbridge`` on PyPI) on the same library too, when it is installed.

Compiles examples/hello-c with the machine's C compiler into a temp dir first.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from tests.native.bench_small import SmallRequestRaw, SmallResponseRaw
from tests.native.build import build_hello_c

import plugbridge

from .harness import Row, median, ms, p99, ratio, sample, us, verdict

SECTION = "native"
REQUEST = {"message": "hello world"}
EXPECTED = {"message": "hello world", "length": 11}
TARGET = 1.3
RAW_TARGET = 1.3
MSG_BENCH_SMALL = 1
SMALL_JSON = {"key": "benchmark_key", "flags": 1}


def small_request() -> SmallRequestRaw:
    return SmallRequestRaw.create(SMALL_JSON["key"].encode(), flags=1)  # type: ignore[attr-defined]


def check_small(data: bytes) -> None:
    response = SmallResponseRaw.from_buffer_copy(data)
    assert response.text() == b"value_for_benchmark_key"
    assert (response.ttl_seconds, response.cache_hit) == (3600, 1)


def build(dest: Path) -> Path:
    """The C hello plugin, without its test hooks, built as the tests build it."""
    return build_hello_c(dest, hooks=False)


class _Buffer(ctypes.Structure):
    _fields_ = (
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
        ("capacity", ctypes.c_size_t),
        ("error_code", ctypes.c_uint32),
    )


class _RbResponse(ctypes.Structure):
    _fields_ = (
        ("error_code", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("capacity", ctypes.c_uint32),
        ("data", ctypes.c_void_p),
    )


_CALLBACK = ctypes.CFUNCTYPE(
    None, ctypes.c_uint8, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
)


class RawPlugin:
    """The baseline: the library driven by hand, with no plugbridge code at all."""

    def __init__(self, path: Path) -> None:
        copy = Path(tempfile.mkdtemp(prefix="bench-raw-")) / path.name
        shutil.copyfile(path, copy)  # its own mapping, apart from plugbridge's copies
        self.lib = ctypes.CDLL(str(copy), mode=os.RTLD_LOCAL)
        lib = self.lib
        lib.plugin_create.restype = ctypes.c_void_p
        lib.plugin_init.restype = ctypes.c_void_p
        lib.plugin_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, _CALLBACK]
        lib.plugin_call.restype = _Buffer
        lib.plugin_call.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.plugin_free_buffer.argtypes = [ctypes.POINTER(_Buffer)]
        lib.plugin_call_raw.restype = _RbResponse
        lib.plugin_call_raw.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.rb_response_free.argtypes = [ctypes.POINTER(_RbResponse)]
        lib.plugin_shutdown.argtypes = [ctypes.c_void_p]
        self.callback = _CALLBACK(lambda *args: None)
        config = msgspec.json.encode(plugbridge.PluginConfig().to_wire())
        self.handle = lib.plugin_init(lib.plugin_create(), config, len(config), self.callback)
        self.directory = copy.parent
        os.unlink(copy)

    def echo(self) -> Any:
        """plugin_call + copy + free + envelope decode."""
        payload = msgspec.json.encode(REQUEST)
        buffer = self.lib.plugin_call(self.handle, b"echo", payload, len(payload))
        try:
            data = ctypes.string_at(buffer.data, buffer.len)
        finally:
            self.lib.plugin_free_buffer(ctypes.byref(buffer))
        envelope = msgspec.json.decode(data)
        if buffer.error_code or envelope["status"] != "success":
            raise RuntimeError(data)
        return envelope["payload"]

    def small_raw(self, request: bytes) -> bytes:
        """plugin_call_raw + copy + free (the binary transport's baseline)."""
        response = self.lib.plugin_call_raw(self.handle, MSG_BENCH_SMALL, request, len(request))
        try:
            data = ctypes.string_at(response.data, response.len)
        finally:
            self.lib.rb_response_free(ctypes.byref(response))
        if response.error_code:
            raise RuntimeError(data)
        return data

    def close(self) -> None:
        self.lib.plugin_shutdown(self.handle)
        os.rmdir(self.directory)


def _ratio_row(name: str, values: list[float], base: float, target: str, ok: bool | None) -> Row:
    m = median(values)
    return Row(
        SECTION, name, us(m), us(p99(values)), ratio(m, base), target,
        "" if ok is None else verdict(ok),
    )  # fmt: skip


def _interleaved(rounds: int, *fns: Callable[[], object]) -> list[list[float]]:
    """``sample`` each of ``fns`` ``rounds`` times, in five turns: drift hits them alike."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(5):
        for values, fn in zip(samples, fns, strict=True):
            values.extend(sample(fn, rounds // 5))
    return samples


def _per_acall(
    acall: Callable[..., Awaitable[object]], args: tuple[Any, ...], rounds: int
) -> list[float]:
    """Seconds per ``await acall(*args)``: 20 samples, each a loop of calls in ``asyncio.run``."""
    n = max(rounds // 50, 10)

    async def many() -> None:
        for _ in range(n):
            await acall(*args)

    out = []
    for _ in range(20):
        start = time.perf_counter()
        asyncio.run(many())
        out.append((time.perf_counter() - start) / n)
    return out


def _latency_rows(library: Path, raw: RawPlugin, rounds: int) -> list[Row]:
    rows: list[Row] = []
    with plugbridge.load(library) as plugin:
        assert plugin.call("echo", REQUEST) == raw.echo() == EXPECTED
        raw_json = msgspec.json.encode(REQUEST)
        base, call, call_json = _interleaved(
            rounds,
            raw.echo,
            lambda: plugin.call("echo", REQUEST),
            lambda: plugin.call_json("echo", raw_json),
        )
        timed = sample(lambda: plugin.call("echo", REQUEST, timeout=5.0), rounds // 10)
        acall = _per_acall(plugin.acall, ("echo", REQUEST), rounds)
    base_m = median(base)
    call_m = median(call)
    rows.append(Row(SECTION, "raw ctypes plugin_call echo + copy + free + decode (baseline)",
                    us(base_m), us(p99(base))))  # fmt: skip
    rows.append(_ratio_row("call() native echo", call, base_m, f"≤ {TARGET}×",
                           call_m <= TARGET * base_m))  # fmt: skip
    rows.append(_ratio_row("call_json() native echo", call_json, base_m, "", None))
    rows.append(_ratio_row("call(timeout=5) native echo (runs on a pool thread)", timed, base_m,
                           "", None))  # fmt: skip
    rows.append(_ratio_row("acall() native echo (pool thread)", acall, base_m, "", None))
    return rows


def _raw_rows(library: Path, raw: RawPlugin, rounds: int) -> tuple[list[Row], float]:
    """``call_raw`` of the bench.small struct against plugin_call_raw + copy + free."""
    structure = small_request()
    request = bytes(structure)
    with plugbridge.load(library) as plugin:
        check_small(plugin.call_raw(MSG_BENCH_SMALL, request))
        check_small(raw.small_raw(request))

        base, call_raw, from_struct = _interleaved(
            rounds,
            lambda: raw.small_raw(request),
            lambda: plugin.call_raw(MSG_BENCH_SMALL, request),
            lambda: plugin.call_raw(MSG_BENCH_SMALL, structure),
        )
        timed = sample(lambda: plugin.call_raw(MSG_BENCH_SMALL, request, timeout=5.0), rounds // 10)
        acall = _per_acall(plugin.acall_raw, (MSG_BENCH_SMALL, request), rounds)
        json_small = sample(lambda: plugin.call("bench.small", SMALL_JSON), rounds // 5)
    base_m, raw_m = median(base), median(call_raw)
    rows = [
        Row(SECTION, "raw ctypes plugin_call_raw bench.small + copy + free (baseline)",
            us(base_m), us(p99(base))),
        _ratio_row("call_raw() native bench.small struct", call_raw, base_m,
                   f"≤ {RAW_TARGET}×", raw_m <= RAW_TARGET * base_m),
        _ratio_row("call_raw() native bench.small, request a ctypes Structure", from_struct,
                   base_m, "", None),
        _ratio_row("call_raw(timeout=5) native bench.small (pool thread)", timed, base_m,
                   "", None),
        _ratio_row("acall_raw() native bench.small (pool thread)", acall, base_m, "", None),
        _ratio_row("call() native bench.small JSON", json_small, base_m, "", None),
    ]  # fmt: skip
    return rows, base_m


def _rustbridge_rows(library: Path, raw_base: float, rounds: int) -> list[Row]:
    """rustbridge's own Python host (PyPI ``rustbridge``) on the same library, if installed."""
    if importlib.util.find_spec("rustbridge") is None:
        return [Row(SECTION, "rustbridge Python host", "n/a", note="rustbridge not installed")]
    from rustbridge import NativePluginLoader

    class Request(ctypes.Structure):  # rustbridge's own examples pack them (same layout)
        _pack_ = 1
        _fields_ = SmallRequestRaw._fields_

    class Response(ctypes.Structure):
        _pack_ = 1
        _fields_ = SmallResponseRaw._fields_

    request = Request.from_buffer_copy(bytes(small_request()))
    small_json = msgspec.json.encode(SMALL_JSON).decode()
    copy = Path(tempfile.mkdtemp(prefix="bench-rustbridge-")) / library.name
    shutil.copyfile(library, copy)  # rustbridge shares one mapping per path: its own copy
    try:
        plugin = NativePluginLoader.load(str(copy))
        try:
            check_small(bytes(plugin.call_raw(MSG_BENCH_SMALL, request, Response)))
            binary = sample(
                lambda: plugin.call_raw(MSG_BENCH_SMALL, request, Response), rounds // 5
            )
            json_call = sample(lambda: plugin.call("bench.small", small_json), rounds // 5)
        finally:
            plugin.close()
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    return [
        _ratio_row("rustbridge (PyPI) call_raw bench.small struct, same library", binary,
                   raw_base, "", None),
        _ratio_row("rustbridge (PyPI) call bench.small JSON, same library", json_call,
                   raw_base, "", None),
    ]  # fmt: skip


def _process_rows(library: Path, base_m: float, rounds: int) -> list[Row]:
    if importlib.util.find_spec("plugbridge._worker") is None:
        return [Row(SECTION, "call() native echo, isolation=process", "n/a",
                    note="the worker transport is not available")]  # fmt: skip
    request = bytes(small_request())
    with plugbridge.load(library, isolation="process") as plugin:
        assert plugin.call("echo", REQUEST) == EXPECTED
        check_small(plugin.call_raw(MSG_BENCH_SMALL, request))
        count = max(rounds // 10, 500)
        values = sample(lambda: plugin.call("echo", REQUEST), count, warmup=50)
        raw_values = sample(lambda: plugin.call_raw(MSG_BENCH_SMALL, request), count, warmup=50)
    return [
        _ratio_row("call() native echo, isolation=process", values, base_m, "", None),
        _ratio_row("call_raw() native bench.small, isolation=process (vs the echo baseline)",
                   raw_values, base_m, "", None),
    ]  # fmt: skip


def _lifecycle_rows(library: Path, quick: bool) -> list[Row]:
    loads: list[float] = []
    stops: list[float] = []
    for _ in range(20 if quick else 100):
        start = time.perf_counter()
        plugin = plugbridge.load(library)
        loads.append(time.perf_counter() - start)
        start = time.perf_counter()
        plugin.shutdown()
        stops.append(time.perf_counter() - start)
    return [
        Row(SECTION, "load() to ACTIVE (copy + dlopen + init)", ms(median(loads)), ms(p99(loads))),
        Row(SECTION, "shutdown() (plugin_shutdown + dlclose)", ms(median(stops)), ms(p99(stops))),
    ]


def run(quick: bool = False) -> list[Row]:
    rounds = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        library = build(Path(tmp))
        raw = RawPlugin(library)
        try:
            rows = _latency_rows(library, raw, rounds)
            raw_rows, raw_base = _raw_rows(library, raw, rounds)
            rows += raw_rows
            base_m = median(sample(raw.echo, rounds // 5))
        finally:
            raw.close()
        rows += _rustbridge_rows(library, raw_base, rounds)
        rows += _process_rows(library, base_m, rounds)
        rows += _lifecycle_rows(library, quick)
    return rows


def _main(run_fn: Callable[[bool], list[Row]]) -> None:
    for row in run_fn(True):
        print(row)


if __name__ == "__main__":
    _main(run)
