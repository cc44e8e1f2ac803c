"""``plugbridge check CONFIG.toml`` and ``plugbridge list``: a host file and installed plugins."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._entrypoints import ENTRY_POINT_GROUP, entry_points
from ._errors import PluginError
from ._host import PluginHost
from ._host_status import PluginStatus
from ._levels import LogLevel
from ._lifecycle import LifecycleState
from ._logsink import LogCallback

EXIT_REQUIRED_FAILED = 1
EXIT_BAD_FILE = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI."""
    check = commands.add_parser(
        "check",
        help="validate a host file and try loading each of its plugins",
        description=(
            "Validate a host file (plugbridge.toml), start each plugin, print a table of the "
            "results and stop everything. Exit code 0 unless a required plugin failed (1); "
            "2 when the file itself is invalid."
        ),
    )
    check.add_argument("config", metavar="CONFIG.toml", help="the host file to check")
    commands.add_parser(
        "list",
        help="list the plugins installed as entry points",
        description=f"List the plugins installed distributions advertise in the entry-point "
        f"group {ENTRY_POINT_GROUP!r}: name and the source string load() takes.",
    )


def run_host_command(args: argparse.Namespace) -> int | None:
    """Run a command of this module; None when ``args`` are another command's."""
    if args.command == "check":
        return _check(args.config)
    if args.command == "list":
        return _list()
    return None


def _check(config: str) -> int:
    try:
        host = PluginHost._planned_from_file(config, log_callback_for=_printer_for)
    except PluginError as exc:
        _error(exc)
        return EXIT_BAD_FILE
    try:
        required_failed = host._start_planned(strict=False)
        statuses = host.status()
    finally:
        try:
            host.close()
        except PluginError as exc:
            print(f"plugbridge: warning: {exc.message}", file=sys.stderr)
    base = Path(config).absolute().parent
    _print_table(
        ("NAME", "SOURCE", "ISOLATION", "RESULT"),
        [
            (status.name, _shown_source(status.source, base), status.isolation, _result(status))
            for status in statuses
        ],
    )
    failed = sum(status.error is not None for status in statuses)
    print(
        f"{len(statuses)} plugin(s): {len(statuses) - failed} loaded, {failed} failed"
        + (f" ({len(required_failed)} required)" if required_failed else "")
    )
    return EXIT_REQUIRED_FAILED if required_failed else 0


def _result(status: PluginStatus) -> str:
    if status.error is None and status.state is not LifecycleState.FAILED:
        meta = status.metadata
        return f"ok: {meta.name} {meta.version}, {len(meta.type_tags)} handler(s)"
    kind = "FAILED" if status.required else "FAILED (optional)"
    return f"{kind}: {status.error}"


def _list() -> int:
    installed = entry_points()
    if not installed:
        print("no plugins installed")
        return 0
    _print_table(("NAME", "SOURCE"), list(installed.items()))
    return 0


def _printer_for(name: str) -> LogCallback:
    """Plugin records at WARN and above go to stderr, named after the plugin; the host's
    own (a failed load) are left out: the table says it."""

    def print_record(level: LogLevel, target: str, message: str) -> None:
        if level >= LogLevel.WARN and target != "plugbridge":
            print(f"[{level.name:<5}] {name}: {target}: {message}", file=sys.stderr)

    return print_record


def _shown_source(source: str, base: Path) -> str:
    """A path is shown relative to the host file's directory, as the file names it,
    when that is the shorter spelling; an importable name as it is."""
    if os.path.isabs(source):
        relative = os.path.relpath(source, base)
        return relative if len(relative) < len(source) else source
    return source


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    line: Callable[[Sequence[str]], str] = lambda row: "  ".join(  # noqa: E731
        cell.ljust(width) for cell, width in zip(row, widths, strict=True)
    ).rstrip()
    print(line(header))
    for row in rows:
        print(line(row))


def _error(exc: PluginError) -> None:
    print(f"plugbridge: error {int(exc.code)} ({exc.code.name}): {exc.message}", file=sys.stderr)
