"""Fixtures for bundle tests: the C example compiled now, bundles zipped by hand, and a temp
directory of each test's own that must be empty when the test ends.

The zips are made here entry by entry (not with plugbridge's writer), so that a test can
make exactly the broken bundle it needs: a tampered manifest, an unsigned library, a
traversal entry, a lying size header.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugbridge._bundle.minisign import PublicKey, SecretKey, generate, sign
from plugbridge._bundle.platform import current_platform
from plugbridge._native.library import mapped_count, wait_for_unmapping
from tests.native.build import build_hello_c

HERE = current_platform() or "no-platform-key"
LIB_FILE = "libhello_c.so"
OTHER_PLATFORMS = ("darwin-aarch64", "windows-x86_64")


@pytest.fixture(scope="session")
def hello_release(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The C example as built for release: echo, greet, … but no test hooks."""
    return build_hello_c(tmp_path_factory.mktemp("release"), hooks=False).read_bytes()


@pytest.fixture(scope="session")
def hello_debug(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The C example with its test hooks (``test.deep`` answers): a telling second variant."""
    return build_hello_c(tmp_path_factory.mktemp("debug"), hooks=True).read_bytes()


@pytest.fixture(scope="session")
def keys() -> dict[str, tuple[SecretKey, PublicKey]]:
    """Two unencrypted key pairs: ``"publisher"`` (the one users trust) and ``"other"``."""
    return {"publisher": generate(None), "other": generate(None)}


@pytest.fixture
def pub_file(tmp_path: Path, keys: dict[str, tuple[SecretKey, PublicKey]]) -> Any:
    """``pub_file("publisher")``: the path of that key's minisign ``.pub`` file."""

    def write(who: str) -> Path:
        path = tmp_path / f"{who}.pub"
        keys[who][1].dump(path)
        return path

    return write


@pytest.fixture(autouse=True)
def own_temp_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every temp file this test's loads make (here and in its workers) goes to a fresh
    directory, which must be empty again when the test ends: nothing extracted stays."""
    directory = tmp_path_factory.mktemp("tempdir")
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.delenv("PLUGBRIDGE_TRUSTED_KEYS", raising=False)
    before = mapped_count()
    yield directory
    assert wait_for_unmapping(before, 30.0), "a private library copy stayed mapped"
    assert os.listdir(directory) == [], "a bundle load left files in the temp directory"


def library_entry(platform: str | None = HERE, variant: str = "release") -> str:
    return f"lib/{platform}/{variant}/{LIB_FILE}"


@dataclass
class BundleSpec:
    """A bundle to write: its libraries, manifest fields and signing, each changeable."""

    libraries: dict[tuple[str, str], bytes]
    """(platform, variant) -> library bytes."""
    name: str = "hello-c"
    version: str = "1.0.0"
    bundle_version: str = "1.0"
    sign_with: SecretKey | None = None
    """Signs the manifest and every library, and embeds the key as ``public_key``."""
    embed_key: PublicKey | None = None
    """The ``public_key`` to embed instead of the signer's own (a key swap)."""
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    variant_extra: dict[str, Any] = field(default_factory=dict)
    """Fields added to every variant (bundle version 1.1 metadata)."""

    def manifest(self) -> dict[str, Any]:
        platforms: dict[str, Any] = {}
        for (platform, variant), data in self.libraries.items():
            variants = platforms.setdefault(platform, {"variants": {}})["variants"]
            variants[variant] = {
                "library": library_entry(platform, variant),
                "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
                **self.variant_extra,
            }
        manifest: dict[str, Any] = {
            "bundle_version": self.bundle_version,
            "plugin": {"name": self.name, "version": self.version},
            "platforms": platforms,
        }
        key = self.embed_key or (self.sign_with.public_key() if self.sign_with else None)
        if key is not None:
            manifest["public_key"] = key.to_base64()
        manifest.update(self.manifest_extra)
        return manifest

    def entries(self) -> dict[str, bytes]:
        """Archive entries in rustbridge's order (each signature right after its file)."""
        out: dict[str, bytes] = {}
        self._add(out, "manifest.json", json.dumps(self.manifest(), indent=2).encode())
        for (platform, variant), data in self.libraries.items():
            self._add(out, library_entry(platform, variant), data)
        return out

    def _add(self, out: dict[str, bytes], name: str, data: bytes) -> None:
        out[name] = data
        if self.sign_with is not None:
            out[name + ".minisig"] = sign(
                data, self.sign_with, trusted_comment=f"timestamp:0\tfile:{name}"
            ).encode()

    def write(self, path: Path) -> Path:
        return write_zip(path, self.entries())


def write_zip(path: Path, entries: dict[str, bytes] | list[tuple[str, bytes]]) -> Path:
    """A deflated zip holding ``entries`` as given (names are not checked)."""
    items = entries.items() if isinstance(entries, dict) else entries
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in items:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    path.write_bytes(buffer.getvalue())  # one write: a reload never sees half a bundle
    return path


def sign_entry(entries: dict[str, bytes], name: str, key: SecretKey) -> None:
    """(Re)sign ``entries[name]`` with ``key``."""
    entries[name + ".minisig"] = sign(entries[name], key, trusted_comment="timestamp:0").encode()
