"""``plugbridge bundle create|inspect|verify|extract``, ``plugbridge keygen``, and what
``plugbridge inspect x.rbp`` adds for a bundle.

``create`` is the bundle writer (``_bundle.writer``). Everything that reads goes through
the bundle reader: ``inspect`` and ``verify`` check every library of every platform and
variant by the rules of ``load`` (``_cli_report``), ``extract`` writes one library only
after ``verify_bundle`` passed it. Trusted keys come from ``--trusted-key`` or, as for
``load``, ``PLUGBRIDGE_TRUSTED_KEYS``.

Every failure is one line on stderr (``plugbridge: <problem>``) and a non-zero exit.

The bundle machinery (reader, writer, signatures, PyNaCl) is imported inside the commands
that use it, never by the parser: every ``plugbridge call`` and ``inspect`` of a plugin that
is not a bundle would otherwise pay ~25 ms of imports it does not use (~45 ms with
libsodium loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_keys import CommandError, add_keygen, password_file_argument
from ._errors import PluginError

if TYPE_CHECKING:
    from ._bundle.minisign import PublicKey
    from ._cli_report import BundleReport

BUNDLE_SUFFIX = ".rbp"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------------------------
# Registration and dispatch


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keygen`` and ``bundle …`` to the CLI, and the bundle options to ``inspect``."""
    add_keygen(commands)
    bundle = commands.add_parser(
        "bundle",
        help="make, inspect, verify or unpack a rustbridge .rbp bundle",
        description="rustbridge .rbp bundles: a manifest, one library per platform and "
        "variant, sha256 checksums and minisign signatures.",
    )
    actions = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    _add_create(actions)
    _add_inspect(actions)
    _add_verify(actions)
    _add_extract(actions)
    inspect = commands.choices.get("inspect")
    if inspect is not None:
        inspect.add_argument("--variant", default=None, help="for a bundle: the variant to load")
        _trusted_key_argument(inspect)


def run_bundle_command(args: argparse.Namespace) -> int | None:
    """Run a command of this module (``plugbridge inspect`` of a bundle included); None
    when ``args`` are another command's."""
    run: Command | None = getattr(args, "run", None)
    if run is None and args.command == "inspect" and is_bundle(args.source):
        run = _inspect_source
    if run is None:
        return None
    try:
        return run(args)
    except KeyboardInterrupt:
        print("plugbridge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (``| head``): no message, no flush error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Exception as exc:  # a command line answers in one line, whatever went wrong
        print(f"plugbridge: {' '.join(_one_line(exc).split())}", file=sys.stderr)
    return EXIT_FAILED


def _one_line(exc: Exception) -> str:
    """A command's failure in one line (a command that fails after printing what it found
    raises ``CommandError`` too)."""
    from ._bundle.minisign import SignatureError
    from ._bundle.writer import BundleWriteError

    if isinstance(exc, CommandError | BundleWriteError | SignatureError):
        return str(exc)
    if isinstance(exc, PluginError):
        return exc.message
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


def is_bundle(source: str) -> bool:
    return Path(source).suffix == BUNDLE_SUFFIX


def _trusted_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted-key",
        action="append",
        default=None,
        metavar="KEY",
        help="a minisign public key (base64 'RW…' or a .pub file) signatures must be made "
        "by; repeatable (default: the files listed in PLUGBRIDGE_TRUSTED_KEYS)",
    )


def _trusted_keys(args: argparse.Namespace) -> tuple[PublicKey, ...] | None:
    from ._bundle.keys import trusted_keys_for_load

    return trusted_keys_for_load(args.trusted_key)


def _checked(path: str, args: argparse.Namespace) -> BundleReport:
    """The bundle at ``path``, every library and schema checked against the trusted keys
    (``report.trusted_keys``) as ``load`` would."""
    from ._cli_report import check_bundle

    return check_bundle(path, _trusted_keys(args))


# ---------------------------------------------------------------------------------------
# bundle create


