"""``plugbridge bundle create|inspect|verify|extract``, ``plugbridge keygen``, and what
``plugbridge inspect x.rbp`` adds for a bundle.

Reading goes through the bundle reader (``_bundle.verify``): ``inspect`` and ``verify``
check every library of every platform and variant by the same rules as ``load`` (the
manifest's signature, the library's checksum, then its signature; with trusted keys from
``--trusted-key`` or ``PLUGBRIDGE_TRUSTED_KEYS``, signatures by those keys only), and each
schema's checksum. ``extract`` writes one library only after those checks.

Every failure is one line on stderr (``plugbridge: <problem>``) and a non-zero exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ._bundle.archive import BundleArchive
from ._bundle.keys import describe_keys, trusted_keys_for_load
from ._bundle.manifest import (
    DEFAULT_VARIANT,
    MANIFEST,
    BuildInfo,
    Manifest,
    SchemaInfo,
    checksum_hex,
    parse_manifest,
    signature_name,
)
from ._bundle.minisign import PublicKey, SignatureError, format_key_id, signature_key_id
from ._bundle.platform import current_platform
from ._bundle.verify import (
    MANIFEST_LIMIT,
    SELF_SIGNED,
    SIGNATURE_LIMIT,
    TRUSTED,
    UNSIGNED,
    verify_bundle,
)
from ._bundle.writer import (
    BUNDLE_VERSION,
    WRITABLE_VERSIONS,
    BundleWriteError,
    parse_file_spec,
    parse_library_spec,
    write_bundle,
)
from ._cli_keys import CommandError, add_keygen, load_secret_key, password_file_argument
from ._errors import BundleError, PluginError

BUNDLE_SUFFIX = ".rbp"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
_TRUST_ORDER = (TRUSTED, SELF_SIGNED, UNSIGNED)

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
    except (CommandError, BundleWriteError, SignatureError) as exc:
        _fail(str(exc))
    except PluginError as exc:
        _fail(exc.message)
    except BrokenPipeError:  # stdout closed early (``| head``): no message, no flush error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    return EXIT_FAILED


def is_bundle(source: str) -> bool:
    return Path(source).suffix == BUNDLE_SUFFIX


def _fail(message: str) -> None:
    print(f"plugbridge: {' '.join(message.split())}", file=sys.stderr)


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
    return trusted_keys_for_load(args.trusted_key)


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
    create.add_argument("--bundle-version", choices=WRITABLE_VERSIONS, default=BUNDLE_VERSION)
    create.add_argument("--sign-key", default=None, metavar="SECRET", help="minisign secret key")
    password_file_argument(create)
    create.set_defaults(run=_create)


def _create(args: argparse.Namespace) -> int:
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
        bundle_version=args.bundle_version,
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
# Checking a whole bundle (inspect, verify)


@dataclass
class LibraryCheck:
    platform: str
    variant: str
    library: str
    checksum: str
    signed_by: str | None
    trust: str | None = None
    error: str | None = None


@dataclass
class SchemaCheck:
    name: str
    info: SchemaInfo
    error: str | None = None


@dataclass
class BundleReport:
    path: str
    manifest: Manifest
    manifest_json: Any
    manifest_signed_by: str | None
    trusted_keys: tuple[PublicKey, ...] | None
    libraries: list[LibraryCheck] = field(default_factory=list)
    schemas: list[SchemaCheck] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        for lib in self.libraries:
            if lib.error is not None and lib.error not in found:
                found.append(lib.error)
        found += [s.error for s in self.schemas if s.error is not None]
        return found

    @property
    def trust(self) -> str | None:
        """The weakest trust of every library; None if any failed."""
        if self.problems:
            return None
        trusts = [lib.trust or UNSIGNED for lib in self.libraries]
        return max(trusts, key=_TRUST_ORDER.index) if trusts else UNSIGNED


def check_bundle(path: str, trusted_keys: tuple[PublicKey, ...] | None) -> BundleReport:
    """Check every library and schema of the bundle at ``path``; ``BundleError`` only for
    what makes the rest unreadable (no zip, no or invalid manifest)."""
    with BundleArchive(path) as archive:
        if not archive.has(MANIFEST):
            raise BundleError(f"bundle {archive.path} has no {MANIFEST}")
        raw = archive.read(MANIFEST, MANIFEST_LIMIT)
        manifest = parse_manifest(raw)
        report = BundleReport(
            path=path,
            manifest=manifest,
            manifest_json=json.loads(raw),
            manifest_signed_by=_signer(archive, MANIFEST),
            trusted_keys=trusted_keys,
        )
        for platform, info in sorted(manifest.platforms.items()):
            for variant in _variant_order(info.variants):
                vinfo = info.variants[variant]
                report.libraries.append(
                    LibraryCheck(
                        platform,
                        variant,
                        vinfo.library,
                        vinfo.checksum,
                        _signer(archive, vinfo.library),
                    )
                )
        report.schemas = _check_schemas(archive, manifest)
    for lib in report.libraries:
        try:
            verified = verify_bundle(path, lib.variant, trusted_keys, lib.platform)
        except BundleError as exc:
            lib.error = exc.message
        else:
            lib.trust = verified.library.trust
    return report


def _variant_order(variants: dict[str, Any]) -> list[str]:
    return sorted(variants, key=lambda name: (name != DEFAULT_VARIANT, name))


def _signer(archive: BundleArchive, entry: str) -> str | None:
    """The key id the entry's signature names, ``"malformed"``, or None if unsigned."""
    name = signature_name(entry)
    if not archive.has(name):
        return None
    try:
        return format_key_id(signature_key_id(archive.read_text(name, SIGNATURE_LIMIT)))
    except (SignatureError, BundleError):
        return "malformed"


