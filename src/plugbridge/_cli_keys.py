"""``plugbridge keygen``, and reading a secret key's password for the commands that sign.

A password comes from ``--password-file`` (its first line; the file's trailing newline is
not part of it, as with minisign reading a line) or from a prompt on the terminal
(``getpass``; asked twice when it protects a new key). An empty password is refused: an
unencrypted key is asked for with ``--unencrypted``, never by accident.

Key handling (``_bundle.minisign``) is imported by the functions that use it, not by the
parser (see ``_cli_bundle``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._bundle.minisign import SecretKey


class CommandError(Exception):
    """A failure a command reports as one line (``plugbridge: <message>``), exit 1."""


def read_password_file(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read password file {path!r}: {exc.strerror or exc}") from None
    lines = data.splitlines()
    password = lines[0] if lines else b""
    if not password:
        raise CommandError(f"password file {path!r} is empty")
    return password


def prompt_password(prompt: str, *, confirm: bool) -> bytes:
    try:
        first = getpass.getpass(prompt)
        if not first:
            raise CommandError("no password given (use --unencrypted for a key without one)")
        if confirm and getpass.getpass("Password (again): ") != first:
            raise CommandError("the two passwords differ")
    except EOFError:
        raise CommandError("no password given (stdin closed)") from None
    return first.encode("utf-8")


def load_secret_key(path: str, password_file: str | None) -> SecretKey:
    """The secret key at ``path``, decrypted with ``--password-file`` or a prompt."""
    from ._bundle.minisign import SecretKey, SignatureError, secret_key_encrypted

    try:
        encrypted = secret_key_encrypted(path)
        password: bytes | None = None
        if encrypted:
            password = (
                read_password_file(password_file)
                if password_file is not None
                else prompt_password(f"Password for {path}: ", confirm=False)
            )
        return SecretKey.load(path, password)
    except SignatureError as exc:
        raise CommandError(str(exc)) from None


def add_keygen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = commands.add_parser(
        "keygen",
        help="make a minisign key pair for signing bundles",
        description="Make a minisign key pair: PATH (secret, scrypt-encrypted unless "
        "--unencrypted) and PATH.pub (public). Both work with the minisign tool.",
    )
    keygen.add_argument("-o", "--output", required=True, metavar="PATH", help="secret key file")
    way = keygen.add_mutually_exclusive_group()
    way.add_argument(
        "--password-file", metavar="F", help="read the password from the first line of F"
    )
    way.add_argument(
        "--unencrypted", action="store_true", help="store the secret key without a password"
    )
    keygen.add_argument("-f", "--force", action="store_true", help="overwrite an existing key pair")
    keygen.set_defaults(run=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    from ._bundle.minisign import generate

    secret_path = Path(args.output)
    public_path = Path(f"{args.output}.pub")
    if not args.force:
        for path in (secret_path, public_path):
            if path.exists():
                raise CommandError(f"{path} already exists (use --force to overwrite)")
    if args.unencrypted:
        password = None
    elif args.password_file is not None:
        password = read_password_file(args.password_file)
    else:
        password = prompt_password("Password for the new secret key: ", confirm=True)
    secret, public = generate(password)
    try:
        secret.dump(secret_path)
        public.dump(public_path)
    except OSError as exc:
        raise CommandError(
            f"cannot write {exc.filename or secret_path}: {exc.strerror or exc}"
        ) from None
    state = "unencrypted" if password is None else "encrypted"
    print(f"secret key ({state}): {secret_path}", file=sys.stderr)
    print(f"public key:  {public_path} (key id {public.key_id_hex})", file=sys.stderr)
    print(public.to_base64())
    return 0


def password_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        metavar="F",
        help="the signing key's password, from the first line of F (default: a prompt)",
    )
