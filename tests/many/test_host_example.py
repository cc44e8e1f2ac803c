"""examples/host: the script runs start to end, and its host file passes `plugbridge check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "host"


def test_the_host_example_shows_calls_a_watched_reload_and_statistics() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "plugins: greeter, textkit, hello_c, counter" in out
    assert "greeter  -> {'text': 'Hello, Ada!', 'style': 'plain'}" in out
    assert "textkit  -> {'slug': 'many-plugins'}" in out
    assert "hello_c  -> {'message': 'from C', 'length': 6}" in out  # the C example was built
    assert "new code serving: True" in out
    assert "greeter  -> {'text': 'HELLO, ADA!', 'style': 'loud'}" in out
    assert "greeter  -> {'text': 'HELLO, BOB!', 'style': 'loud'}" in out  # old code kept
    assert "SyntaxError" in out
    assert "fixed    : error is None" in out
    table = out.split("5. Statistics", 1)[1].splitlines()
    rows = {line.split()[0]: line.split() for line in table[2:6]}
    assert rows["greeter"][2:5] == ["ACTIVE", "3", "0"]
    assert rows["greeter"][7] == "2"  # two reloads: the edit and the fix
    assert rows["counter"][1] == "process"
    assert rows["counter"][-1].isdigit()  # a worker's pid
    # run.py worked on a copy: the repository's plugin file is untouched
    assert 'STYLE = "plain"' in (EXAMPLE / "plugins" / "greeter.py").read_text()


def test_the_example_host_file_passes_check() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plugbridge", "check", str(EXAMPLE / "plugbridge.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # hello_c is optional: without a built library it is shown as failed, exit still 0
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("greeter", "textkit", "hello_c", "counter"):
        assert name in done.stdout
