"""``plugbridge serve CONFIG.toml``: a host's plugins over HTTP (the gateway)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI."""
    del commands


def run_serve_command(args: argparse.Namespace) -> int | None:
    """Run a command of this module; None when ``args`` are another command's."""
    del args
    return None
