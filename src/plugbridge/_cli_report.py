"""What ``plugbridge bundle inspect`` and ``verify`` show: every library and schema of a
bundle checked, and how the result is printed.

Each library (every platform, every variant) is checked by the reader's own
``verify_bundle``, exactly as ``load`` would check it on that platform: the manifest's
signature, the checksum, the library's signature, by the same trust rule. Schemas are
checked against their checksums. Only what makes the rest unreadable (no zip, no or an
invalid manifest) raises; every other failure is recorded in the report.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._bundle.archive import BundleArchive
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
from ._bundle.verify import (
    MANIFEST_LIMIT,
    SELF_SIGNED,
    SIGNATURE_LIMIT,
    TRUSTED,
    UNSIGNED,
    verify_bundle,
)
from ._errors import BundleError

_TRUST_ORDER = (TRUSTED, SELF_SIGNED, UNSIGNED)


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


def print_report(report: BundleReport, here: str | None) -> None:
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


def report_json(report: BundleReport, here: str | None) -> dict[str, Any]:
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
