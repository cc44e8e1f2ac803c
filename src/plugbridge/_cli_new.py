"""``plugbridge new NAME [-o DIR]``: write a ready-to-build plugin project.

The project (``_newproject``) installs with pip, advertises its plugin as an entry point
and carries a test that passes as written. Bad input (an invalid name, a target that is a
file or a directory with something in it) is one line on stderr and exit code 2; a write
that fails is one line and exit code 1, with nothing left half-written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EXIT_WRITE_FAILED = 1
EXIT_USAGE = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI."""
    new = commands.add_parser(
        "new",
        help="write a ready-to-build plugin project",
        description="Write a plugin project: pyproject.toml (hatchling, with the plugin as "
        "an entry point in the group plugbridge.plugins), a package with one plugin and two "
        "typed handlers, a test that loads it through plugbridge, and a README.",
    )
    new.add_argument(
        "name",
        metavar="NAME",
        help="the plugin's name, e.g. hello-world: letters, digits, '-' and '_'; "
        "the package is its snake_case form (hello_world)",
    )
    new.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="the project directory, absent or empty (default: ./NAME)",
    )


def run_new_command(args: argparse.Namespace) -> int | None:
    """Run a command of this module; None when ``args`` are another command's."""
    if args.command != "new":
        return None
    from . import __version__
    from ._newproject import ProjectError, ProjectNames, check_target, render, write_project

    target = Path(args.output if args.output is not None else args.name)
    try:
        names = ProjectNames.from_name(args.name)
        check_target(target)
    except ProjectError as exc:
        print(f"plugbridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files = render(names, __version__)
    try:
        write_project(target, files)
    except ProjectError as exc:  # the target was filled meanwhile
        print(f"plugbridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"plugbridge: cannot write the project in {target}: {exc}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(f"Created the plugin project {names.name} in {target}:")
    for relative in files:
        print(f"  {relative}")
    request = shlex.quote('{"name": "Ada"}')
    print(
        "\nNext steps:\n"
        f"  cd {shlex.quote(str(target))}\n"
        "  python -m pip install -e '.[test]'\n"
        "  python -m pytest\n"
        f"  plugbridge call {names.source} greet {request}\n"
        f"  plugbridge list                 # shows {names.name}, found by its entry point"
    )
    return 0
