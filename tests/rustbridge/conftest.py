"""Fixtures for the ``plugbridge.rustbridge`` facade: the C example plugin (examples/hello-c)
compiled now, with and without its binary transport, and rustbridge's own package from PyPI
as an oracle (same library, same call: same answer).

Every test leaves this process as it found it: no private library copy of its own still
mapped (a facade plugin that was closed, or dropped, releases its copy), and nothing left
in the temp directory. rustbridge's own loader maps the original file and never unmaps it;
that mapping is not a private copy and is not counted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugbridge._native.library import mapped_count, wait_for_unmapping
from tests.native.build import build_hello_c, build_not_a_plugin

UNMAP_WITHIN = 30.0
"""Seconds a test's library copies may take to go (a worker's copy goes with the worker)."""


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``libhello_c.so`` with its test hooks and the binary transport."""
    return build_hello_c(tmp_path_factory.mktemp("rb_hello_c"))


@pytest.fixture(scope="session")
def hello_c_without_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same library without ``plugin_call_raw`` / ``rb_response_free``."""
    return build_hello_c(tmp_path_factory.mktemp("rb_hello_c_no_raw"), "-DHELLO_C_NO_BINARY")


@pytest.fixture(scope="session")
def not_a_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid shared library that exports none of the ABI."""
    return build_not_a_plugin(tmp_path_factory.mktemp("rb_not_a_plugin"))


@pytest.fixture(scope="session")
def oracle_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build of the C example for rustbridge's own loader only: rustbridge maps the file
    itself (one mapping per path, never unmapped), so it gets a path of its own."""
    return build_hello_c(tmp_path_factory.mktemp("rb_oracle"))


@pytest.fixture(autouse=True)
def nothing_left_behind(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Temp files of this test's loads go to a fresh directory that must be empty at the
    end, and every private library copy it mapped must be unmapped again."""
    directory = tmp_path_factory.mktemp("rb_tempdir")
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.delenv("PLUGBRIDGE_TRUSTED_KEYS", raising=False)
    before = mapped_count()
    yield directory
    assert wait_for_unmapping(before, UNMAP_WITHIN), "a private library copy stayed mapped"
    assert os.listdir(directory) == [], "a load left files in the temp directory"
