"""examples/rustbridge-migration: the consumer written for rustbridge's host and the same
consumer on ``plugbridge.rustbridge`` differ in their import line only, and both run, as
real programs, on the C example library and print the same results.

The one line they print differently is the facade's deliberate difference: rustbridge's
host puts the whole error envelope in a ``PluginException``'s message, the facade the
envelope's ``error_message`` (same ``error_code``). The README shows this output and this
diff; they are checked against the real ones here.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rustbridge-migration"
BEFORE = EXAMPLE / "consumer_rustbridge.py"
AFTER = EXAMPLE / "consumer_plugbridge.py"

EXPECTED = [
    "  log [INFO] hello_c: HelloPlugin (C) starting (log level info)",
    "state: ACTIVE",
    "echo: {'message': 'Hello, rustbridge!', 'length': 18}",
    "greet: {'greeting': 'Hello, Ada! Welcome to plugbridge.'}",
    "math.add: {'result': 42}",
    "fill (binary): b'abcdefgh'",
    "  log [DEBUG] hello_c: Adding 2 + 3",
    "math.add: {'result': 5}",
    "bad request: error_code=5; str: [5] Object missing required field `b`",
    "  log [INFO] hello_c: HelloPlugin (C) stopping",
    "  log [INFO] hello_c: HelloPlugin (C) stopped",
    "state after the with block: STOPPED",
]
"""What the plugbridge consumer prints (and the README shows)."""

RUSTBRIDGE_WORDING = {
    EXPECTED[8]: "bad request: error_code=5; str: [5] "
    '{"status":"error","error_code":5,"error_message":"Object missing required field `b`"}',
}
"""The lines rustbridge's host prints differently, as it prints them."""


def run(consumer: Path, library: Path) -> list[str]:
    """Run ``consumer`` on ``library`` as its own program; what it printed, line by line."""
    done = subprocess.run(
        [sys.executable, str(consumer), str(library)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def test_the_consumers_differ_in_the_import_line_only() -> None:
    before = BEFORE.read_text().splitlines()
    after = AFTER.read_text().splitlines()
    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        "-from rustbridge import LogLevel, NativePluginLoader, PluginConfig, PluginException",
        "+from plugbridge.rustbridge import LogLevel, NativePluginLoader, PluginConfig, "
        "PluginException",
    ]


def test_both_consumers_print_the_same_results(hello_c: Path) -> None:
    ours = run(AFTER, hello_c)
    theirs = run(BEFORE, hello_c)
    assert ours == EXPECTED
    assert theirs == [RUSTBRIDGE_WORDING.get(line, line) for line in EXPECTED]


def test_without_the_binary_transport_both_skip_the_binary_call(
    hello_c_without_raw: Path,
) -> None:
    expected = [line for line in EXPECTED if not line.startswith("fill (binary)")]
    assert run(AFTER, hello_c_without_raw) == expected
    assert run(BEFORE, hello_c_without_raw) == [
        RUSTBRIDGE_WORDING.get(line, line) for line in expected
    ]


def test_the_readme_shows_the_real_diff_and_output() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    diff = re.search(r"```diff\n(.*?)```", readme, re.S)
    output = re.search(r"```text\n(.*?)```", readme, re.S)
    assert diff is not None and output is not None
    shown = [line for line in diff.group(1).splitlines() if line.startswith(("+", "-"))]
    real = [
        line
        for line in difflib.unified_diff(
            BEFORE.read_text().splitlines(),
            AFTER.read_text().splitlines(),
            BEFORE.name,
            AFTER.name,
            lineterm="",
        )
        if line.startswith(("+", "-"))
    ]
    assert shown == real
    assert output.group(1).splitlines() == EXPECTED
