"""Which Ray the actors run on: the one already connected, ``RAY_ADDRESS``, or a local one.

plugbridge never takes over a Ray it did not start: if this process is already connected
(the user called ``ray.init``), that connection is used as it is and never shut down. Else
``RAY_ADDRESS`` names a cluster to join (left running at exit: it is not ours), or a small
local Ray is started on first use (no dashboard; the workers' output is not forwarded to
this terminal, plugbridge turns an actor's output into records itself) and shut down when
the interpreter exits (Ray's own exit hook does it too; ours says so where it matters).

Ray ties the processes a local start spawns (GCS, raylet) to the *thread* that spawned
them (``PR_SET_PDEATHSIG``): started from a thread that ends (a replica's start thread, a
request thread of a server) they would be killed with it, and every actor with them. So a
start from any thread but the main one runs on a keeper thread that lives as long as the
process.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable
from typing import Any

from .._errors import InitializationFailed, describe_exception

_lock = threading.Lock()
_started_here = False
"""A local Ray this module started (then shut down at exit)."""


def ray_module() -> Any:
    """The ``ray`` package; ``InitializationFailed`` naming the extra if it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise InitializationFailed(
            f"isolation='ray' needs Ray: pip install 'plugbridge[ray]' ({exc})"
        ) from None
    return ray


def connected_ray() -> Any:
    """``ray``, connected (once per process; concurrent first loads start one Ray)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    global _started_here
    with _lock:
        if ray.is_initialized():
            return ray
        address = os.environ.get("RAY_ADDRESS") or None
        try:
            if address is not None:
                ray.init(address=address, log_to_driver=False)
            else:
                _on_a_lasting_thread(lambda: ray.init(include_dashboard=False, log_to_driver=False))
                _started_here = True
                atexit.register(_shutdown_local)
        except Exception as exc:
            where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
            raise InitializationFailed(
                f"cannot connect to {where}: {describe_exception(exc)}"
            ) from None
    return ray


def _on_a_lasting_thread(start: Callable[[], object]) -> None:
    """Run ``start`` on the main thread, or else on a keeper thread that never ends."""
    if threading.current_thread() is threading.main_thread():
        start()
        return
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def keep() -> None:
        try:
            start()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        done.set()
        threading.Event().wait()  # the processes Ray spawned live as long as this thread

    threading.Thread(target=keep, name="plugbridge-ray-keeper", daemon=True).start()
    done.wait()
    if outcome[0] is not None:
        raise outcome[0]


def _shutdown_local() -> None:
    """At exit: end the local Ray started here, if it is still the one connected."""
    import ray

    if _started_here and ray.is_initialized():
        ray.shutdown()
