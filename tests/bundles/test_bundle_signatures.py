"""The signature policy of bundle loading: trusted keys (argument or
``PLUGBRIDGE_TRUSTED_KEYS``) against the key a bundle carries itself, manifest first, then
the chosen library; ``metadata.trust`` says which held."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import BundleError, ConfigError
from plugbridge._bundle.minisign import PublicKey, SecretKey

from .conftest import HERE, BundleSpec, library_entry, sign_entry, write_zip

Keys = dict[str, tuple[SecretKey, PublicKey]]


def signed(release: bytes, signer: SecretKey, **changes: Any) -> BundleSpec:
    return BundleSpec(libraries={(HERE, "release"): release}, sign_with=signer, **changes)


def test_self_signed_bundle_without_trusted_keys(
    tmp_path: Path, hello_release: bytes, keys: Keys, isolation: str
) -> None:
    bundle = signed(hello_release, keys["other"][0]).write(tmp_path / "h.rbp")
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.metadata.trust == "self-signed"
        assert plugin.call("echo", {"message": "x"}) == {"message": "x", "length": 1}


@pytest.mark.ray_too
def test_trusted_bundle_with_a_pub_file_or_a_base64_key(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any, isolation: str
) -> None:
    bundle = signed(hello_release, keys["publisher"][0]).write(tmp_path / "h.rbp")
    for trusted in (
        [pub_file("publisher")],
        keys["publisher"][1].to_base64(),
        [str(pub_file("other")), keys["publisher"][1].to_base64()],  # any one of them
    ):
        with plugbridge.load(bundle, isolation=isolation, trusted_keys=trusted) as plugin:
            assert plugin.metadata.trust == "trusted"
            assert plugin.call("greet", {"name": "Ann"}) is not None


def test_bundle_signed_by_another_key_than_the_trusted_one(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any
) -> None:
    bundle = signed(hello_release, keys["other"][0]).write(tmp_path / "h.rbp")
    with pytest.raises(BundleError) as caught:
        plugbridge.load(bundle, trusted_keys=[pub_file("publisher")])
    other, publisher = keys["other"][1].key_id_hex, keys["publisher"][1].key_id_hex
    assert caught.value.message == (
        f"manifest.json is signed by an untrusted key ({other}; trusted: {publisher})"
    )


def test_the_bundles_own_key_is_not_trusted_by_itself(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any
) -> None:
    """An attacker re-signs with their key and embeds the publisher's public key: the
    signature is by the attacker's key, whatever the manifest claims."""
    bundle = signed(hello_release, keys["other"][0], embed_key=keys["publisher"][1]).write(
        tmp_path / "h.rbp"
    )
    with pytest.raises(BundleError, match="signed by an untrusted key"):
        plugbridge.load(bundle, trusted_keys=[pub_file("publisher")])
    with pytest.raises(BundleError, match=r"bad signature on manifest\.json: signature was made"):
        plugbridge.load(bundle)  # and the self-check sees the claim does not hold


def test_tampered_manifest(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any, isolation: str
) -> None:
    entries = signed(hello_release, keys["publisher"][0]).entries()
    manifest = json.loads(entries["manifest.json"])
    manifest["plugin"]["version"] = "9.9.9"  # signature left as it was
    entries["manifest.json"] = json.dumps(manifest, indent=2).encode()
    bundle = write_zip(tmp_path / "h.rbp", entries)
    for trusted in (None, [pub_file("publisher")]):
        with pytest.raises(BundleError, match=r"\] bad signature on manifest\.json: bad signature"):
            plugbridge.load(bundle, isolation=isolation, trusted_keys=trusted)


def test_tampered_library_with_its_checksum_updated_fails_the_manifest_signature(
    tmp_path: Path, hello_release: bytes, hello_debug: bytes, keys: Keys, pub_file: Any
) -> None:
    good = signed(hello_release, keys["publisher"][0]).entries()
    swapped = BundleSpec(libraries={(HERE, "release"): hello_debug}).entries()
    entries = {**good, library_entry(): hello_debug}
    entries["manifest.json"] = swapped["manifest.json"]  # right checksum, unsigned by them
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=r"bad signature on manifest\.json"):
        plugbridge.load(bundle, trusted_keys=[pub_file("publisher")])


def test_tampered_library_in_a_signed_bundle_fails_its_checksum(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any, isolation: str
) -> None:
    entries = signed(hello_release, keys["publisher"][0]).entries()
    entries[library_entry()] = hello_release[:-1] + bytes([hello_release[-1] ^ 1])
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=f"checksum mismatch for {library_entry()}"):
        plugbridge.load(bundle, isolation=isolation, trusted_keys=[pub_file("publisher")])


def test_library_signature_is_checked_after_the_manifest(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any
) -> None:
    """The library's own ``.minisig`` must hold too: here it signs other bytes."""
    entries = signed(hello_release, keys["publisher"][0]).entries()
    entries[library_entry() + ".minisig"] = entries["manifest.json.minisig"]
    bundle = write_zip(tmp_path / "h.rbp", entries)
    for trusted in (None, [pub_file("publisher")]):
        with pytest.raises(BundleError, match=rf"\] bad signature on {library_entry()}: "):
            plugbridge.load(bundle, trusted_keys=trusted)


