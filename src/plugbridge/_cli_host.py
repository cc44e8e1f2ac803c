"""``plugbridge check CONFIG.toml`` and ``plugbridge list``: a host file and installed plugins."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI."""
    del commands


def run_host_command(args: argparse.Namespace) -> int | None:
    """Run a command of this module; None when ``args`` are another command's."""
    del args
    return None
