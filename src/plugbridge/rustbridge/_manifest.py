"""``BundleManifest`` and its parts, as rustbridge's Python host shows a ``manifest.json``.

The classes are rustbridge's dataclasses (same names, fields, field order and defaults, so
code that reads ``manifest.platforms["linux-x86_64"].variants["release"].library`` or builds
one by hand keeps working), but they are *views*: a manifest is always read by plugbridge's
own model (``plugbridge._bundle.manifest``), with its checks, then converted here. There is
one manifest parser.

What the views keep from rustbridge's reading, so each attribute holds what it held there:
a ``PlatformInfo`` has rustbridge's legacy ``library``/``checksum``/``default_variant``
(``""``, ``""``, None: rustbridge's Rust writer never sets them); an empty ``build_info``
or ``sbom`` object reads as None; ``get_effective_*`` fall back to the top level as
rustbridge's do (an empty variant-level ``schemas`` falls back too).

What differs, deliberately: the manifest must pass the rules rustbridge's own Rust
``Manifest::validate`` enforces and plugbridge checks (bundle version 1.0 or 1.1, a
``release`` variant on every platform, lowercase variant names, ``sha256:`` library
checksums, safe library paths, fields of the right type). Every bundle rustbridge writes
passes them; a manifest that does not is a ``PluginException`` naming the problem, where
rustbridge's Python host would have accepted it and failed later, or never.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._bundle import manifest as model
from .._errors import BundleError
from ._exception import PluginException, from_plugin_error

DEFAULT_VARIANT = model.DEFAULT_VARIANT


@dataclass
class VariantInfo:
    """One variant's library (and, from bundle version 1.1, its own metadata)."""

    library: str
    """Path of the library inside the bundle."""
    checksum: str
    """``sha256:`` + hex SHA-256 of the library."""
    build: Any | None = None
    """Free-form build settings (profile, features, …)."""
    build_info: BuildInfo | None = None
    """Variant-level build info (1.1; wins over the top level)."""
    sbom: Sbom | None = None
    """Variant-level SBOM paths (1.1; wins over the top level)."""
    schema_checksum: str | None = None
    """Variant-level schema checksum (1.1; wins over the top level)."""
    schemas: dict[str, SchemaInfo] = field(default_factory=dict)
    """Variant-level schemas (1.1; win over the top level when not empty)."""


@dataclass
class PlatformInfo:
    """One platform's libraries, by variant."""

    library: str
    """rustbridge's legacy single library (``""``: bundles hold ``variants``)."""
    checksum: str
    """rustbridge's legacy single checksum (``""``: bundles hold ``variants``)."""
    default_variant: str | None = None
    """rustbridge's legacy default variant (None: the default is ``release``)."""
    variants: dict[str, VariantInfo] = field(default_factory=dict)

    def get_library(self, variant: str) -> str:
        """The library path of ``variant`` (the legacy ``library`` if there is no such
        variant: ``""`` for every bundle rustbridge writes)."""
        if self.variants and variant in self.variants:
            return self.variants[variant].library
        return self.library

    def get_checksum(self, variant: str) -> str:
        """The checksum of ``variant`` (the legacy ``checksum`` if there is none)."""
        if self.variants and variant in self.variants:
            return self.variants[variant].checksum
        return self.checksum

    def get_default_variant(self) -> str:
        return self.default_variant if self.default_variant else DEFAULT_VARIANT

    def list_variants(self) -> list[str]:
        """Variant names in the manifest's order (``["release"]`` when none are listed)."""
        return list(self.variants) if self.variants else [DEFAULT_VARIANT]


@dataclass
class PluginInfo:
    """The manifest's ``plugin`` section."""

    name: str
    version: str
    description: str | None = None
    authors: list[str] = field(default_factory=list)
    license: str | None = None
    repository: str | None = None


@dataclass
class SchemaInfo:
    """A schema file in the bundle."""

    path: str
    """Path of the schema inside the bundle."""
    checksum: str
    """Hex SHA-256 of the schema (rustbridge writes it without ``sha256:``)."""
    format: str | None = None
    """``json-schema``, ``c-header``, …"""
    description: str | None = None


@dataclass
class GitInfo:
    """Where the bundle's sources came from."""

    commit: str | None = None
    branch: str | None = None
    tag: str | None = None
    dirty: bool | None = None


@dataclass
class BuildInfo:
    """Who built the bundle, when and with what."""

    built_by: str | None = None
    built_at: str | None = None
    host: str | None = None
    compiler: str | None = None
    rustbridge_version: str | None = None
    git: GitInfo | None = None
    custom: dict[str, str] | None = None


@dataclass
class Sbom:
    """Paths of the bundle's software bills of materials."""

    cyclonedx: str | None = None
    spdx: str | None = None


@dataclass
class BridgeInfo:
    """Bridge libraries shipped beside the plugin (rustbridge 0.7's JNI bridge)."""

    jni: dict[str, PlatformInfo] = field(default_factory=dict)