def _check_schemas(archive: BundleArchive, manifest: Manifest) -> list[SchemaCheck]:
    schemas: dict[str, SchemaCheck] = {}
    every = [manifest.schemas] + [
        v.schemas or {} for p in manifest.platforms.values() for v in p.variants.values()
    ]
    for group in every:
        for name, info in sorted(group.items()):
            if info.path in schemas:
                continue
            check = SchemaCheck(name, info)
            expected = checksum_hex(info.checksum)
            try:
                data = archive.read(info.path)
            except BundleError as exc:
                check.error = f"schema {name}: {exc.message}"
            else:
                actual = hashlib.sha256(data).hexdigest()
                if expected is None:
                    check.error = f"schema {name}: checksum {info.checksum!r} is not sha256 hex"
                elif actual != expected:
                    check.error = (
                        f"checksum mismatch for {info.path}: the manifest says "
                        f"sha256:{expected}, the file is sha256:{actual}"
                    )
            schemas[info.path] = check
    return list(schemas.values())


def _describe_build(info: BuildInfo | None) -> str:
    if info is None:
        return "(none)"
    parts = [
        f"{key}={value}"
        for key, value in msgspec.structs.asdict(info).items()
        if value is not None and key not in ("git", "custom")
    ]
    if info.git is not None:
        git = f"git {info.git.commit}"
        if info.git.branch:
            git += f" ({info.git.branch}{', dirty' if info.git.dirty else ''})"
        parts.append(git)
    parts += [f"{k}={v}" for k, v in sorted((info.custom or {}).items())]
    return ", ".join(parts) or "(empty)"


def _trust_line(report: BundleReport) -> str:
    trust = report.trust
    keys = report.trusted_keys
    if trust is None:
        return "FAILED: " + report.problems[0]
    if trust == TRUSTED and keys:
        return f"trusted (signed by a trusted key: {report.manifest_signed_by})"
    if trust == SELF_SIGNED:
        return (
            f"self-signed (by key {report.manifest_signed_by}, the bundle's own: a corruption "
            "check only; give --trusted-key to check who signed it)"
        )
    return "unsigned"


