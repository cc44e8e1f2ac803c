"""The one local Ray of a test session, started only when a test needs it.

``tests/conftest.py`` imports ``ray_cluster`` so that the contract suite's ``isolation``
fixture can ask for it for its ``"ray"`` runs; tests/ray uses it directly. It sets
``RAY_ADDRESS`` while it lives, so host processes a test starts join this Ray instead of
starting their own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

_TMPDIR = os.environ.get("TMPDIR")
_TEMP = tempfile.gettempdir()
"""The temp directory as the session began: Ray's processes (and the actors' copies of
plugin code) must not live in the temp directory of whichever test happened to start Ray
(tests/bundles points TMPDIR at a directory of its own that must end empty)."""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        test_tmpdir = os.environ.get("TMPDIR")
        _set_tmpdir(_TMPDIR)  # inherited by Ray's processes and so by every actor
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=os.path.join(_TEMP, "ray"),
            )
        finally:
            _set_tmpdir(test_tmpdir)
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    try:
        yield ray
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous
        if started:
            ray.shutdown()


def _set_tmpdir(value: str | None) -> None:
    if value is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = value
