"""The ``plugbridge`` console script, run as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import HELLO

EXE = shutil.which("plugbridge")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [EXE] if EXE else [sys.executable, "-m", "plugbridge"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, input=stdin, timeout=60, check=False
    )


def test_call_prints_the_response() -> None:
    result = run("call", str(HELLO), "echo", '{"message": "hi"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"message": "hi", "length": 2}


def test_call_reads_stdin_and_prints_logs_to_stderr() -> None:
    result = run(
        "call", str(HELLO), "math.add", "-", "--log-level", "debug", stdin='{"a": 2, "b": 3}'
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"result": 5}
    assert "hello_plugin: Adding 2 + 3" in result.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("call", "/no/such/plugin.py", "echo"), "error 2 (INITIALIZATION_FAILED)"),
        (("call", str(HELLO), "nope", "{}"), "error 6 (UNKNOWN_MESSAGE_TYPE)"),
        (("call", str(HELLO), "echo", "{bad json"), "error 5 (SERIALIZATION_ERROR)"),
        (("call", str(HELLO), "echo", '{"message": 3}'), "$.message"),
        (("call", str(HELLO), "echo", "{}", "--config", '{"bogus": 1}'), "error 4 (CONFIG_ERROR)"),
    ],
)
def test_failures_exit_non_zero_with_code_and_message(args: tuple[str, ...], code: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert code in result.stderr
    assert result.stdout == ""


def test_usage_errors() -> None:
    assert run("call").returncode == 2
    result = run("call", str(HELLO), "echo", "{}", "--config", "[1]")
    assert result.returncode == 2
    assert "JSON object" in result.stderr


def test_inspect(tmp_path: Path) -> None:
    result = run("inspect", str(HELLO))
    assert result.returncode == 0, result.stderr
    assert "hello-plugin" in result.stdout
    assert "math.add" in result.stdout
    as_json = json.loads(run("inspect", "--json", str(HELLO)).stdout)
    assert as_json["name"] == "hello-plugin"
    assert "bench.large" in as_json["type_tags"]
