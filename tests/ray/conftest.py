"""Every test here runs on the session's one local Ray (``tests/ray/cluster.py``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _on_ray(ray_cluster: Any) -> Any:
    return ray_cluster


def actor_of(plugin: Any) -> Any:
    """The Ray actor behind a handle (to kill it the way an operator would)."""
    return plugin._transport._current.actor
