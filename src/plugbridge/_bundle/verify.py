"""Verifying a bundle and taking the library this machine needs out of it, in memory.

The order is fixed, and nothing of the bundle is believed before it is checked:

1. the archive's directory (``archive``): entry names, sizes, expansion;
2. the manifest: with trusted keys, ``manifest.json.minisig`` must hold for one of them
   *before* the manifest is even parsed; then the manifest is parsed and checked;
3. the platform key and the variant pick one library; its bytes are read (bounded) and
   must match the manifest's ``sha256:`` checksum;
4. the library's own signature, by the same rule as the manifest's.

Signature policy. With trusted keys, the manifest and the library must each carry a
signature by one of them (the key the bundle carries itself, ``public_key``, plays no
part): trust ``"trusted"``. Without, every signature present is still checked, against the
bundle's own key (a corruption check, which proves nothing about who signed): trust
``"self-signed"`` when the manifest and the library are both signed, else ``"unsigned"``.

The result holds the library's verified bytes: they are what gets loaded, never a file
read again later.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import BundleError
from .._sources import BundledLibrary, BundleSource, NativeSource
from .archive import BundleArchive
from .keys import describe_keys
from .manifest import (
    DEFAULT_VARIANT,
    MANIFEST,
    Manifest,
    checksum_hex,
    parse_manifest,
    signature_name,
)
from .minisign import PublicKey, SignatureError, format_key_id, signature_key_id, verify
from .platform import current_platform

MANIFEST_LIMIT = 1024 * 1024
"""Largest ``manifest.json`` read."""
SIGNATURE_LIMIT = 64 * 1024
"""Largest ``.minisig`` read (minisign's own comments are bounded well below this)."""

TRUSTED = "trusted"
SELF_SIGNED = "self-signed"
UNSIGNED = "unsigned"


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle that passed every check, with the chosen library's bytes."""

    manifest: Manifest
    platform: str
    variant: str
    library: BundledLibrary


def open_bundle(source: BundleSource) -> NativeSource:
    """Read and verify ``source`` from disk now; the native source to start from."""
    verified = verify_bundle(source.path, source.variant, source.trusted_keys)
    return NativeSource(source.path, verified.library)


def verify_bundle(
    path: str | os.PathLike[str],
    variant: str | None = None,
    trusted_keys: Sequence[PublicKey] | None = None,
    platform: str | None = None,
) -> VerifiedBundle:
    """Check the bundle at ``path`` and read the library of ``platform`` (default: this
    machine's) and ``variant`` (default ``release``); ``BundleError`` names the problem."""
    policy = _Signatures(tuple(trusted_keys) if trusted_keys else None)
    with BundleArchive(path) as archive:
        if not archive.has(MANIFEST):
            raise BundleError(f"bundle {archive.path} has no {MANIFEST}")
        manifest_bytes = archive.read(MANIFEST, MANIFEST_LIMIT)
        if policy.trusted is not None:  # the signature before the manifest is believed
            policy.check(archive, MANIFEST, manifest_bytes, None)
            manifest = parse_manifest(manifest_bytes)
            manifest_signed = True
        else:
            manifest = parse_manifest(manifest_bytes)
            manifest_signed = policy.check(archive, MANIFEST, manifest_bytes, manifest)
        key = current_platform() if platform is None else platform
        info = manifest.variant(key, variant)
        assert key is not None  # ``variant`` refuses a machine with no platform key
        if not archive.has(info.library):
            raise BundleError(
                f"the manifest names library {info.library!r}, which bundle {archive.path} "
                "does not hold"
            )
        data = archive.read(info.library)
        expected = checksum_hex(info.checksum)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(
                f"checksum mismatch for {info.library}: the manifest says sha256:{expected}, "
                f"the file is sha256:{actual}"
            )
        library_signed = policy.check(archive, info.library, data, manifest)
    if policy.trusted is not None:
        trust = TRUSTED
    elif manifest_signed and library_signed:
        trust = SELF_SIGNED
    else:
        trust = UNSIGNED
    library = BundledLibrary(
        manifest.plugin.name, manifest.plugin.version, trust, info.library, data
    )
    return VerifiedBundle(manifest, key, variant or DEFAULT_VARIANT, library)


class _Signatures:
    """The signature rule for one verification (see the module docstring)."""

    def __init__(self, trusted: tuple[PublicKey, ...] | None) -> None:
        self.trusted = trusted
        self._own: PublicKey | None = None

    def check(
        self, archive: BundleArchive, entry: str, data: bytes, manifest: Manifest | None
    ) -> bool:
        """Whether ``entry`` carries a signature that holds; ``BundleError`` if one is
        needed and missing, or present and wrong. ``manifest``: the bundle's own key's
        source, for checks without trusted keys."""
        sig_entry = signature_name(entry)
        if not archive.has(sig_entry):
            if self.trusted is not None:
                raise BundleError(
                    f"missing signature: {entry} is not signed ({sig_entry} is absent), and "
                    "trusted keys require it"
                )
            return False
        text = archive.read_text(sig_entry, SIGNATURE_LIMIT)
        key = self._key_for(entry, text, manifest)
        try:
            verify(data, text, key)
        except SignatureError as exc:
            raise BundleError(f"bad signature on {entry}: {exc}") from None
        return True

    def _key_for(self, entry: str, signature: str, manifest: Manifest | None) -> PublicKey:
        if self.trusted is None:
            return self._own_key(entry, manifest)
        try:
            key_id = signature_key_id(signature)
        except SignatureError as exc:
            raise BundleError(f"bad signature on {entry}: {exc}") from None
        for key in self.trusted:
            if key.key_id == key_id:
                return key
        raise BundleError(
            f"{entry} is signed by an untrusted key ({format_key_id(key_id)}; trusted: "
            f"{describe_keys(self.trusted)})"
        )

    def _own_key(self, entry: str, manifest: Manifest | None) -> PublicKey:
        if self._own is not None:
            return self._own
        assert manifest is not None
        if not manifest.public_key:
            raise BundleError(
                f"bad signature on {entry}: it is signed, but the manifest carries no "
                "public_key to check it with"
            )
        try:
            self._own = PublicKey.from_base64(manifest.public_key)
        except SignatureError as exc:
            raise BundleError(f"invalid {MANIFEST}: public_key: {exc}") from None
        return self._own
