"""Many plugins behind one PluginHost: a TOML file, calls, a watched edit, statistics.

Run it with ``python examples/host/run.py`` (after ``pip install -e .``). It copies this
directory (and the C example, which it builds with ``make`` when a C compiler is there) to
a temporary directory, so the edit it makes never touches the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from plugbridge import LifecycleState, LogLevel, PluginHost

HERE = Path(__file__).resolve().parent
HELLO_C = HERE.parent / "hello-c"


def on_log(level: LogLevel, target: str, message: str) -> None:
    print(f"    [{level.name:<5}] {target}: {message}")


def build_c_example(into: Path) -> None:
    # The repository's layout: examples/hello-c builds against ../../include.
    target = into / "examples" / "hello-c"
    shutil.copytree(HELLO_C, target, ignore=shutil.ignore_patterns("*.so"))
    shutil.copytree(HERE.parent.parent / "include", into / "include")
    try:
        subprocess.run(["make", "-s", "-C", str(target)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"   (no C build here: {exc}; hello_c is optional and will be listed FAILED)")


def wait_for(predicate: Callable[[], bool], limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def print_table(host: PluginHost) -> None:
    print(
        f"   {'name':<9} {'isolation':<10} {'state':<7} {'calls':>5} {'errors':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'reloads':>7}  pid"
    )
    for s in host.status():
        st = s.stats
        p50 = "-" if st.latency_p50_ms is None else f"{st.latency_p50_ms:.3f}"
        p99 = "-" if st.latency_p99_ms is None else f"{st.latency_p99_ms:.3f}"
        print(
            f"   {s.name:<9} {s.isolation:<10} {s.state.name:<7} {st.calls:>5} "
            f"{sum(st.errors.values()):>6} {p50:>7} {p99:>7} {st.reloads:>7}  "
            f"{st.pid or '(in-process)'}"
        )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="plugbridge-host-") as tmp:
        root = Path(tmp)
        host_dir = root / "examples" / "host"
        shutil.copytree(HERE, host_dir, ignore=shutil.ignore_patterns("__pycache__"))
        build_c_example(root)
        config = host_dir / "plugbridge.toml"

        print("1. Start every plugin of plugbridge.toml (concurrently)")
        with PluginHost.from_file(config, log_callback=on_log) as host:
            print(f"   plugins: {', '.join(host.names())}")

            print("2. Call each")
            print("   greeter  ->", host["greeter"].call("greet", {"name": "Ada"}))
            print("   textkit  ->", host["textkit"].call("words", {"text": "one two three"}))
            print("   textkit  ->", host["textkit"].call("slug", {"text": "Many Plugins"}))
            if host["hello_c"].state is LifecycleState.ACTIVE:
                print("   hello_c  ->", host["hello_c"].call("echo", {"message": "from C"}))
            for _ in range(3):
                answer = host["counter"].call("increment", {"by": 2})
            print("   counter  ->", answer, "(in its own worker process)")

            print("3. Watch the files, then edit greeter.py: the host reloads it alone")
            host.watch(debounce_s=0.2)
            greeter = host_dir / "plugins" / "greeter.py"
            saved = time.monotonic()
            greeter.write_text(greeter.read_text().replace('STYLE = "plain"', 'STYLE = "loud"'))
            changed = wait_for(lambda: host["greeter"].stats().reloads == 1)
            took = (time.monotonic() - saved) * 1000
            print(f"   new code serving: {changed}, {took:.0f} ms after the save")
            print("   greeter  ->", host["greeter"].call("greet", {"name": "Ada"}))

            print("4. A broken edit: the old code keeps serving, the error is in the status")
            broken = "\ndef broken(:\n"
            greeter.write_text(greeter.read_text() + broken)
            wait_for(lambda: host.status()[0].error is not None)
            print("   greeter  ->", host["greeter"].call("greet", {"name": "Bob"}))
            print("   error    :", (host.status()[0].error or "").splitlines()[0])
            greeter.write_text(greeter.read_text().replace(broken, ""))
            wait_for(lambda: host.status()[0].error is None)
            print("   fixed    : error is", host.status()[0].error)

            print("5. Statistics")
            print_table(host)
        print("6. Closed: every plugin stopped, the watcher too")
    return 0


if __name__ == "__main__":
    sys.exit(main())
