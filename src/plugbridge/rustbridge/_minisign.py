"""``MinisignVerifier``: rustbridge's minisign check, answered by plugbridge's own minisign.

rustbridge's verifier takes a base64 public key (``RW…``) and answers ``verify(data,
signature_text)`` with True or False; a malformed key or signature is a ``ValueError``.
Here the parsing and the Ed25519 check are ``plugbridge._bundle.minisign``'s (libsodium
through PyNaCl, the library the ``minisign`` tool itself uses), so a signature holds for
the facade exactly when it holds for plugbridge's bundle loader.

One deliberate difference, the safe one: rustbridge checks only the signature line and
ignores the global signature over the trusted comment, so a signature whose trusted
comment was rewritten still "holds" there; here it does not (``False``), as with the
``minisign`` tool. A signature without its trusted comment and global signature (two
lines instead of four) is malformed here (``ValueError``): minisign never writes one.
"""

from __future__ import annotations

from .._bundle.minisign import PublicKey, SignatureError, parse_signature, verify


class MinisignVerifier:
    """Checks minisign signatures made by one public key.

    ``MinisignVerifier("RWS…").verify(data, signature_text)`` is True when the signature
    was made by this key over ``data`` (and its trusted comment is intact), else False.
    """

    def __init__(self, public_key_base64: str) -> None:
        """``ValueError`` if ``public_key_base64`` is not a minisign Ed25519 public key."""
        self._public_key = _public_key(public_key_base64)

    @staticmethod
    def _parse_public_key(public_key_base64: str) -> tuple[bytes, bytes]:
        """``(ed25519_public_key, key_id)`` of a base64 minisign key (rustbridge's helper);
        ``ValueError`` if it is not one."""
        key = _public_key(public_key_base64)
        return key.key, key.key_id

    @staticmethod
    def _parse_signature(signature_string: str) -> tuple[bytes, bytes, bool]:
        """``(key_id, signature, is_prehashed)`` of a ``.minisig`` text (rustbridge's
        helper); ``ValueError`` if it is malformed."""
        try:
            parsed = parse_signature(signature_string)
        except SignatureError as exc:
            raise ValueError(str(exc)) from None
        return parsed.key_id, parsed.signature, parsed.prehashed

    def verify(self, data: bytes, signature_string: str) -> bool:
        """Whether ``signature_string`` (a ``.minisig`` file's text) is this key's valid
        signature of ``data``. False for another key's signature or changed data or
        trusted comment; ``ValueError`` if the signature is malformed."""
        self._parse_signature(signature_string)  # malformed: ValueError, not False
        try:
            verify(bytes(data), signature_string, self._public_key)
        except SignatureError:
            return False
        return True


def _public_key(public_key_base64: str) -> PublicKey:
    if not isinstance(public_key_base64, str):
        raise ValueError(
            "a minisign public key is a base64 string ('RW…'), not "
            f"{type(public_key_base64).__name__}"
        )
    try:
        return PublicKey.from_base64(public_key_base64)
    except SignatureError as exc:
        raise ValueError(f"invalid minisign public key: {exc}") from None
