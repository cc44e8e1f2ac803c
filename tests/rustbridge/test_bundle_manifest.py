"""``plugbridge.rustbridge.BundleManifest`` (a view of plugbridge's manifest model) reads
every manifest shape rustbridge writes into the same attributes as rustbridge's own
``BundleManifest``, answers its ``get_*`` methods alike, and refuses what rustbridge's Rust
side would refuse."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from plugbridge.rustbridge import BundleManifest, PlatformInfo, PluginException, SchemaInfo
from plugbridge.rustbridge._manifest import VariantInfo

rustbridge = pytest.importorskip("rustbridge", reason="the dev extra installs rustbridge")

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "B" * 64


def full_manifest() -> dict[str, Any]:
    """Every field rustbridge's Python host reads, bundle version 1.1 variant overrides
    included, in the shape rustbridge's Rust writer produces."""
    return {
        "bundle_version": "1.1",
        "plugin": {
            "name": "hello-plugin",
            "version": "1.2.3",
            "description": "says hello",
            "authors": ["Ada", "Grace"],
            "license": "MIT",
            "repository": "https://example.invalid/hello",
        },
        "platforms": {
            "linux-x86_64": {
                "variants": {
                    "release": {
                        "library": "lib/linux-x86_64/release/libhello.so",
                        "checksum": SHA_A,
                        "build": {"profile": "release", "opt_level": 3, "lto": True},
                        "build_info": {"built_by": "CI", "compiler": "rustc 1.93.0"},
                        "sbom": {"spdx": "sbom/release.spdx.json"},
                        "schema_checksum": "variant-sum",
                        "schemas": {
                            "v.json": {
                                "path": "schema/v.json",
                                "format": "json-schema",
                                "checksum": "c" * 64,
                            }
                        },
                    },
                    "debug": {"library": "lib/linux-x86_64/debug/libhello.so", "checksum": SHA_B},
                }
            },
            "darwin-aarch64": {
                "variants": {
                    "release": {
                        "library": "lib/darwin-aarch64/release/libhello.dylib",
                        "checksum": SHA_A,
                    }
                }
            },
        },
        "build_info": {
            "built_by": "local",
            "built_at": "2026-01-31T16:21:07Z",
            "host": "x86_64-unknown-linux-gnu",
            "compiler": "rustc 1.93.0 (254b59607 2026-01-19)",
            "rustbridge_version": "1.0.1",
            "git": {"commit": "f81d3551e5", "branch": "main", "tag": "v1.2.3", "dirty": False},
            "custom": {"repository": "https://example.invalid/hello", "team": "core"},
        },
        "sbom": {"cyclonedx": "sbom/sbom.cdx.json", "spdx": "sbom/sbom.spdx.json"},
        "schema_checksum": "top-sum",
        "notices": "docs/NOTICES.txt",
        "license_file": "legal/LICENSE",
        "public_key": "RWRX0dXiesomR/SPv8ukThZBrY9f8LrZd0XFz/H5E9jtSR0G9/sRXPu0",
        "schemas": {
            "messages.h": {
                "path": "schema/messages.h",
                "format": "c-header",
                "checksum": "9" * 64,
                "description": "binary messages",
            },
            "schema.json": {
                "path": "schema/schema.json",
                "format": "json-schema",
                "checksum": "0" * 64,
            },
        },
        "bridges": {
            "jni": {
                "linux-x86_64": {
                    "variants": {
                        "release": {
                            "library": "bridge/jni/linux-x86_64/release/librustbridge_jni.so",
                            "checksum": SHA_B,
                        }
                    }
                }
            }
        },
        "api": {"min_rustbridge_version": "0.6.0"},  # dropped in 0.7: ignored by both
    }


def minimal_manifest() -> dict[str, Any]:
    return {
        "bundle_version": "1.0",
        "plugin": {"name": "tiny", "version": "0.1.0"},
        "platforms": {
            "linux-x86_64": {
                "variants": {
                    "release": {"library": "lib/linux-x86_64/release/libt.so", "checksum": SHA_A}
                }
            }
        },
    }


def both(data: dict[str, Any]) -> tuple[BundleManifest, Any]:
    """(ours, rustbridge's) manifest from the same JSON text."""
    text = json.dumps(data, indent=2)
    return BundleManifest.from_json(text), rustbridge.BundleManifest.from_json(text)


@pytest.mark.parametrize("make", [full_manifest, minimal_manifest], ids=["full", "minimal"])
def test_every_attribute_reads_as_in_rustbridge(make: Any) -> None:
    ours, theirs = both(make())
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert [field.name for field in dataclasses.fields(ours)] == [
        field.name for field in dataclasses.fields(theirs)
    ]


def test_from_dict_reads_as_from_json() -> None:
    data = full_manifest()
    ours = BundleManifest.from_dict(copy.deepcopy(data))
    assert ours == BundleManifest.from_json(json.dumps(data))
    assert dataclasses.asdict(ours) == dataclasses.asdict(rustbridge.BundleManifest.from_dict(data))


