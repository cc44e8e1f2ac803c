"""Loading rustbridge ``.rbp`` bundles: platform and variant choice, manifest versions,
checksums, reload, metadata, in both isolation modes (nothing extracted stays: see the
``own_temp_dir`` fixture, which every test here ends with)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import BundleError, ConfigError, UnknownMessageType

from .conftest import HERE, OTHER_PLATFORMS, BundleSpec, library_entry, write_zip


def spec(release: bytes, **changes: Any) -> BundleSpec:
    return BundleSpec(libraries={(HERE, "release"): release}, **changes)


@pytest.mark.ray_too
def test_unsigned_bundle_loads_with_the_manifest_name_and_version(
    tmp_path: Path, hello_release: bytes, isolation: str
) -> None:
    bundle = spec(hello_release, name="hello-bundled", version="3.1.4").write(tmp_path / "h.rbp")
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.call("echo", {"message": "hi"}) == {"message": "hi", "length": 2}
        assert plugin.metadata.name == "hello-bundled"
        assert plugin.metadata.version == "3.1.4"
        assert plugin.metadata.trust == "unsigned"
        assert plugin.state is plugbridge.LifecycleState.ACTIVE


def test_default_variant_is_release_and_another_can_be_chosen(
    tmp_path: Path, hello_release: bytes, hello_debug: bytes, isolation: str
) -> None:
    libraries = {(HERE, "release"): hello_release, (HERE, "debug"): hello_debug}
    bundle = BundleSpec(libraries=libraries).write(tmp_path / "h.rbp")
    with (
        plugbridge.load(bundle, isolation=isolation) as release,
        pytest.raises(UnknownMessageType),
    ):
        release.call("test.deep", {"depth": 0})  # only the debug build has its hooks
    with plugbridge.load(bundle, isolation=isolation, variant="debug") as debug:
        assert debug.call("test.deep", {"depth": 0}) is None


def test_unknown_variant_names_the_variants_there(
    tmp_path: Path, hello_release: bytes, hello_debug: bytes
) -> None:
    libraries = {(HERE, "release"): hello_release, (HERE, "debug"): hello_debug}
    bundle = BundleSpec(libraries=libraries).write(tmp_path / "h.rbp")
    with pytest.raises(BundleError, match=r"no variant 'fast' for .*: debug, release$"):
        plugbridge.load(bundle, variant="fast")


def test_missing_platform_names_the_platforms_the_bundle_has(
    tmp_path: Path, hello_release: bytes
) -> None:
    libraries = {(platform, "release"): hello_release for platform in OTHER_PLATFORMS}
    bundle = BundleSpec(libraries=libraries).write(tmp_path / "h.rbp")
    with pytest.raises(BundleError) as caught:
        plugbridge.load(bundle)
    assert f"no library for this platform ({HERE})" in caught.value.message
    assert caught.value.message.endswith("darwin-aarch64, windows-x86_64")
    assert isinstance(caught.value, plugbridge.InitializationFailed)
    assert caught.value.code == plugbridge.ErrorCode.INITIALIZATION_FAILED


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_bundle_versions_1_0_and_1_1_load(
    tmp_path: Path, hello_release: bytes, version: str, isolation: str
) -> None:
    extra = {"build_info": {"built_by": "CI", "git": {"commit": "abc"}}} if version == "1.1" else {}
    bundle = spec(hello_release, bundle_version=version, variant_extra=extra).write(
        tmp_path / "h.rbp"
    )
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.call("math.add", {"a": 2, "b": 3}) == {"result": 5}


@pytest.mark.parametrize("version", ["2.0", "1.2", "1", ""])
def test_unsupported_bundle_version_is_refused(
    tmp_path: Path, hello_release: bytes, version: str
) -> None:
    bundle = spec(hello_release, bundle_version=version).write(tmp_path / "h.rbp")
    with pytest.raises(BundleError, match=rf"unsupported bundle version '{version}'"):
        plugbridge.load(bundle)


def test_tampered_library_fails_its_checksum_naming_the_file(
    tmp_path: Path, hello_release: bytes, isolation: str
) -> None:
    entries = spec(hello_release).entries()
    entries[library_entry()] = hello_release + b"\0"
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=rf"checksum mismatch for {library_entry()}: "):
        plugbridge.load(bundle, isolation=isolation)


def test_manifest_naming_a_library_the_bundle_lacks(tmp_path: Path, hello_release: bytes) -> None:
    entries = spec(hello_release).entries()
    del entries[library_entry()]
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=r"names library .* which bundle .* does not hold"):
        plugbridge.load(bundle)


def test_not_a_zip(tmp_path: Path, hello_release: bytes) -> None:
    bundle = tmp_path / "h.rbp"
    bundle.write_bytes(hello_release)  # an ELF file, not a zip
    with pytest.raises(BundleError, match="is not a zip archive"):
        plugbridge.load(bundle)


def test_bundle_not_found(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle not found"):
        plugbridge.load(tmp_path / "missing.rbp")


def test_no_manifest(tmp_path: Path, hello_release: bytes) -> None:
    bundle = write_zip(tmp_path / "h.rbp", {library_entry(): hello_release})
    with pytest.raises(BundleError, match=r"has no manifest\.json"):
        plugbridge.load(bundle)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.update(plugin={"name": "x"}), r"missing required field `version`"),
        (lambda m: m["plugin"].update(name=""), r"plugin\.name is empty"),
        (lambda m: m.update(platforms={}), "lists no platforms"),
        (lambda m: m["plugin"].update(version=7), r"Expected `str`, got `int`"),
        (
            lambda m: m["platforms"][HERE]["variants"].update(
                debug=m["platforms"][HERE]["variants"].pop("release")
            ),
            "has no 'release' variant",
        ),
        (
            lambda m: m["platforms"][HERE]["variants"]["release"].update(checksum="md5:00"),
            "is not 'sha256:' and 64 hex digits",
        ),
        (
            lambda m: m["platforms"][HERE]["variants"]["release"].update(library="../x.so"),
            r"climbs out of the bundle with '\.\.'",
        ),
    ],
)
def test_invalid_manifest_names_the_problem(
    tmp_path: Path, hello_release: bytes, change: object, problem: str
) -> None:
    entries = spec(hello_release).entries()
    manifest = json.loads(entries["manifest.json"])
    change(manifest)  # type: ignore[operator]
    entries["manifest.json"] = json.dumps(manifest).encode()
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=r"invalid manifest\.json: .*" + problem):
        plugbridge.load(bundle)


def test_manifest_that_is_not_json(tmp_path: Path, hello_release: bytes) -> None:
    entries = spec(hello_release).entries()
    entries["manifest.json"] = b"{not json"
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=r"invalid manifest\.json: JSON is malformed"):
        plugbridge.load(bundle)


@pytest.mark.ray_too
def test_reload_reads_and_verifies_the_bundle_again(
    tmp_path: Path, hello_release: bytes, hello_debug: bytes, isolation: str
) -> None:
    bundle = spec(hello_release, version="1.0.0").write(tmp_path / "h.rbp")
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.metadata.version == "1.0.0"
        spec(hello_debug, version="2.0.0").write(bundle)
        plugin.reload()
        assert plugin.metadata.version == "2.0.0"
        assert plugin.call("test.deep", {"depth": 0}) is None  # the new library serves
        entries = spec(hello_release, version="3.0.0").entries()
        entries[library_entry()] = hello_release + b"tampered"
        write_zip(bundle, entries)
        with pytest.raises(BundleError, match="checksum mismatch"):
            plugin.reload()
        assert plugin.metadata.version == "2.0.0"  # the old instance keeps serving
        assert plugin.call("echo", {"message": "still"}) == {"message": "still", "length": 5}


def test_variant_and_trusted_keys_are_ignored_for_other_sources(
    tmp_path: Path, hello_release: bytes
) -> None:
    library = tmp_path / LIB_NAME
    library.write_bytes(hello_release)
    with plugbridge.load(library, variant="debug", trusted_keys=["RWQ-not-a-key"]) as plugin:
        assert plugin.metadata.trust == "unsigned"
        assert plugin.metadata.name == "hello_c"


def test_variant_must_be_a_string(tmp_path: Path, hello_release: bytes) -> None:
    bundle = spec(hello_release).write(tmp_path / "h.rbp")
    with pytest.raises(ConfigError, match="variant must be a string"):
        plugbridge.load(bundle, variant=1)


@pytest.mark.ray_too
def test_load_leaves_no_file_behind_after_success_failure_and_shutdown(
    tmp_path: Path, own_temp_dir: Path, hello_release: bytes, isolation: str
) -> None:
    good = spec(hello_release).write(tmp_path / "good.rbp")
    entries = spec(hello_release).entries()
    entries[library_entry()] = b"\x7fELF not really a library"
    entries["manifest.json"] = json.dumps(spec(b"\x7fELF not really a library").manifest()).encode()
    unloadable = write_zip(tmp_path / "bad.rbp", entries)  # verifies, but cannot be mapped
    plugin = plugbridge.load(good, isolation=isolation)
    assert list(own_temp_dir.iterdir()) == []  # while it runs
    plugin.shutdown()
    with pytest.raises(plugbridge.InitializationFailed, match="cannot load native library"):
        plugbridge.load(unloadable, isolation=isolation)
    assert list(own_temp_dir.iterdir()) == []


LIB_NAME = "libhello_c.so"