def test_unsigned_bundle_when_keys_are_required(
    tmp_path: Path, hello_release: bytes, pub_file: Any, isolation: str
) -> None:
    bundle = BundleSpec(libraries={(HERE, "release"): hello_release}).write(tmp_path / "h.rbp")
    with pytest.raises(BundleError) as caught:
        plugbridge.load(bundle, isolation=isolation, trusted_keys=[pub_file("publisher")])
    assert caught.value.message == (
        "missing signature: manifest.json is not signed (manifest.json.minisig is absent), "
        "and trusted keys require it"
    )


def test_signed_manifest_but_unsigned_library_when_keys_are_required(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any
) -> None:
    entries = signed(hello_release, keys["publisher"][0]).entries()
    del entries[library_entry() + ".minisig"]
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=rf"missing signature: {library_entry()} is not signed"):
        plugbridge.load(bundle, trusted_keys=[pub_file("publisher")])
    with plugbridge.load(bundle) as plugin:  # without keys: partly signed is not self-signed
        assert plugin.metadata.trust == "unsigned"


def test_library_signed_by_another_trusted_key_is_accepted(
    tmp_path: Path, hello_release: bytes, keys: Keys, pub_file: Any
) -> None:
    entries = signed(hello_release, keys["publisher"][0]).entries()
    sign_entry(entries, library_entry(), keys["other"][0])
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=f"{library_entry()} is signed by an untrusted key"):
        plugbridge.load(bundle, trusted_keys=[pub_file("publisher")])
    trusted = [pub_file("publisher"), pub_file("other")]
    with plugbridge.load(bundle, trusted_keys=trusted) as plugin:
        assert plugin.metadata.trust == "trusted"


def test_signature_without_a_key_to_check_it_is_refused(
    tmp_path: Path, hello_release: bytes, keys: Keys
) -> None:
    entries = signed(hello_release, keys["publisher"][0]).entries()
    manifest = json.loads(entries["manifest.json"])
    del manifest["public_key"]
    entries["manifest.json"] = json.dumps(manifest).encode()
    sign_entry(entries, "manifest.json", keys["publisher"][0])
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match="manifest carries no public_key to check it with"):
        plugbridge.load(bundle)


def test_trusted_keys_from_the_environment_read_at_each_load(
    tmp_path: Path,
    *,
    hello_release: bytes,
    keys: Keys,
    pub_file: Any,
    monkeypatch: pytest.MonkeyPatch,
    isolation: str,
) -> None:
    bundle = signed(hello_release, keys["publisher"][0]).write(tmp_path / "h.rbp")
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.metadata.trust == "self-signed"
    listed = os.pathsep.join([str(pub_file("other")), str(pub_file("publisher"))])
    monkeypatch.setenv("PLUGBRIDGE_TRUSTED_KEYS", listed)
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.metadata.trust == "trusted"
    monkeypatch.setenv("PLUGBRIDGE_TRUSTED_KEYS", str(pub_file("other")))
    with pytest.raises(BundleError, match="signed by an untrusted key"):
        plugbridge.load(bundle, isolation=isolation)
    # an explicit argument takes the variable's place (even an empty list)
    with plugbridge.load(bundle, trusted_keys=[pub_file("publisher")]) as plugin:
        assert plugin.metadata.trust == "trusted"
    with plugbridge.load(bundle, trusted_keys=[]) as plugin:
        assert plugin.metadata.trust == "self-signed"


def test_reload_keeps_the_keys_of_its_load(
    tmp_path: Path,
    hello_release: bytes,
    keys: Keys,
    pub_file: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = signed(hello_release, keys["publisher"][0]).write(tmp_path / "h.rbp")
    monkeypatch.setenv("PLUGBRIDGE_TRUSTED_KEYS", str(pub_file("publisher")))
    with plugbridge.load(bundle) as plugin:
        monkeypatch.delenv("PLUGBRIDGE_TRUSTED_KEYS")
        signed(hello_release, keys["other"][0], version="2.0.0").write(bundle)
        with pytest.raises(BundleError, match="signed by an untrusted key"):
            plugin.reload()
        signed(hello_release, keys["publisher"][0], version="2.0.0").write(bundle)
        plugin.reload()
        assert (plugin.metadata.version, plugin.metadata.trust) == ("2.0.0", "trusted")


def test_unusable_trusted_keys(tmp_path: Path, hello_release: bytes) -> None:
    bundle = BundleSpec(libraries={(HERE, "release"): hello_release}).write(tmp_path / "h.rbp")
    with pytest.raises(BundleError, match=r"as a trusted key: .*neither a minisign public key"):
        plugbridge.load(bundle, trusted_keys=["not-a-key"])
    (tmp_path / "garbage.pub").write_text("untrusted comment: x\nAAAA\n")
    with pytest.raises(BundleError, match=r"as a trusted key: .*garbage\.pub"):
        plugbridge.load(bundle, trusted_keys=[tmp_path / "garbage.pub"])
    with pytest.raises(ConfigError, match="trusted_keys must"):
        plugbridge.load(bundle, trusted_keys=42)