def _add_create(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    create = actions.add_parser(
        "create",
        help="write a bundle",
        description="Write a rustbridge bundle. With --sign-key, the manifest and every "
        "library are signed and the public key is embedded (derived from the secret key).",
    )
    create.add_argument("-o", "--output", metavar="OUT.rbp", help="default: NAME-VERSION.rbp")
    create.add_argument("--name", required=True, help="the plugin's name")
    create.add_argument("--version", required=True, help="the plugin's version")
    create.add_argument("--description", default=None)
    create.add_argument(
        "--lib",
        action="append",
        required=True,
        metavar="PLATFORM[:VARIANT]:PATH",
        help="a library (variant default: release); repeatable",
    )
    create.add_argument(
        "--schema", action="append", default=[], metavar="PATH[:NAME]", help="repeatable"
    )
    create.add_argument(
        "--sbom", action="append", default=[], metavar="PATH[:NAME]", help="repeatable"
    )
    create.add_argument("--notices", default=None, metavar="PATH")
    create.add_argument("--license", default=None, metavar="PATH")
    create.add_argument(
        "--metadata", action="append", default=[], metavar="K=V", help="build_info.custom"
    )
    create.add_argument(
        "--no-build-info", action="store_true", help="leave out who built it and when"
    )
    create.add_argument(
        "--bundle-version",
        default=None,
        metavar="VERSION",
        help="the manifest format to write (default: the newest the writer knows); one it "
        "cannot write is refused with the list of those it can",
    )
    create.add_argument("--sign-key", default=None, metavar="SECRET", help="minisign secret key")
    password_file_argument(create)
    create.set_defaults(run=_create)


def _create(args: argparse.Namespace) -> int:
    from ._bundle.minisign import format_key_id
    from ._bundle.writer import (
        BUNDLE_VERSION,
        parse_file_spec,
        parse_library_spec,
        write_bundle,
    )
    from ._cli_keys import load_secret_key

    if args.password_file is not None and args.sign_key is None:
        raise CommandError("--password-file is for --sign-key")
    metadata: dict[str, str] = {}
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--metadata {item!r} is not K=V")
        metadata[key] = value
    libraries = [parse_library_spec(spec) for spec in args.lib]
    sign_key = load_secret_key(args.sign_key, args.password_file) if args.sign_key else None
    out = Path(args.output or f"{args.name}-{args.version}{BUNDLE_SUFFIX}")
    manifest = write_bundle(
        out,
        name=args.name,
        version=args.version,
        description=args.description,
        libraries=libraries,
        schemas=[parse_file_spec(spec) for spec in args.schema],
        sboms=[parse_file_spec(spec) for spec in args.sbom],
        notices=_optional_path(args.notices),
        license_file=_optional_path(args.license),
        metadata=metadata,
        build_info=not args.no_build_info,
        bundle_version=BUNDLE_VERSION if args.bundle_version is None else args.bundle_version,
        sign_key=sign_key,
    )
    count = sum(len(p.variants) for p in manifest.platforms.values())
    signed = f"signed by key {format_key_id(sign_key.key_id)}" if sign_key else "unsigned"
    libraries_text = f"{count} librar{'y' if count == 1 else 'ies'}"
    print(f"wrote {out}: {libraries_text}, {signed}", file=sys.stderr)
    print(out)
    return 0


def _optional_path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


# ---------------------------------------------------------------------------------------
# bundle inspect / verify


def _add_inspect(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inspect = actions.add_parser(
        "inspect",
        help="show a bundle's manifest, libraries, checks and signature status",
        description="Show a bundle's manifest, platforms and variants, with every checksum "
        "and signature checked. Exit 0 even when a check fails (see 'bundle verify').",
    )
    inspect.add_argument("bundle", metavar="B")
    inspect.add_argument("--json", action="store_true", help="print as JSON")
    _trusted_key_argument(inspect)
    inspect.set_defaults(run=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from ._bundle.platform import current_platform
    from ._cli_report import print_report, report_json

    report = _checked(args.bundle, args)
    if args.json:
        print(json.dumps(report_json(report, current_platform()), indent=2))
    else:
        print_report(report, current_platform())
    return 0


def _add_verify(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = actions.add_parser(
        "verify",
        help="check every checksum and signature; exit 0 only if all hold",
        description="Check the manifest, every library of every platform and variant, and "
        "every schema. With trusted keys (--trusted-key, or PLUGBRIDGE_TRUSTED_KEYS), the "
        "manifest and every library must be signed by one of them; without, signatures "
        "present are checked against the bundle's own key. Exit 0 only if every check holds.",
    )
    verify.add_argument("bundle", metavar="B")
    _trusted_key_argument(verify)
    verify.set_defaults(run=_verify)


def _verify(args: argparse.Namespace) -> int:
    from ._bundle.keys import describe_keys

    report = _checked(args.bundle, args)
    for lib in report.libraries:
        where = f"{lib.platform}/{lib.variant}"
        if lib.error is None:
            print(f"ok      {where}: {lib.library} ({lib.trust})")
        else:
            print(f"FAILED  {where}: {lib.error}")
    for schema in report.schemas:
        print(
            f"ok      schema {schema.name}" if schema.error is None else f"FAILED  {schema.error}"
        )
    problems = report.problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CommandError(f"bundle {args.bundle} failed verification: {problems[0]}{more}")
    keys = report.trusted_keys
    trusted_by = f" by {describe_keys(keys)}" if keys else ""
    print(f"bundle {args.bundle}: verified, {report.trust}{trusted_by}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------
# bundle extract


def _add_extract(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    extract = actions.add_parser(
        "extract",
        help="write one verified library of a bundle into a directory",
        description="Check the bundle as 'load' does, then write the library of PLATFORM "
        "(default: this machine's) and VARIANT (default: release) into DIR.",
    )
    extract.add_argument("bundle", metavar="B")
    extract.add_argument("-o", "--output", required=True, metavar="DIR")
    extract.add_argument("--platform", default=None)
    extract.add_argument("--variant", default=None)
    extract.add_argument("-f", "--force", action="store_true", help="overwrite the file")
    _trusted_key_argument(extract)
    extract.set_defaults(run=_extract)


def _extract(args: argparse.Namespace) -> int:
    from ._bundle.verify import verify_bundle

    verified = verify_bundle(args.bundle, args.variant, _trusted_keys(args), args.platform)
    directory = Path(args.output)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / verified.library.file_name
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o755)
    except FileExistsError:
        raise CommandError(f"{target} already exists (use --force to overwrite)") from None
    with os.fdopen(fd, "wb") as out:
        out.write(verified.library.data)
    where = f"{verified.platform}/{verified.variant}"
    print(f"extracted {where} ({verified.library.trust}) to {target}", file=sys.stderr)
    print(target)
    return 0


# ---------------------------------------------------------------------------------------
# plugbridge inspect x.rbp


def _inspect_source(args: argparse.Namespace) -> int:
    """``plugbridge inspect`` of a bundle: load it as ``call`` would (name, version, type
    tags, trust) and show what the bundle holds around it."""
    from ._bundle.manifest import DEFAULT_VARIANT
    from ._bundle.platform import current_platform
    from ._cli_report import print_report, report_json
    from ._levels import LogLevel
    from ._load import load

    report = _checked(args.source, args)
    try:
        config = json.loads(args.config) if args.config else {}
    except json.JSONDecodeError as exc:
        raise CommandError(f"--config is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CommandError("--config must be a JSON object")
    config.setdefault("log_level", args.log_level)

    def log(level: LogLevel, target: str, message: str) -> None:
        print(f"[{level.name:<5}] {target}: {message}", file=sys.stderr)

    loaded: dict[str, Any] = {}
    failure: str | None = None
    try:
        with load(
            args.source,
            config=config,
            log_callback=log,
            isolation=args.isolation,
            variant=args.variant,
            trusted_keys=[key.to_base64() for key in report.trusted_keys or ()],
        ) as plugin:
            meta = plugin.metadata
            loaded = {
                "name": meta.name,
                "version": meta.version,
                "type_tags": list(meta.type_tags),
                "trust": meta.trust,
            }
    except PluginError as exc:
        failure = f"error {int(exc.code)} ({exc.code.name}): {exc.message}"
    here = current_platform()
    if args.json:
        print(json.dumps({**loaded, "load_error": failure, "bundle": report_json(report, here)}))
    else:
        if loaded:
            print(f"loaded:        {args.variant or DEFAULT_VARIANT} for {here}: {loaded['trust']}")
            print(f"type tags:     {', '.join(loaded['type_tags']) or '(none declared)'}")
        else:
            print(f"loaded:        no: {failure}")
        print_report(report, here)
    if failure is not None:
        raise CommandError(f"cannot load {args.source}: {failure}")
    return 0
