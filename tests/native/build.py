"""Build the C hello plugin (examples/hello-c) with the machine's C compiler, for the tests
and the benchmarks (``benchmarks.bench_native`` imports it from here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELLO_C = ROOT / "examples" / "hello-c"
SOURCES = ("hello_plugin.c", "json_lite.c")


def compiler() -> str:
    found = shutil.which(os.environ.get("CC", "cc"))
    if found is None:
        raise RuntimeError("no C compiler: the native tests need `cc` (or $CC) on PATH")
    return found


def build_hello_c(dest: Path, *defines: str, hooks: bool = True) -> Path:
    """Compile ``libhello_c.so`` into ``dest`` (made if missing), with the test hooks unless
    told not to, and ``defines`` (``-DHELLO_C_NO_BINARY``, ...). The benchmarks build it
    here too (without the hooks), so both measure and test the same library."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "libhello_c.so"
    command = [
        compiler(), "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
        *(["-DHELLO_C_TEST_HOOKS"] if hooks else []), *defines,
        f"-I{ROOT / 'include'}", "-o", str(out),
        *(str(HELLO_C / name) for name in SOURCES), "-lpthread",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    return out


def build_not_a_plugin(dest: Path) -> Path:
    """A valid shared library that exports none of the ABI."""
    source = dest / "not_a_plugin.c"
    source.write_text("int not_a_plugin(void) { return 42; }\n")
    out = dest / "libnot_a_plugin.so"
    subprocess.run(
        [compiler(), "-shared", "-fPIC", "-o", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return out


def private_copies_mapped() -> int:
    """Distinct private library copies mapped into this process right now."""
    with open("/proc/self/maps") as maps:
        paths = {line.split(None, 5)[-1] for line in maps if "plugbridge-native-" in line}
    return len(paths)


def private_copies_on_disk() -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("plugbridge-native-")]