@dataclass
class BundleManifest:
    """A bundle's ``manifest.json``, read by plugbridge's model and shown rustbridge's way."""

    bundle_version: str
    plugin_name: str
    plugin_version: str
    platforms: dict[str, PlatformInfo]
    public_key: str | None = None
    """The minisign key the bundle says it was signed with (its own claim)."""
    plugin_info: PluginInfo | None = None
    schemas: dict[str, SchemaInfo] = field(default_factory=dict)
    build_info: BuildInfo | None = None
    sbom: Sbom | None = None
    schema_checksum: str | None = None
    notices: str | None = None
    bridges: BridgeInfo | None = None

    @classmethod
    def from_json(cls, json_str: str | bytes) -> BundleManifest:
        """Read a ``manifest.json`` text; ``PluginException`` names what is wrong with it."""
        data = json_str.encode("utf-8") if isinstance(json_str, str) else bytes(json_str)
        return cls.from_model(_parse(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleManifest:
        """Read a manifest already decoded from JSON (same checks as ``from_json``)."""
        try:
            encoded = msgspec.json.encode(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PluginException(f"invalid manifest: it is not JSON data ({exc})") from None
        return cls.from_model(_parse(encoded))

    @classmethod
    def from_model(cls, manifest: model.Manifest) -> BundleManifest:
        """The view of a manifest plugbridge's model has read."""
        plugin = manifest.plugin
        return cls(
            bundle_version=manifest.bundle_version,
            plugin_name=plugin.name,
            plugin_version=plugin.version,
            platforms=_platforms(manifest.platforms),
            public_key=manifest.public_key,
            plugin_info=PluginInfo(
                name=plugin.name,
                version=plugin.version,
                description=plugin.description,
                authors=list(plugin.authors),
                license=plugin.license,
                repository=plugin.repository,
            ),
            schemas=_schemas(manifest.schemas),
            build_info=_build_info(manifest.build_info),
            sbom=_sbom(manifest.sbom),
            schema_checksum=manifest.schema_checksum,
            notices=manifest.notices,
            bridges=_bridges(manifest.bridges),
        )

    # -- variant-level metadata with the top-level fallback (bundle version 1.1) ---------

    def _variant(self, platform: str, variant: str) -> VariantInfo | None:
        found = self.platforms.get(platform)
        return found.variants.get(variant) if found is not None and found.variants else None

    def get_effective_build_info(
        self, platform: str, variant: str = DEFAULT_VARIANT
    ) -> BuildInfo | None:
        own = self._variant(platform, variant)
        return own.build_info if own is not None and own.build_info is not None else self.build_info

    def get_effective_schema_checksum(
        self, platform: str, variant: str = DEFAULT_VARIANT
    ) -> str | None:
        own = self._variant(platform, variant)
        if own is not None and own.schema_checksum is not None:
            return own.schema_checksum
        return self.schema_checksum

    def get_effective_sbom(self, platform: str, variant: str = DEFAULT_VARIANT) -> Sbom | None:
        own = self._variant(platform, variant)
        return own.sbom if own is not None and own.sbom is not None else self.sbom

    def get_effective_schemas(
        self, platform: str, variant: str = DEFAULT_VARIANT
    ) -> dict[str, SchemaInfo]:
        own = self._variant(platform, variant)
        return own.schemas if own is not None and own.schemas else self.schemas

    def get_platform(self, platform: str) -> PlatformInfo | None:
        return self.platforms.get(platform)


def _parse(data: bytes) -> model.Manifest:
    try:
        return model.parse_manifest(data)
    except BundleError as exc:
        raise from_plugin_error(exc) from None


# -- conversions from plugbridge's model ------------------------------------------------


def _platforms(platforms: dict[str, model.PlatformInfo]) -> dict[str, PlatformInfo]:
    return {
        key: PlatformInfo(
            library="",
            checksum="",
            variants={name: _variant(info) for name, info in platform.variants.items()},
        )
        for key, platform in platforms.items()
    }


def _variant(info: model.VariantInfo) -> VariantInfo:
    return VariantInfo(
        library=info.library,
        checksum=info.checksum,
        build=info.build,
        build_info=_build_info(info.build_info),
        sbom=_sbom(info.sbom),
        schema_checksum=info.schema_checksum,
        schemas=_schemas(info.schemas or {}),
    )


def _schemas(schemas: dict[str, model.SchemaInfo]) -> dict[str, SchemaInfo]:
    return {
        name: SchemaInfo(
            path=info.path,
            checksum=info.checksum,
            format=info.format,
            description=info.description,
        )
        for name, info in schemas.items()
    }


def _build_info(info: model.BuildInfo | None) -> BuildInfo | None:
    if info is None or info == model.BuildInfo():  # rustbridge reads {} as no build info
        return None
    git = info.git
    return BuildInfo(
        built_by=info.built_by,
        built_at=info.built_at,
        host=info.host,
        compiler=info.compiler,
        rustbridge_version=info.rustbridge_version,
        git=None
        if git is None
        else GitInfo(commit=git.commit, branch=git.branch, tag=git.tag, dirty=git.dirty),
        custom=dict(info.custom) if info.custom else None,
    )


def _sbom(sbom: model.SbomInfo | None) -> Sbom | None:
    if sbom is None or sbom == model.SbomInfo():  # rustbridge reads {} as no SBOM
        return None
    return Sbom(cyclonedx=sbom.cyclonedx, spdx=sbom.spdx)


def _bridges(bridges: dict[str, dict[str, model.PlatformInfo]] | None) -> BridgeInfo | None:
    if not bridges:
        return None
    return BridgeInfo(jni=_platforms(bridges.get("jni", {})))
