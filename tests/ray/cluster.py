"""The one local Ray of a test session, started only when a test needs it.

``tests/conftest.py`` imports ``ray_cluster`` so that the contract suite's ``isolation``
fixture can ask for it for its ``"ray"`` runs; tests/ray uses it directly. It sets
``RAY_ADDRESS`` while it lives, so host processes a test starts join this Ray instead of
starting their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
