"""A reload under load: a new actor starts before the old one stops, and no call fails."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge

VERSIONED = """
    import time
    from plugbridge import Plugin, handler

    class Versioned(Plugin):
        name = "versioned"

        @handler("version")
        def version(self, ctx, _):
            time.sleep(0.002)
            return VERSION

    VERSION = {version}
"""


def test_reload_under_four_calling_threads_fails_no_call(
    write_plugin: Callable[..., Path],
) -> None:
    source = write_plugin(VERSIONED.format(version=1))
    failures: list[BaseException] = []
    seen: list[set[int]] = [set() for _ in range(4)]
    stop = threading.Event()
    with plugbridge.load(source, isolation="ray") as plugin:

        def caller(index: int) -> None:
            while not stop.is_set():
                try:
                    seen[index].add(plugin.call("version"))
                except BaseException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            for version in (2, 3, 4):
                write_plugin(VERSIONED.format(version=version))
                plugin.reload()
                assert plugin.call("version") == version
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    assert failures == []
    assert all(seen), seen  # every thread was calling throughout
    assert set().union(*seen) >= {1, 4}


def test_a_reload_without_room_for_the_new_actor_fails_and_the_old_one_serves(
    write_plugin: Callable[..., Path],
) -> None:
    """The new actor starts before the old one stops: an actor holding both of the test
    Ray's CPUs leaves no room for its successor, so the reload fails on time and the old
    instance keeps serving."""
    source = write_plugin(VERSIONED.format(version=1))
    # The first actor gets all the time it needs (a new Ray worker process takes seconds on
    # busy cores); the reload's own timeout bounds its successor's start.
    config = {"start_timeout": 60.0}
    with plugbridge.load(
        source, isolation="ray", config=config, ray_options={"num_cpus": 2}
    ) as plugin:
        write_plugin(VERSIONED.format(version=2))
        with pytest.raises(plugbridge.InitializationFailed, match="was not running within"):
            plugin.reload(timeout=1.0)
        assert plugin.call("version") == 1