def test_empty_build_info_and_sbom_read_as_none_as_in_rustbridge() -> None:
    data = minimal_manifest() | {"build_info": {}, "sbom": {}, "bridges": {}}
    ours, theirs = both(data)
    assert (ours.build_info, ours.sbom, ours.bridges) == (None, None, None)
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)


@pytest.mark.parametrize(
    ("platform", "variant"),
    [
        ("linux-x86_64", "release"),  # the variant's own metadata
        ("linux-x86_64", "debug"),  # none of its own: the top level's
        ("linux-x86_64", "missing"),
        ("darwin-aarch64", "release"),
        ("windows-x86_64", "release"),  # no such platform
    ],
)
def test_effective_metadata_falls_back_as_in_rustbridge(platform: str, variant: str) -> None:
    ours, theirs = both(full_manifest())
    for name in ("build_info", "schema_checksum", "sbom", "schemas"):
        mine = getattr(ours, f"get_effective_{name}")(platform, variant)
        their = getattr(theirs, f"get_effective_{name}")(platform, variant)
        mine_plain = _plain(mine)
        assert mine_plain == _plain(their), name
    own = platform == "linux-x86_64" and variant == "release"
    assert (ours.get_effective_schema_checksum(platform, variant) == "variant-sum") is own


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def test_platform_lookups_answer_as_rustbridges() -> None:
    ours, theirs = both(full_manifest())
    for key in ("linux-x86_64", "darwin-aarch64"):
        mine, their = ours.get_platform(key), theirs.get_platform(key)
        assert mine is not None and their is not None
        assert mine.list_variants() == their.list_variants()
        assert mine.get_default_variant() == their.get_default_variant() == "release"
        for variant in ("release", "debug", "nightly"):
            assert mine.get_library(variant) == their.get_library(variant)
            assert mine.get_checksum(variant) == their.get_checksum(variant)
    assert ours.get_platform("windows-x86_64") is theirs.get_platform("windows-x86_64") is None
    assert ours.get_platform("linux-x86_64").list_variants() == ["release", "debug"]  # type: ignore[union-attr]


def test_the_views_can_be_built_by_hand_like_rustbridges_dataclasses() -> None:
    """Code (and tests) that build a manifest object directly keep working."""
    platform = PlatformInfo(
        library="", checksum="", variants={"release": VariantInfo("l.so", SHA_A)}
    )
    manifest = BundleManifest("1.0", "p", "1.0.0", {"linux-x86_64": platform})
    assert manifest.get_platform("linux-x86_64") is platform
    assert platform.list_variants() == ["release"]
    assert PlatformInfo("", "").list_variants() == ["release"]
    assert SchemaInfo("schema/a.json", "0" * 64).format is None
    assert manifest.get_effective_schemas("linux-x86_64") == {}


@pytest.mark.parametrize(
    ("mutate", "both_refuse"),
    [
        (lambda m: m.pop("bundle_version"), True),
        (lambda m: m["plugin"].pop("name"), True),
        (lambda m: m["plugin"].pop("version"), True),
        # What rustbridge's Python host accepts but its Rust writer never writes (and its
        # Rust loader's validate() refuses): refused here, naming the problem.
        (lambda m: m.update(bundle_version="7.0"), False),
        (lambda m: m["platforms"]["linux-x86_64"]["variants"].pop("release"), False),
        (
            lambda m: m["platforms"]["linux-x86_64"]["variants"]["release"].update(
                checksum="md5:" + "a" * 32
            ),
            False,
        ),
        (
            lambda m: m["platforms"]["linux-x86_64"]["variants"]["release"].update(
                library="../x.so"
            ),
            False,
        ),
    ],
    ids=[
        "no-bundle-version",
        "no-name",
        "no-version",
        "unknown-bundle-version",
        "no-release-variant",
        "checksum-not-sha256",
        "library-path-escapes",
    ],
)
def test_an_invalid_manifest_is_a_plugin_exception_naming_the_problem(
    mutate: Any, both_refuse: bool
) -> None:
    data = minimal_manifest()
    mutate(data)
    text = json.dumps(data)
    with pytest.raises(PluginException) as caught:
        BundleManifest.from_json(text)
    assert caught.value.error_code == 2
    assert "manifest" in caught.value.message or "bundle version" in caught.value.message
    if both_refuse:
        with pytest.raises(rustbridge.PluginException):
            rustbridge.BundleManifest.from_json(text)
    else:
        rustbridge.BundleManifest.from_json(text)  # the difference: rustbridge takes it


def test_text_that_is_not_json_is_a_plugin_exception_in_both() -> None:
    with pytest.raises(rustbridge.PluginException):
        rustbridge.BundleManifest.from_json("{not json")
    with pytest.raises(PluginException, match=r"invalid manifest\.json"):
        BundleManifest.from_json("{not json")
    with pytest.raises(PluginException, match="not JSON data"):
        BundleManifest.from_dict({"bundle_version": object()})
