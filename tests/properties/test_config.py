"""Odd settings: config fields, log levels, reload and shutdown timeouts.

A bad setting is a ``ConfigError`` raised before anything happens; a good but extreme one
works; either way nothing leaks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import plugbridge
from plugbridge import LifecycleState, LogLevel, PluginConfig

from .conftest import (
    GOOD_REQUEST,
    KINDS,
    Failed,
    Isolation,
    Snapshot,
    Subject,
    attempt,
    bounded,
    check_example,
    source_of,
)
from .strategies import json_values, nested, odd_values, timeouts

FIELDS = tuple(f.name for f in dataclasses.fields(PluginConfig))

EDGES: dict[str, tuple[Any, ...]] = {
    "log_level": ("TRACE", "Warning", "off", " debug ", "debug\x00", "\ud800", 5, 6, -1, 2.0),
    "max_concurrent_ops": (0, 1, 2**20, 2**20 + 1, 2**31, 2**63, 2**64, 10**30),
    "worker_threads": (None, 1, 2**31, 2**63, 10**30),
    "shutdown_timeout": (0, 1e-9, 0.5, 1e9, 1e9 + 1, math.inf, math.nan, 2**63, 10**400),
    "start_timeout": (0, 1e-9, 0.5, 1e9, math.inf, 10**400),
    "call_timeout": (None, 0, 1e-9, 0.5, 1e9, math.inf, 10**400),
    "data": ({}, {"k": "\ud800"}, {"\ud800": 1}, {"k": 10**400}, {"k": math.nan}),
    "restart_on_crash": (True, False, 0, 1, "yes"),
    "max_restarts": (0, 2**63, 10**30),
    "restart_window": (0, 1e9, math.inf, 10**400),
    "restart_backoff": (0, 1e-9, 1e9, math.inf, 10**400),
}
"""Per field, values at and past the edges (fields not listed get only ``odd_values``)."""


def field_values(name: str) -> st.SearchStrategy[Any]:
    edges = st.sampled_from(EDGES[name]) if name in EDGES else st.nothing()
    if name == "data":
        deep = st.integers(1, 3000).map(lambda depth: {"k": nested(depth, "list")})
        return st.one_of(edges, st.dictionaries(st.text(max_size=4), json_values()), deep)
    return st.one_of(edges, odd_values)


field_and_value = st.sampled_from(FIELDS).flatmap(
    lambda name: st.tuples(st.just(name), field_values(name))
)
configs = st.lists(field_and_value, max_size=3).map(dict)


def build_config(settings: dict[str, Any]) -> PluginConfig | Failed:
    """Only ``ConfigError`` may come out of making a config, whatever the values."""
    outcome = attempt(lambda: PluginConfig(**settings))
    if isinstance(outcome, Failed):
        assert isinstance(outcome.error, plugbridge.ConfigError), outcome
    coerced = attempt(lambda: PluginConfig.coerce(settings))
    assert isinstance(coerced, Failed) == isinstance(outcome, Failed), (outcome, coerced)
    if isinstance(coerced, Failed):
        assert isinstance(coerced.error, plugbridge.ConfigError), coerced
    return outcome


@bounded(max_examples=300)
@given(settings=configs)
def test_any_config_values(settings: dict[str, Any]) -> None:
    config = build_config(settings)
    if isinstance(config, PluginConfig):
        copy = attempt(lambda: PluginConfig.coerce(config))  # re-validated on the way in
        assert isinstance(copy, PluginConfig), copy


@bounded(max_examples=100)
@given(
    value=st.one_of(
        odd_values,
        st.dictionaries(st.one_of(st.integers(), st.none(), st.text()), odd_values, max_size=3),
    )
)
def test_any_config_object(value: Any) -> None:
    """``load(config=...)`` takes a PluginConfig, a mapping, or None: anything else is refused."""
    outcome = attempt(lambda: PluginConfig.coerce(value))
    if isinstance(outcome, Failed):
        assert isinstance(outcome.error, plugbridge.ConfigError), outcome


@pytest.fixture(params=KINDS)
def kind_source(
    request: pytest.FixtureRequest, python_plugin: Path, native_plugin: Path
) -> tuple[str, Path, Isolation]:
    kind = str(request.param)
    return (kind, *source_of(kind, python_plugin, native_plugin))


def load_and_close(
    source: Path,
    isolation: Isolation,
    config: Any,
    reload_timeout: Any = None,
    stop_timeout: Any = None,
) -> None:
    """load → call → [reload] → shutdown; then nothing may be left behind."""
    before = Snapshot.take()
    handle = attempt(lambda: plugbridge.load(source, config=config, isolation=isolation))
    if isinstance(handle, Failed):
        before.assert_nothing_leaked(f"a load that raised {handle.error!r}")
        return
    try:
        attempt(lambda: handle.call("echo", GOOD_REQUEST))
        if reload_timeout is not None:
            reloaded = attempt(lambda: handle.reload(timeout=reload_timeout))
            if isinstance(reloaded, Failed) and isinstance(reloaded.error, plugbridge.ConfigError):
                assert handle.state is LifecycleState.ACTIVE, "a refused reload changed state"
            attempt(lambda: handle.call("echo", GOOD_REQUEST))
        stopped = attempt(lambda: handle.shutdown(stop_timeout))
        if isinstance(stopped, Failed) and isinstance(stopped.error, plugbridge.ConfigError):
            assert handle.state is LifecycleState.ACTIVE, "a refused shutdown changed state"
    finally:
        attempt(handle.shutdown)  # the one that must work (a no-op if done)
    before.assert_nothing_leaked(f"after shutdown (config {config!r})")


@bounded(max_examples=12)
@given(settings=configs)
def test_load_with_any_config(
    kind_source: tuple[str, Path, Isolation], settings: dict[str, Any]
) -> None:
    _, source, isolation = kind_source
    config = build_config(settings)
    load_and_close(source, isolation, settings)
    if isinstance(config, PluginConfig):
        load_and_close(source, isolation, config)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent_ops", 2**64),
        ("worker_threads", 2**63),
        ("data", {"k": 10**400}),
        ("shutdown_timeout", 1e9),
        ("shutdown_timeout", 0),
        ("start_timeout", 1e-9),
        ("call_timeout", 1e-9),
        ("restart_backoff", 1e9),
    ],
    ids=lambda v: repr(v)[:16],
)
def test_load_with_extreme_config(
    kind_source: tuple[str, Path, Isolation], field: str, value: Any
) -> None:
    _, source, isolation = kind_source
    load_and_close(source, isolation, {field: value})


@bounded(max_examples=12)
@given(reload_timeout=timeouts, stop_timeout=timeouts)
def test_reload_and_shutdown_with_any_timeout(
    kind_source: tuple[str, Path, Isolation], reload_timeout: Any, stop_timeout: Any
) -> None:
    _, source, isolation = kind_source
    load_and_close(source, isolation, None, reload_timeout, stop_timeout)


@pytest.fixture
def restores_level(subject: Subject) -> Iterator[Subject]:
    yield subject
    subject.handle.set_log_level(LogLevel.INFO)


@bounded(max_examples=40)
@given(
    level=st.one_of(
        odd_values,
        st.integers(min_value=-2, max_value=8),
        st.sampled_from([*LogLevel, "Trace", "WARNING", "critical", "fatal", "error "]),
    )
)
def test_set_log_level_to_anything(restores_level: Subject, level: Any) -> None:
    subject = restores_level
    handle = subject.ready()
    before = handle.log_level
    outcome = check_example(subject, lambda: handle.set_log_level(level))
    if isinstance(outcome, Failed):
        assert isinstance(outcome.error, plugbridge.ConfigError), outcome
        assert handle.log_level is before, "a refused level changed the level"
    else:
        assert isinstance(handle.log_level, LogLevel)
