"""Which Ray plugbridge uses, and which one it ends: only a local one it started itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plugbridge

from ..conftest import HELLO, wait_until


def test_the_core_never_imports_ray() -> None:
    code = (
        "import sys, plugbridge\n"
        f"with plugbridge.load({str(HELLO)!r}, isolation='process') as p: p.call('echo', "
        "{'message': 'x'})\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_ray_the_user_started_is_left_running(ray_cluster: Any) -> None:
    with plugbridge.load(HELLO, isolation="ray") as plugin:
        plugin.call("echo", {"message": "x"})
    assert ray_cluster.is_initialized()
    with plugbridge.load(HELLO, isolation="ray") as plugin:  # and still usable
        assert plugin.call("echo", {"message": "y"}) == {"message": "y", "length": 1}


LOCAL = """
    import sys, threading, time, ray, plugbridge

    def first_load():  # Ray starts on a thread that ends right after
        with plugbridge.load(sys.argv[1], isolation="ray") as plugin:
            plugin.call("echo", {"message": "x"})

    thread = threading.Thread(target=first_load)
    thread.start()
    thread.join()
    time.sleep(0.5)  # had Ray's processes died with that thread, they would be gone now
    with plugbridge.load(sys.argv[1], isolation="ray", config={"start_timeout": 20}) as plugin:
        plugin.call("echo", {"message": "y"})
    print("GCS", ray.get_runtime_context().gcs_address, flush=True)
"""


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def test_a_local_ray_started_on_first_use_outlives_its_thread_and_ends_with_the_interpreter(
    tmp_path: Path, write_plugin: Callable[..., Path]
) -> None:
    """Started from a thread that then ends (Ray ties its processes to that thread), the
    local Ray keeps serving; it is gone once the interpreter has exited."""
    script = tmp_path / "local.py"
    script.write_text(textwrap.dedent(LOCAL))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, str(script), str(HELLO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    gcs = done.stdout.split("GCS ", 1)[1].split()[0]
    assert gcs != os.environ["RAY_ADDRESS"]  # its own Ray, not the session's
    assert wait_until(lambda: not _listening(gcs), timeout=30)  # shut down at exit
