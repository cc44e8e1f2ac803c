"""``manifest.json`` of a rustbridge bundle, bundle versions 1.0 and 1.1.

The model is strict about what it reads (every field's type; the rules rustbridge's own
``Manifest::validate`` enforces: a ``release`` variant on every platform, variant names,
``sha256:`` checksums) and, like rustbridge's serde model, ignores fields it does not know.
Version 1.1 adds variant-level ``build_info``, ``sbom``, ``schema_checksum`` and
``schemas``; a variant's own value wins, else the top-level one (``effective_*``). Any other
``bundle_version`` is refused before the rest is read: its shape is not known.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .._errors import BundleError, ConfigError
from .archive import unsafe_entry_name

MANIFEST = "manifest.json"
SIGNATURE_SUFFIX = ".minisig"
BUNDLE_VERSIONS = ("1.0", "1.1")
DEFAULT_VARIANT = "release"
_VARIANT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class _Model(msgspec.Struct, omit_defaults=True):
    pass


class PluginInfo(_Model):
    name: str
    version: str
    description: str | None = None
    authors: list[str] = []
    license: str | None = None
    repository: str | None = None


class GitInfo(_Model):
    commit: str
    branch: str | None = None
    tag: str | None = None
    dirty: bool | None = None


class BuildInfo(_Model):
    built_by: str | None = None
    built_at: str | None = None
    host: str | None = None
    compiler: str | None = None
    rustbridge_version: str | None = None
    git: GitInfo | None = None
    custom: dict[str, str] | None = None


class SbomInfo(_Model):
    cyclonedx: str | None = None
    spdx: str | None = None


class SchemaInfo(_Model):
    path: str
    format: str
    checksum: str
    """Hex SHA-256 (rustbridge writes it without the ``sha256:`` prefix; either is read)."""
    description: str | None = None


class VariantInfo(_Model):
    library: str
    """Archive path of the library (``lib/linux-x86_64/release/libhello.so``)."""
    checksum: str
    """``sha256:`` + hex SHA-256 of the library."""
    build: Any = None
    """Free-form build settings (profile, features, …)."""
    build_info: BuildInfo | None = None
    sbom: SbomInfo | None = None
    schema_checksum: str | None = None
    schemas: dict[str, SchemaInfo] | None = None


class PlatformInfo(_Model):
    variants: dict[str, VariantInfo]


class Manifest(_Model):
    bundle_version: str
    plugin: PluginInfo
    platforms: dict[str, PlatformInfo]
    build_info: BuildInfo | None = None
    sbom: SbomInfo | None = None
    schema_checksum: str | None = None
    notices: str | None = None
    license_file: str | None = None
    public_key: str | None = None
    """The key the bundle was signed with, base64 (``RW…``): its own claim, never trust."""
    schemas: dict[str, SchemaInfo] = {}
    bridges: dict[str, dict[str, PlatformInfo]] | None = None
    """rustbridge 0.7's JNI bridge libraries (read, never loaded)."""

    # -- choosing a library ------------------------------------------------------------

    def variant(self, platform: str | None, variant: str | None = None) -> VariantInfo:
        """The library of ``platform`` and ``variant`` (default ``release``); a
        ``BundleError`` naming what the bundle has when it has no such library."""
        have = ", ".join(sorted(self.platforms)) or "none"
        if platform is None:
            from .platform import describe_this_machine

            raise BundleError(
                f"this machine ({describe_this_machine()}) has no rustbridge platform key; "
                f"the bundle has libraries for: {have}"
            )
        found = self.platforms.get(platform)
        if found is None:
            raise BundleError(
                f"bundle has no library for this platform ({platform}); "
                f"it has libraries for: {have}"
            )
        name = DEFAULT_VARIANT if variant is None else variant
        info = found.variants.get(name)
        if info is None:
            raise BundleError(
                f"bundle has no variant {name!r} for {platform}; "
                f"its variants there: {', '.join(sorted(found.variants))}"
            )
        return info

    def variant_names(self, platform: str) -> list[str]:
        found = self.platforms.get(platform)
        return sorted(found.variants) if found is not None else []

    # -- variant-level metadata with the top-level fallback (bundle version 1.1) ---------

    def effective_build_info(
        self, platform: str, variant: str = DEFAULT_VARIANT
    ) -> BuildInfo | None:
        own = self._variant_or_none(platform, variant)
        return own.build_info if own is not None and own.build_info is not None else self.build_info

    def effective_sbom(self, platform: str, variant: str = DEFAULT_VARIANT) -> SbomInfo | None:
        own = self._variant_or_none(platform, variant)
        return own.sbom if own is not None and own.sbom is not None else self.sbom

    def effective_schema_checksum(
        self, platform: str, variant: str = DEFAULT_VARIANT
    ) -> str | None:
        own = self._variant_or_none(platform, variant)
        if own is not None and own.schema_checksum is not None:
            return own.schema_checksum
        return self.schema_checksum

    def effective_schemas(
        self, platform: str, variant: str = DEFAULT_VARIANT
    ) -> dict[str, SchemaInfo]:
        own = self._variant_or_none(platform, variant)
        return own.schemas if own is not None and own.schemas is not None else self.schemas

    def _variant_or_none(self, platform: str, variant: str) -> VariantInfo | None:
        found = self.platforms.get(platform)
        return None if found is None else found.variants.get(variant)

    # -- writing -----------------------------------------------------------------------

    def to_json(self) -> bytes:
        """Pretty JSON (2-space indent, fields in rustbridge's order), as bundles hold it."""
        return msgspec.json.format(msgspec.json.encode(self), indent=2)


