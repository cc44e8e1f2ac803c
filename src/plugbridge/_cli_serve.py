"""``plugbridge serve CONFIG.toml``: a host's plugins over HTTP (the gateway)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._errors import PluginError
from ._levels import LogLevel
from ._logsink import LogCallback

EXIT_PLUGIN_ERROR = 1
EXIT_USAGE = 2
TOKEN_VARIABLE = "PLUGBRIDGE_TOKEN"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI."""
    serve = commands.add_parser(
        "serve",
        help="serve a host file's plugins over HTTP (the gateway and its admin page)",
        description=(
            "Start the plugins of a host file and serve them over HTTP: calls, status, log "
            "levels, reloads, live logs, /metrics, /healthz, /openapi.json and an admin page "
            "at /. SIGINT or SIGTERM lets calls in flight finish, stops the plugins and exits "
            f"0. With a token (--token-file, or the {TOKEN_VARIABLE} environment variable) "
            "every request but /healthz needs 'Authorization: Bearer <token>'; binding to an "
            "address other than loopback needs one."
        ),
    )
    serve.add_argument("config", metavar="CONFIG.toml", help="the host file to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8787, help="port to listen on (default: 8787; 0: any free)"
    )
    serve.add_argument(
        "--watch", action="store_true", help="reload a plugin when its source changes on disk"
    )
    serve.add_argument(
        "--token-file",
        metavar="F",
        default=None,
        help=f"a file holding the bearer token (else ${TOKEN_VARIABLE}, if set)",
    )


def run_serve_command(args: argparse.Namespace) -> int | None:
    """Run a command of this module; None when ``args`` are another command's."""
    if args.command != "serve":
        return None
    try:
        token = _token(args.token_file)
    except _BadToken as exc:
        return _refuse(str(exc))
    from .gateway.auth import is_loopback

    if token is None and not is_loopback(args.host):
        return _refuse(
            f"refusing to serve on {args.host} without a token: set --token-file or "
            f"{TOKEN_VARIABLE}, or bind 127.0.0.1"
        )
    if not 0 <= args.port <= 65535:
        return _refuse(f"--port must be from 0 to 65535, not {args.port}")
    return _serve(args.config, args.host, args.port, token, watch=args.watch)


def _serve(config: str, bind: str, port: int, token: str | None, *, watch: bool) -> int:
    from ._host import PluginHost
    from .gateway.serve import listening_socket, serve

    try:
        sock = listening_socket(bind, port)
    except OSError as exc:
        return _refuse(f"cannot listen on {bind}:{port}: {exc.strerror or exc}", EXIT_USAGE)
    try:
        try:
            host = PluginHost.from_file(config, log_callback_for=_printer_for)
        except PluginError as exc:
            print(
                f"plugbridge: error {int(exc.code)} ({exc.code.name}): {exc.message}",
                file=sys.stderr,
            )
            return EXIT_PLUGIN_ERROR
        try:
            if watch:
                host.watch()
            address = sock.getsockname()
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            url = f"http://{shown}:{address[1]}"

            def announce() -> None:
                print(
                    f"plugbridge: serving {len(host)} plugin(s) on {url}"
                    + (" (token required)" if token else "")
                    + (", watching their sources" if watch else ""),
                    flush=True,
                )

            serve(host, sock, token=token, announce=announce)
        finally:
            try:
                host.close()
            except PluginError as exc:
                print(f"plugbridge: warning: {exc.message}", file=sys.stderr)
    except KeyboardInterrupt:  # before the server took the signals over: plugins stopped
        return 130
    finally:
        sock.close()
    print("plugbridge: stopped", flush=True)
    return 0


class _BadToken(Exception):
    """A token file that cannot be read, or holds no token."""


def _token(token_file: str | None) -> str | None:
    """The bearer token: the file's content (stripped), else the environment's; None when
    neither is given."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadToken(f"cannot read the token file {token_file}: {exc}") from None
        if not token:
            raise _BadToken(f"the token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_VARIABLE, "").strip() or None


def _refuse(message: str, code: int = EXIT_USAGE) -> int:
    print(f"plugbridge: {message}", file=sys.stderr)
    return code


def _printer_for(name: str) -> LogCallback:
    """Plugin records (those each plugin's level lets through) go to stderr."""

    def print_record(level: LogLevel, target: str, message: str) -> None:
        print(f"[{level.name:<5}] {name}: {target}: {message}", file=sys.stderr, flush=True)

    return print_record
