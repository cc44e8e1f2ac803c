"""Writing a rustbridge ``.rbp`` bundle, as rustbridge's own ``bundle create`` does.

The archive's shape is rustbridge's (every entry deflated, in this order):
``manifest.json``, ``manifest.json.minisig`` (when signing), each library at
``lib/<platform>/<variant>/<file name>`` followed by its ``.minisig``, then
``schema/<name>``, ``docs/NOTICES.txt``, ``legal/LICENSE`` and ``sbom/<name>``. Library
checksums are ``sha256:`` + hex; schema checksums plain hex, as rustbridge writes them.

Signing embeds the signer's public key in the manifest (``public_key``, derived from the
secret key: no ``.pub`` file is needed), then signs the exact manifest bytes and every
library: what rustbridge's loader requires with verification on. Each trusted comment
names the entry it signs (``timestamp:…<TAB>file:<entry><TAB>hashed``, minisign's form).

The manifest is built with the reader's model and read back with the reader's checks
before anything is written, so a bundle plugbridge writes is one plugbridge reads. The
archive is written next to its destination and renamed into place: a failure leaves no
half-written bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .archive import unsafe_entry_name
from .manifest import (
    DEFAULT_VARIANT,
    MANIFEST,
    BuildInfo,
    Manifest,
    PlatformInfo,
    PluginInfo,
    SbomInfo,
    SchemaInfo,
    VariantInfo,
    parse_manifest,
    signature_name,
)
from .minisign import SecretKey, sign
from .platform import PLATFORMS

BUNDLE_VERSION = "1.1"
"""What ``write_bundle`` writes unless told otherwise (rustbridge 1.0's format)."""
WRITABLE_VERSIONS = ("1.0", "1.1")
NOTICES_ENTRY = "docs/NOTICES.txt"
LICENSE_ENTRY = "legal/LICENSE"


class BundleWriteError(Exception):
    """Bad input for a bundle: the message names it."""


@dataclass(frozen=True)
class LibraryInput:
    """One library to bundle: its platform key, variant and file."""

    platform: str
    variant: str
    path: Path

    @property
    def entry(self) -> str:
        return f"lib/{self.platform}/{self.variant}/{self.path.name}"


@dataclass(frozen=True)
class FileInput:
    """An extra file (schema, SBOM) and the name it gets in the bundle."""

    path: Path
    name: str


def parse_library_spec(spec: str) -> LibraryInput:
    """``PLATFORM[:VARIANT]:PATH`` (the variant defaults to ``release``)."""
    parts = spec.split(":", 2)
    if len(parts) == 2:
        parts.insert(1, DEFAULT_VARIANT)
    if len(parts) != 3 or not all(parts):
        raise BundleWriteError(f"--lib {spec!r} is not PLATFORM[:VARIANT]:PATH")
    platform, variant, path = parts
    return LibraryInput(platform, variant, Path(path))


def parse_file_spec(spec: str) -> FileInput:
    """``PATH[:NAME]`` (the name defaults to the file's own)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or "/" in name:
        path, name = spec, Path(spec).name
    return FileInput(Path(path), name or Path(path).name)


def write_bundle(
    out: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    libraries: Sequence[LibraryInput],
    description: str | None = None,
    schemas: Sequence[FileInput] = (),
    sboms: Sequence[FileInput] = (),
    notices: Path | None = None,
    license_file: Path | None = None,
    metadata: Mapping[str, str] | None = None,
    build_info: bool = True,
    bundle_version: str = BUNDLE_VERSION,
    sign_key: SecretKey | None = None,
) -> Manifest:
    """Write the bundle ``out``; return its manifest. ``BundleWriteError`` names bad input.

    ``metadata`` goes to ``build_info.custom``; ``build_info=False`` leaves the build
    information (who built it, when) out altogether.
    """
    if bundle_version not in WRITABLE_VERSIONS:
        raise BundleWriteError(
            f"bundle version {bundle_version!r} cannot be written "
            f"(choose {' or '.join(WRITABLE_VERSIONS)})"
        )
    _check_libraries(libraries)
    _check_unique("schema", [f.name for f in schemas])
    _check_unique("SBOM", [f.name for f in sboms])
    files: list[tuple[str, bytes, bool]] = []  # (entry, data, signed)
    platforms: dict[str, PlatformInfo] = {}
    for lib in libraries:
        data = _read(lib.path, f"library {lib.path}")
        variants = platforms.setdefault(lib.platform, PlatformInfo(variants={})).variants
        variants[lib.variant] = VariantInfo(library=lib.entry, checksum=_sha256(data, "sha256:"))
        files.append((lib.entry, data, True))
    schema_infos: dict[str, SchemaInfo] = {}
    for schema in schemas:
        data = _read(schema.path, f"schema {schema.path}")
        entry = f"schema/{schema.name}"
        schema_infos[schema.name] = SchemaInfo(
            path=entry, format=_schema_format(schema.name), checksum=_sha256(data, "")
        )
        files.append((entry, data, False))
    sbom = SbomInfo()
    for item in sboms:
        entry = f"sbom/{item.name}"
        files.append((entry, _read(item.path, f"SBOM {item.path}"), False))
        if "spdx" in item.name.lower():
            sbom.spdx = entry
        else:
            sbom.cyclonedx = entry
    if notices is not None:
        files.append((NOTICES_ENTRY, _read(notices, f"notices {notices}"), False))
    if license_file is not None:
        files.append((LICENSE_ENTRY, _read(license_file, f"license {license_file}"), False))

    manifest = Manifest(
        bundle_version=bundle_version,
        plugin=PluginInfo(name=name, version=version, description=description),
        platforms=platforms,
        build_info=_build_info(metadata) if build_info else None,
        sbom=sbom if sboms else None,
        notices=NOTICES_ENTRY if notices is not None else None,
        license_file=LICENSE_ENTRY if license_file is not None else None,
        public_key=sign_key.public_key().to_base64() if sign_key is not None else None,
        schemas=schema_infos,
    )
    manifest_bytes = manifest.to_json()
    try:
        parse_manifest(manifest_bytes)  # what we write must pass our own reader
    except Exception as exc:
        raise BundleWriteError(str(exc).removeprefix(f"invalid {MANIFEST}: ")) from None

    for entry, _, _ in files:
        unsafe = unsafe_entry_name(entry)
        if unsafe is not None:
            raise BundleWriteError(f"bundle entry {entry!r} is not a safe path: {unsafe}")
    entries: list[tuple[str, bytes]] = [(MANIFEST, manifest_bytes)]
    stamp = int(time.time())
    signed = [(MANIFEST, manifest_bytes)] + [(e, d) for e, d, s in files if s]
    signatures = {
        entry: _signature(entry, data, sign_key, stamp)
        for entry, data in (signed if sign_key is not None else [])
    }
    if MANIFEST in signatures:
        entries.append((signature_name(MANIFEST), signatures[MANIFEST]))
    for entry, data, _ in files:
        entries.append((entry, data))
        if entry in signatures:
            entries.append((signature_name(entry), signatures[entry]))
    _write_zip(Path(out), entries)
    return manifest


def _check_libraries(libraries: Sequence[LibraryInput]) -> None:
    if not libraries:
        raise BundleWriteError("a bundle needs at least one library (--lib)")
    seen: set[tuple[str, str]] = set()
    for lib in libraries:
        if lib.platform not in PLATFORMS:
            raise BundleWriteError(
                f"unknown platform {lib.platform!r} (one of: {', '.join(PLATFORMS)})"
            )
        if (lib.platform, lib.variant) in seen:
            raise BundleWriteError(f"two libraries for {lib.platform} variant {lib.variant!r}")
        seen.add((lib.platform, lib.variant))
    for platform in {lib.platform for lib in libraries}:
        if (platform, DEFAULT_VARIANT) not in seen:
            raise BundleWriteError(
                f"{platform} has no {DEFAULT_VARIANT!r} variant (every platform needs one)"
            )


def _check_unique(what: str, names: Sequence[str]) -> None:
    for name in names:
        if names.count(name) > 1:
            raise BundleWriteError(f"two {what} files named {name!r}")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise BundleWriteError(f"{what} is a directory, not a file") from None
    except OSError as exc:
        raise BundleWriteError(f"cannot read {what}: {exc.strerror or exc}") from None


def _sha256(data: bytes, prefix: str) -> str:
    return prefix + hashlib.sha256(data).hexdigest()


def _schema_format(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in (".h", ".hpp"):
        return "c-header"
    if suffix == ".json":
        return "json-schema"
    return "unknown"


def _build_info(metadata: Mapping[str, str] | None) -> BuildInfo:
    return BuildInfo(
        built_by=_built_by(),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        custom=dict(metadata) if metadata else None,
    )


def _built_by() -> str:
    """Who builds, as rustbridge tells it."""
    if os.environ.get("GITHUB_ACTIONS"):
        return "GitHub Actions"
    if os.environ.get("GITLAB_CI"):
        return "GitLab CI"
    if os.environ.get("CI"):
        return "CI"
    return "local"


def _signature(entry: str, data: bytes, key: SecretKey | None, stamp: int) -> bytes:
    assert key is not None
    text = sign(data, key, trusted_comment=f"timestamp:{stamp}\tfile:{entry}\thashed")
    return text.encode("utf-8")


def _write_zip(out: Path, entries: Sequence[tuple[str, bytes]]) -> None:
    directory = out.parent if str(out.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise BundleWriteError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            when = time.localtime()[:6]
            for entry, data in entries:
                info = zipfile.ZipInfo(entry, date_time=when)
                info.compress_type = zipfile.ZIP_DEFLATED
                executable = entry.startswith("lib/") and not entry.endswith(".minisig")
                info.external_attr = (0o100000 | (0o755 if executable else 0o644)) << 16
                archive.writestr(info, data)
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise BundleWriteError(f"cannot write {out}: {exc.strerror or exc}") from None
        raise