def _print_report(report: BundleReport, here: str | None) -> None:
    m = report.manifest
    print(f"bundle:        {report.path} (bundle version {m.bundle_version})")
    print(f"name:          {m.plugin.name}")
    print(f"version:       {m.plugin.version}")
    if m.plugin.description:
        print(f"description:   {m.plugin.description}")
    if m.public_key:
        print(f"public key:    {m.public_key} (the bundle's own claim)")
    print(f"signature:     {_trust_line(report)}")
    print(f"build info:    {_describe_build(m.build_info)}")
    print("platforms:")
    for platform in sorted({lib.platform for lib in report.libraries}):
        print(f"  {platform}{'  (this machine)' if platform == here else ''}")
        for lib in (x for x in report.libraries if x.platform == platform):
            signed = f"signed by {lib.signed_by}" if lib.signed_by else "unsigned"
            status = "ok" if lib.error is None else f"FAILED: {lib.error}"
            print(f"    {lib.variant:<10} {lib.library}")
            print(f"    {'':<10} {lib.checksum}, {signed}: {status}")
            own = m.platforms[platform].variants[lib.variant].build_info
            if own is not None:
                print(f"    {'':<10} build info: {_describe_build(own)}")
    if report.schemas:
        print("schemas:")
        for schema in report.schemas:
            status = "ok" if schema.error is None else f"FAILED: {schema.error}"
            print(f"  {schema.name:<20} {schema.info.format:<12} {schema.info.path}: {status}")
    if m.sbom is not None:
        print(f"sbom:          {_describe_sbom(m)}")


def _describe_sbom(m: Manifest) -> str:
    assert m.sbom is not None
    return ", ".join(f"{k} {v}" for k, v in msgspec.structs.asdict(m.sbom).items() if v)


def _report_json(report: BundleReport, here: str | None) -> dict[str, Any]:
    return {
        "bundle": report.path,
        "ok": not report.problems,
        "trust": report.trust,
        "problems": report.problems,
        "this_platform": here,
        "manifest_signed_by": report.manifest_signed_by,
        "trusted_keys": [k.key_id_hex for k in report.trusted_keys or ()],
        "libraries": [
            {
                "platform": lib.platform,
                "variant": lib.variant,
                "library": lib.library,
                "checksum": lib.checksum,
                "signed_by": lib.signed_by,
                "trust": lib.trust,
                "error": lib.error,
            }
            for lib in report.libraries
        ],
        "schemas": [
            {"name": s.name, "path": s.info.path, "format": s.info.format, "error": s.error}
            for s in report.schemas
        ],
        "manifest": report.manifest_json,
    }


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
    report = check_bundle(args.bundle, _trusted_keys(args))
    if args.json:
        print(json.dumps(_report_json(report, current_platform()), indent=2))
    else:
        _print_report(report, current_platform())
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
    report = check_bundle(args.bundle, _trusted_keys(args))
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
        _fail(f"bundle {args.bundle} failed verification: {problems[0]}{more}")
        return EXIT_FAILED
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
    from ._levels import LogLevel
    from ._load import load

    keys = _trusted_keys(args)
    report = check_bundle(args.source, keys)
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
            trusted_keys=[key.to_base64() for key in keys or ()],
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
        print(json.dumps({**loaded, "load_error": failure, "bundle": _report_json(report, here)}))
    else:
        if loaded:
            print(f"loaded:        {args.variant or DEFAULT_VARIANT} for {here}: {loaded['trust']}")
            print(f"type tags:     {', '.join(loaded['type_tags']) or '(none declared)'}")
        else:
            print(f"loaded:        no: {failure}")
        _print_report(report, here)
    if failure is not None:
        _fail(f"cannot load {args.source}: {failure}")
        return EXIT_FAILED
    return 0
