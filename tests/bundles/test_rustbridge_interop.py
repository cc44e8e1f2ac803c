"""Bundles written by ``plugbridge bundle create`` load in rustbridge's own Python host
(``rustbridge`` on PyPI, 1.0.x) with its signature checks on: the interoperability oracle.

rustbridge's ``BundleLoader(verify_signatures=True)`` requires ``manifest.json.minisig``,
a ``.minisig`` for the library and the manifest's ``public_key``; it checks the sha256
checksum and both signatures, then loads the extracted library with ``ctypes``.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from plugbridge._bundle import minisign
from plugbridge._bundle.minisign import PublicKey
from plugbridge._bundle.platform import current_platform
from plugbridge._cli import main

from .conftest import write_zip

rustbridge = pytest.importorskip("rustbridge", reason="the dev extra installs rustbridge")

HERE = current_platform()


@pytest.fixture(autouse=True)
def rustbridge_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """rustbridge extracts each load into a temp dir it never removes: give it its own
    (the bundle tests' temp dir must stay empty of plugbridge's files)."""
    directory = tmp_path / "rustbridge-tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def made(tmp_path: Path, hello_release: bytes, hello_debug: bytes) -> tuple[Path, PublicKey]:
    """``plugbridge keygen`` then ``plugbridge bundle create --sign-key`` of the C example
    (release and debug), with a schema and custom metadata."""
    key = tmp_path / "publisher.key"
    assert main(["keygen", "-o", str(key), "--unencrypted"]) == 0
    release, debug = tmp_path / "rel" / "libhello_c.so", tmp_path / "dbg" / "libhello_c.so"
    for path, data in ((release, hello_release), (debug, hello_debug)):
        path.parent.mkdir()
        path.write_bytes(data)
    schema = tmp_path / "schema.json"
    schema.write_text('{"$schema": "http://json-schema.org/draft-07/schema#"}')
    out = tmp_path / "hello.rbp"
    argv = [
        "bundle", "create", "-o", str(out), "--name", "hello-c", "--version", "1.4.0",
        "--lib", f"{HERE}:{release}", "--lib", f"{HERE}:debug:{debug}",
        "--schema", str(schema), "--metadata", "origin=plugbridge", "--sign-key", str(key),
    ]  # fmt: skip
    assert main(argv) == 0
    return out, PublicKey.parse(Path(f"{key}.pub"))


def test_rustbridge_loads_a_plugbridge_bundle_with_signature_checks_on(
    made: tuple[Path, PublicKey],
) -> None:
    bundle, _ = made
    loader = rustbridge.BundleLoader(verify_signatures=True)
    with loader.load(bundle) as plugin:
        answer = json.loads(plugin.call("echo", json.dumps({"message": "from rustbridge"})))
        assert answer == {"message": "from rustbridge", "length": 15}
        assert plugin.state == rustbridge.LifecycleState.ACTIVE


def test_rustbridge_loads_the_chosen_variant(made: tuple[Path, PublicKey]) -> None:
    bundle, _ = made
    loader = rustbridge.BundleLoader(verify_signatures=True)
    config = rustbridge.PluginConfig.defaults()
    with loader.load_variant_with_config(bundle, "debug", config) as plugin:
        assert json.loads(plugin.call("test.deep", json.dumps({"depth": 0}))) is None
    with loader.load(bundle) as plugin, pytest.raises(rustbridge.PluginException):
        plugin.call("test.deep", json.dumps({"depth": 0}))  # release: no test hooks


def test_rustbridge_checks_against_the_publishers_key(made: tuple[Path, PublicKey]) -> None:
    bundle, public = made
    pinned = rustbridge.BundleLoader(verify_signatures=True, public_key_override=public.to_base64())
    with pinned.load(bundle) as plugin:
        assert json.loads(plugin.call("echo", '{"message": "x"}'))["length"] == 1
    _, stranger = minisign.generate()
    wrong = rustbridge.BundleLoader(
        verify_signatures=True, public_key_override=stranger.to_base64()
    )
    with pytest.raises(rustbridge.PluginException, match="Manifest signature verification"):
        wrong.load(bundle)


def test_rustbridge_refuses_a_tampered_library_of_a_plugbridge_bundle(
    made: tuple[Path, PublicKey],
) -> None:
    bundle, _ = made
    with zipfile.ZipFile(bundle) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries[f"lib/{HERE}/release/libhello_c.so"] += b"\0"
    write_zip(bundle, entries)
    loader = rustbridge.BundleLoader(verify_signatures=True)
    with pytest.raises(rustbridge.PluginException, match="Checksum verification failed"):
        loader.load(bundle)


def test_rustbridge_reads_the_manifest_plugbridge_writes(made: tuple[Path, PublicKey]) -> None:
    bundle, public = made
    loader = rustbridge.BundleLoader(verify_signatures=True)
    manifest = loader.get_manifest(bundle)
    assert (manifest.bundle_version, manifest.plugin_name, manifest.plugin_version) == (
        "1.1", "hello-c", "1.4.0"
    )  # fmt: skip
    assert manifest.public_key == public.to_base64()
    assert sorted(loader.list_variants(bundle, HERE)) == ["debug", "release"]
    build = manifest.get_effective_build_info(HERE, "debug")
    assert build is not None
    assert build.custom == {"origin": "plugbridge"}
    assert loader.read_schema(bundle, "schema.json").startswith('{"$schema"')
