"""Native plugins in an actor: a bare library and a bundle travel as their bytes (the
bundle checked on the host), so they run without the host's files; replicas spread over
several actors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import plugbridge
from plugbridge._bundle.platform import current_platform
from plugbridge._bundle.writer import LibraryInput, write_bundle
from tests.native.build import build_hello_c

from ..conftest import HELLO


@pytest.fixture(scope="module")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c"))


def test_a_bare_library_runs_from_its_shipped_bytes(hello_c: Path, tmp_path: Path) -> None:
    host_only = tmp_path / "host_only"
    host_only.mkdir()
    library = Path(shutil.copy(hello_c, host_only))
    with plugbridge.load(library, isolation="ray") as plugin:
        shutil.rmtree(host_only)
        assert plugin.call("echo", {"message": "hi"}) == {"message": "hi", "length": 2}
        assert plugin.metadata.name == "hello_c"
        assert plugin.stats().pid not in (None, os.getpid())


def test_a_bundle_is_checked_on_the_host_and_runs_in_the_actor(
    hello_c: Path, tmp_path: Path
) -> None:
    platform = current_platform()
    assert platform is not None
    bundle = tmp_path / "hello.rbp"
    write_bundle(
        bundle,
        name="hello-bundled",
        version="2.0.0",
        libraries=[LibraryInput(platform, "release", hello_c)],
    )
    with plugbridge.load(bundle, isolation="ray") as plugin:
        bundle.unlink()
        assert plugin.call("echo", {"message": "x"}) == {"message": "x", "length": 1}
        assert (plugin.metadata.name, plugin.metadata.version) == ("hello-bundled", "2.0.0")
        assert plugin.metadata.trust == "unsigned"
        with pytest.raises(plugbridge.BundleError):  # a reload reads the bundle again
            plugin.reload()
        assert plugin.call("echo", {"message": "y"}) == {"message": "y", "length": 1}


def test_replicas_are_separate_actors_and_reload_one_at_a_time() -> None:
    with plugbridge.load(HELLO, isolation="ray", replicas=2) as plugin:
        assert plugin.call("echo", {"message": "x"}) == {"message": "x", "length": 1}
        assert plugin.stats().pid is None  # several processes
        transports = [r.transport for r in plugin._transport._slots]  # type: ignore[attr-defined]
        pids = {t.process_usage().pid for t in transports}
        assert len(pids) == 2 and os.getpid() not in pids
        plugin.reload()
        assert plugin.call("echo", {"message": "y"}) == {"message": "y", "length": 1}
