"""The manifest model (bundle versions 1.0 and 1.1) and the platform key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plugbridge import BundleError
from plugbridge._bundle.manifest import checksum_hex, parse_manifest
from plugbridge._bundle.platform import current_platform, platform_key
from plugbridge._bundle.verify import verify_bundle

from .conftest import HERE, BundleSpec

SHA = "ab" * 32


def manifest_11() -> dict[str, Any]:
    """A 1.1 manifest whose release variant has its own metadata and debug has none."""
    return {
        "bundle_version": "1.1",
        "plugin": {"name": "p", "version": "1.0.0", "authors": ["A"], "future_field": 1},
        "platforms": {
            "linux-x86_64": {
                "variants": {
                    "release": {
                        "library": "lib/linux-x86_64/release/libp.so",
                        "checksum": f"sha256:{SHA}",
                        "build": {"profile": "release", "lto": True},
                        "build_info": {"built_by": "variant CI", "git": {"commit": "v"}},
                        "sbom": {"spdx": "sbom/release.spdx.json"},
                        "schema_checksum": "variant-sum",
                        "schemas": {
                            "messages.h": {
                                "path": "schema/release.h",
                                "format": "c-header",
                                "checksum": SHA,
                            }
                        },
                    },
                    "debug": {
                        "library": "lib/linux-x86_64/debug/libp.so",
                        "checksum": f"SHA256:{SHA.upper()}",
                    },
                }
            }
        },
        "build_info": {"built_by": "top CI", "custom": {"repo": "x"}},
        "sbom": {"cyclonedx": "sbom/top.cdx.json"},
        "schema_checksum": "top-sum",
        "schemas": {
            "schema.json": {"path": "schema/top.json", "format": "json-schema", "checksum": SHA}
        },
        "api": {"ignored": True},
    }


def test_variant_level_metadata_wins_and_falls_back_to_the_top_level() -> None:
    manifest = parse_manifest(json.dumps(manifest_11()).encode())
    build = manifest.effective_build_info("linux-x86_64", "release")
    assert build is not None
    assert build.built_by == "variant CI"
    debug_build = manifest.effective_build_info("linux-x86_64", "debug")
    assert debug_build is not None
    assert (debug_build.built_by, debug_build.custom) == ("top CI", {"repo": "x"})
    sbom, debug_sbom = (manifest.effective_sbom("linux-x86_64", v) for v in ("release", "debug"))
    assert sbom is not None and sbom.spdx == "sbom/release.spdx.json"
    assert debug_sbom is not None and debug_sbom.cyclonedx == "sbom/top.cdx.json"
    assert manifest.effective_schema_checksum("linux-x86_64") == "variant-sum"
    assert manifest.effective_schema_checksum("linux-x86_64", "debug") == "top-sum"
    assert list(manifest.effective_schemas("linux-x86_64")) == ["messages.h"]
    assert list(manifest.effective_schemas("linux-x86_64", "debug")) == ["schema.json"]
    assert manifest.variant_names("linux-x86_64") == ["debug", "release"]


def test_manifest_round_trips_through_its_json() -> None:
    manifest = parse_manifest(json.dumps(manifest_11()).encode())
    again = parse_manifest(manifest.to_json())
    assert again == manifest
    assert b"null" not in manifest.to_json()  # absent fields stay absent


def test_a_1_0_bundle_with_1_1_fields_is_read_like_rustbridge_does(tmp_path: Path) -> None:
    data = manifest_11()
    data["bundle_version"] = "1.0"
    manifest = parse_manifest(json.dumps(data).encode())
    assert manifest.effective_schema_checksum("linux-x86_64") == "variant-sum"


@pytest.mark.parametrize(
    ("checksum", "digest"),
    [
        (f"sha256:{SHA}", SHA),
        (f"SHA256:{SHA.upper()}", SHA),
        (SHA, SHA),
        ("sha256:abc", None),
        (f"md5:{SHA}", None),
        (f"sha256:{SHA}\n", SHA),
    ],
)
def test_checksum_forms(checksum: str, digest: str | None) -> None:
    assert checksum_hex(checksum) == digest


def test_bad_variant_name_is_refused() -> None:
    data = manifest_11()
    variants = data["platforms"]["linux-x86_64"]["variants"]
    variants["Debug_1"] = variants.pop("debug")
    with pytest.raises(BundleError, match="variant name 'Debug_1' is not lowercase"):
        parse_manifest(json.dumps(data).encode())


@pytest.mark.parametrize(
    ("system", "machine", "bits", "key"),
    [
        ("linux", "x86_64", 64, "linux-x86_64"),
        ("linux", "aarch64", 64, "linux-aarch64"),
        ("darwin", "arm64", 64, "darwin-aarch64"),
        ("darwin", "x86_64", 64, "darwin-x86_64"),
        ("win32", "AMD64", 64, "windows-x86_64"),
        ("win32", "ARM64", 64, "windows-aarch64"),
        ("linux", "x86_64", 32, None),
        ("linux", "armv7l", 64, None),
        ("freebsd14", "amd64", 64, None),
    ],
)
def test_platform_keys(system: str, machine: str, bits: int, key: str | None) -> None:
    assert platform_key(system, machine, bits) == key


def test_this_machine_has_a_key() -> None:
    assert current_platform() == HERE


def test_another_platform_can_be_verified_here(tmp_path: Path, hello_release: bytes) -> None:
    """``verify_bundle`` takes a platform (for ``bundle verify``/``extract``): nothing loads."""
    libraries = {("darwin-aarch64", "release"): hello_release}
    bundle = BundleSpec(libraries=libraries).write(tmp_path / "h.rbp")
    verified = verify_bundle(bundle, platform="darwin-aarch64")
    assert verified.library.data == hello_release
    assert (verified.platform, verified.variant, verified.library.trust) == (
        "darwin-aarch64",
        "release",
        "unsigned",
    )
