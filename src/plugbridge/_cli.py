"""The ``plugbridge`` command: call a plugin once, or inspect it; the other commands live in
the ``_cli_*`` modules, each with a ``register`` and a ``run_*_command``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import _cli_bundle, _cli_host, _cli_new, _cli_serve
from ._errors import PluginError
from ._levels import LogLevel
from ._load import ISOLATIONS, load

EXIT_PLUGIN_ERROR = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugbridge", description="Load a plugin and call it, or show what it handles."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("source", help="a .py file, package dir, pkg.module[:Class] or .so")
        sub.add_argument("--isolation", choices=ISOLATIONS, default="inprocess")
        sub.add_argument(
            "--log-level",
            default="warn",
            help="plugin records at this level and above are printed to stderr (default: warn)",
        )
        sub.add_argument("--config", default=None, help="PluginConfig fields as a JSON object")

    call = commands.add_parser("call", help="load, call once, print the JSON response")
    common(call)
    call.add_argument("type_tag")
    call.add_argument("json", nargs="?", default="null", help="request JSON ('-' reads stdin)")
    call.add_argument("--timeout", type=float, default=None, help="seconds")

    inspect = commands.add_parser("inspect", help="print name, version and type tags")
    common(inspect)
    inspect.add_argument("--json", action="store_true", help="print as JSON")
    _cli_bundle.register(
        commands
    )  # keygen, bundle create|inspect|verify|extract, inspect of a bundle
    _cli_host.register(commands)  # check, list
    _cli_new.register(commands)  # new
    _cli_serve.register(commands)  # serve
    return parser


def _print_record(level: LogLevel, target: str, message: str) -> None:
    print(f"[{level.name:<5}] {target}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for run in (
        _cli_bundle.run_bundle_command,
        _cli_host.run_host_command,
        _cli_new.run_new_command,
        _cli_serve.run_serve_command,
    ):
        if (done := run(args)) is not None:
            return done
    try:
        config = json.loads(args.config) if args.config else {}
    except json.JSONDecodeError as exc:
        print(f"plugbridge: --config is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(config, dict):
        print("plugbridge: --config must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    config.setdefault("log_level", args.log_level)
    try:
        with load(
            args.source, config=config, log_callback=_print_record, isolation=args.isolation
        ) as plugin:
            if args.command == "inspect":
                meta = plugin.metadata
                if args.json:
                    print(
                        json.dumps(
                            {
                                "name": meta.name,
                                "version": meta.version,
                                "type_tags": list(meta.type_tags),
                            }
                        )
                    )
                else:
                    print(f"name:      {meta.name}\nversion:   {meta.version}")
                    print(f"type tags: {', '.join(meta.type_tags) or '(none declared)'}")
                return 0
            request = sys.stdin.read() if args.json == "-" else args.json
            print(plugin.call_json(args.type_tag, request, timeout=args.timeout))
            return 0
    except PluginError as exc:
        print(
            f"plugbridge: error {int(exc.code)} ({exc.code.name}): {exc.message}", file=sys.stderr
        )
        return EXIT_PLUGIN_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