class _Versioned(msgspec.Struct):
    bundle_version: str


def parse_manifest(data: bytes) -> Manifest:
    """Read and check ``manifest.json``; ``BundleError`` names the first problem."""
    try:
        version = msgspec.json.decode(data, type=_Versioned).bundle_version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleError(f"invalid {MANIFEST}: {exc}") from None
    if version not in BUNDLE_VERSIONS:
        raise BundleError(
            f"unsupported bundle version {version!r} "
            f"(plugbridge reads bundle versions {' and '.join(BUNDLE_VERSIONS)})"
        )
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleError(f"invalid {MANIFEST}: {exc}") from None
    problem = _problem(manifest)
    if problem is not None:
        raise BundleError(f"invalid {MANIFEST}: {problem}")
    return manifest


def _problem(manifest: Manifest) -> str | None:
    """The first rule ``manifest`` breaks, or None."""
    if not manifest.plugin.name.strip():
        return "plugin.name is empty"
    if not manifest.plugin.version.strip():
        return "plugin.version is empty"
    if not manifest.platforms:
        return "it lists no platforms"
    for platform, info in manifest.platforms.items():
        where = f"platforms.{platform}"
        if DEFAULT_VARIANT not in info.variants:
            return f"{where} has no {DEFAULT_VARIANT!r} variant (every platform needs one)"
        for name, variant in info.variants.items():
            if not _VARIANT_NAME.fullmatch(name):
                return f"{where}: variant name {name!r} is not lowercase letters, digits and '-'"
            unsafe = unsafe_entry_name(variant.library)
            if unsafe is not None:
                return f"{where}.variants.{name}.library {variant.library!r}: {unsafe}"
            if checksum_hex(variant.checksum) is None:
                return (
                    f"{where}.variants.{name}.checksum {variant.checksum!r} is not "
                    "'sha256:' and 64 hex digits"
                )
    return None


def checksum_hex(checksum: str) -> str | None:
    """The lowercase hex digest of a ``sha256:…`` checksum (prefix optional, any case)."""
    text = checksum.strip()
    if text[:7].lower() == "sha256:":
        text = text[7:]
    return text.lower() if _SHA256_HEX.fullmatch(text) else None


def checked_variant(variant: object) -> str | None:
    """``load``'s ``variant`` argument: None (``release``) or a name."""
    if variant is None or isinstance(variant, str):
        return variant
    raise ConfigError(f"variant must be a string, not {type(variant).__name__}")


def signature_name(entry: str) -> str:
    """The archive entry holding ``entry``'s minisign signature."""
    return entry + SIGNATURE_SUFFIX
