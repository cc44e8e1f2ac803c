"""minisign keys and signatures, in the formats the ``minisign`` tool reads and writes.

Everything here interoperates with minisign (and the Rust ``minisign`` crate rustbridge
signs with) both ways:

- a public key is ``"Ed" | key_id[8] | ed25519_pk[32]``, base64 (the ``RW…`` string), or a
  ``.pub`` file: ``untrusted comment: …`` then that string;
- a signature (``.minisig``) is four lines: ``untrusted comment: …``, base64 of
  ``alg[2] | key_id[8] | sig[64]``, ``trusted comment: …``, base64 of the *global*
  signature, Ed25519 over ``sig || trusted_comment``. ``alg`` is ``ED`` (the signature is
  over the BLAKE2b-512 of the data: minisign's default) or the legacy ``Ed`` (over the
  data itself). A signature counts only if both the signature and the global signature
  hold: otherwise the trusted comment could be swapped;
- a secret key file is ``untrusted comment: …`` then base64 of ``"Ed" | kdf[2] | "B2" |
  salt[32] | opslimit[8 LE] | memlimit[8 LE] | key_id[8] | sk[64] | chk[32]``, where ``sk``
  is libsodium's ``seed || pk`` and ``chk`` the BLAKE2b-256 of ``"Ed" | key_id | sk``. With
  kdf ``Sc`` the last 104 bytes are XORed with scrypt(password, salt) at the parameters
  libsodium's ``crypto_pwhash_scryptsalsa208sha256`` derives from opslimit and memlimit;
  with kdf ``\\0\\0`` (``minisign -W``) they are in clear, and minisign leaves ``chk`` zero.

Ed25519 is libsodium's, through PyNaCl (never a curve of our own): the library the minisign
tool verifies with, so a signature holds here exactly when it holds for minisign (libsodium
refuses small-order and non-canonical keys and points, some of which OpenSSL accepts).
PyNaCl is imported on the first sign, verify or key derivation, not with this module, so
what imports this module only to parse keys or for its names (the CLI's parser) does not
pay the ~20 ms of loading libsodium. BLAKE2b and scrypt are hashlib's. Every failure is a
``SignatureError`` whose message names the exact problem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nacl.signing

__all__ = [
    "MEMLIMIT_SENSITIVE",
    "OPSLIMIT_SENSITIVE",
    "PublicKey",
    "SecretKey",
    "Signature",
    "SignatureError",
    "format_key_id",
    "generate",
    "parse_signature",
    "secret_key_encrypted",
    "sign",
    "signature_key_id",
    "verify",
]

UNTRUSTED_PREFIX = "untrusted comment: "
TRUSTED_PREFIX = "trusted comment: "

_KEY_ALG = b"Ed"
"""The algorithm of every key, and of legacy signatures over the data itself."""
_PREHASHED_ALG = b"ED"
"""Signatures over the BLAKE2b-512 of the data (minisign's default since 0.10)."""
_KDF_SCRYPT = b"Sc"
_KDF_NONE = b"\0\0"
_CHK_BLAKE2B = b"B2"

_KEY_ID_LEN = 8
_PK_LEN = 32
_SIG_LEN = 64
_SEED_LEN = 32
_PUBLIC_KEY_LEN = 2 + _KEY_ID_LEN + _PK_LEN  # 42
_SIGNATURE_LEN = 2 + _KEY_ID_LEN + _SIG_LEN  # 74
_SALT_LEN = 32
_CHK_LEN = 32
_KEYNUM_SK_LEN = _KEY_ID_LEN + _SEED_LEN + _PK_LEN + _CHK_LEN  # 104: the encrypted part
_SECRET_KEY_LEN = 2 + 2 + 2 + _SALT_LEN + 8 + 8 + _KEYNUM_SK_LEN  # 158

OPSLIMIT_SENSITIVE = 33_554_432
"""libsodium's ``crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_SENSITIVE``: what minisign uses."""
MEMLIMIT_SENSITIVE = 1_073_741_824
"""libsodium's ``..._MEMLIMIT_SENSITIVE`` (1 GiB): what minisign uses."""

_COMMENT_MAX = 1003
"""Longest untrusted comment minisign reads back (its line buffer is 1024 bytes)."""
_TRUSTED_COMMENT_MAX = 8173
"""Longest trusted comment minisign reads back (its line buffer is 8192 bytes)."""
_HASHLIB_MAXMEM = 2**31 - 1
"""hashlib.scrypt refuses a larger ``maxmem``."""


class SignatureError(Exception):
    """A key or signature that is malformed, or a signature that does not hold."""


def format_key_id(key_id: bytes) -> str:
    """A key id as minisign prints it (``minisign public key 7A6DA741B898E691``)."""
    return f"{int.from_bytes(key_id, 'little'):016X}"


def _b64decode(text: str, what: str, length: int) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None
    if len(raw) != length:
        raise SignatureError(f"{what} holds {len(raw)} bytes, expected {length}")
    return raw


def _read_text(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SignatureError(f"{what} {os.fspath(path)!r} is not a text file") from None
    except OSError as exc:
        raise SignatureError(
            f"cannot read {what} {os.fspath(path)!r}: {exc.strerror or exc}"
        ) from None


def _lines(text: str) -> list[str]:
    """Split as minisign reads: on newlines, each line's trailing CR dropped."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _write_private(path: str | os.PathLike[str], text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), mode)
        out.write(text)


# ---------------------------------------------------------------------------------------
# Public keys


@dataclass(frozen=True)
class PublicKey:
    """A minisign public key: its 8-byte key id and its 32-byte Ed25519 key."""

    key_id: bytes
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key_id) != _KEY_ID_LEN or len(self.key) != _PK_LEN:
            raise SignatureError("a public key is an 8-byte key id and a 32-byte Ed25519 key")

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        """The key from its base64 form (the ``RW…`` string)."""
        raw = _b64decode(text, "public key", _PUBLIC_KEY_LEN)
        if raw[:2] != _KEY_ALG:
            raise SignatureError(
                f"public key algorithm {raw[:2]!r} is not supported (expected {_KEY_ALG!r})"
            )
        return cls(key_id=raw[2 : 2 + _KEY_ID_LEN], key=raw[2 + _KEY_ID_LEN :])

    @classmethod
    def from_file_text(cls, text: str, source: str = "public key file") -> PublicKey:
        """The key from the text of a ``.pub`` file (an untrusted comment, then the key)."""
        lines = _lines(text)
        if len(lines) == 1:
            return cls.from_base64(lines[0])
        if len(lines) != 2 or not lines[0].startswith(UNTRUSTED_PREFIX):
            raise SignatureError(
                f"{source} is not a minisign public key file "
                f"(expected an '{UNTRUSTED_PREFIX}…' line, then the base64 key)"
            )
        try:
            return cls.from_base64(lines[1])
        except SignatureError as exc:
            raise SignatureError(f"{source}: {exc}") from None

    @classmethod
    def parse(cls, text_or_path: str | os.PathLike[str]) -> PublicKey:
        """A key given as its base64 string (``RW…``), a ``.pub`` file's text, or a path."""
        if isinstance(text_or_path, str):
            text = text_or_path.strip()
            if "\n" in text:
                return cls.from_file_text(text)
            if _looks_like_base64_key(text):
                return cls.from_base64(text)
            if not os.path.exists(text):
                raise SignatureError(
                    f"{text!r} is neither a minisign public key (base64 'RW…') "
                    "nor an existing .pub file"
                )
        path = os.fspath(text_or_path)
        return cls.from_file_text(_read_text(path, "public key file"), f"public key file {path!r}")

    def to_base64(self) -> str:
        return base64.b64encode(_KEY_ALG + self.key_id + self.key).decode("ascii")

    @property
    def key_id_hex(self) -> str:
        """The key id as minisign prints it."""
        return format_key_id(self.key_id)

    def to_file_text(self) -> str:
        """The text of a minisign ``.pub`` file."""
        return f"{UNTRUSTED_PREFIX}minisign public key {self.key_id_hex}\n{self.to_base64()}\n"

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write a minisign ``.pub`` file."""
        Path(path).write_text(self.to_file_text(), encoding="utf-8")


def _looks_like_base64_key(text: str) -> bool:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == _PUBLIC_KEY_LEN


# ---------------------------------------------------------------------------------------
# Signatures


@dataclass(frozen=True)
class Signature:
    """A parsed ``.minisig`` file."""

    algorithm: bytes
    """``b"ED"`` (over the BLAKE2b-512 of the data) or ``b"Ed"`` (legacy, over the data)."""
    key_id: bytes
    signature: bytes
    untrusted_comment: str
    trusted_comment: str
    global_signature: bytes

    @property
    def prehashed(self) -> bool:
        return self.algorithm == _PREHASHED_ALG

    def to_text(self) -> str:
        sig = base64.b64encode(self.algorithm + self.key_id + self.signature).decode("ascii")
        glob = base64.b64encode(self.global_signature).decode("ascii")
        return (
            f"{UNTRUSTED_PREFIX}{self.untrusted_comment}\n{sig}\n"
            f"{TRUSTED_PREFIX}{self.trusted_comment}\n{glob}\n"
        )


def parse_signature(signature_file_text: str) -> Signature:
    """Parse a ``.minisig`` file's text; ``SignatureError`` names what is malformed."""
    lines = _lines(signature_file_text)
    if len(lines) != 4:
        raise SignatureError(
            f"malformed signature: {len(lines)} lines, expected 4 (untrusted comment, "
            "signature, trusted comment, global signature)"
        )
    untrusted, sig_line, trusted, global_line = lines
    if not untrusted.startswith(UNTRUSTED_PREFIX):
        raise SignatureError(
            f"malformed signature: line 1 does not start with {UNTRUSTED_PREFIX!r}"
        )
    if not trusted.startswith(TRUSTED_PREFIX):
        raise SignatureError(f"malformed signature: line 3 does not start with {TRUSTED_PREFIX!r}")
    raw = _b64decode(sig_line, "malformed signature: line 2", _SIGNATURE_LEN)
    algorithm = raw[:2]
    if algorithm not in (_PREHASHED_ALG, _KEY_ALG):
        raise SignatureError(
            f"malformed signature: algorithm {algorithm!r} is not supported "
            f"(expected {_PREHASHED_ALG!r} or the legacy {_KEY_ALG!r})"
        )
    return Signature(
        algorithm=algorithm,
        key_id=raw[2 : 2 + _KEY_ID_LEN],
        signature=raw[2 + _KEY_ID_LEN :],
        untrusted_comment=untrusted[len(UNTRUSTED_PREFIX) :],
        trusted_comment=trusted[len(TRUSTED_PREFIX) :],
        global_signature=_b64decode(global_line, "malformed signature: line 4", _SIG_LEN),
    )


def signature_key_id(signature_file_text: str) -> bytes:
    """The id of the key that made a signature (to choose among trusted keys)."""
    return parse_signature(signature_file_text).key_id


def _ed25519_holds(key: bytes, signature: bytes, message: bytes) -> bool:
    import nacl.exceptions
    import nacl.signing

    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    except ValueError:  # nacl.exceptions.ValueError is one: a key that is not 32 bytes
        raise SignatureError("the public key is not a valid Ed25519 key") from None
    return True


def _blake2b512(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=64).digest()


def verify(data: bytes, signature_file_text: str, key: PublicKey) -> str:
    """Check a minisign signature of ``data`` by ``key``; return its trusted comment.

    Raises ``SignatureError`` if the signature is malformed, was made by another key, does
    not match the data, or its global signature does not match its trusted comment.
    """
    sig = parse_signature(signature_file_text)
    if not hmac.compare_digest(sig.key_id, key.key_id):
        raise SignatureError(
            f"signature was made by key {format_key_id(sig.key_id)}, not by key {key.key_id_hex}"
        )
    message = _blake2b512(data) if sig.prehashed else data
    if not _ed25519_holds(key.key, sig.signature, message):
        raise SignatureError(
            f"bad signature: the data does not match the signature by key {key.key_id_hex}"
        )
    if not _ed25519_holds(
        key.key, sig.global_signature, sig.signature + sig.trusted_comment.encode("utf-8")
    ):
        raise SignatureError(
            "bad global signature: the trusted comment does not match its signature "
            f"by key {key.key_id_hex}"
        )
    return sig.trusted_comment


# ---------------------------------------------------------------------------------------
# Secret keys


def _scrypt_parameters(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(N, r, p) as libsodium's ``crypto_pwhash_scryptsalsa208sha256`` picks them."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        n_log2 = _n_log2(opslimit // (r * 4))
    else:
        n_log2 = _n_log2(memlimit // (r * 128))
        p = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF) // r
    return 1 << n_log2, r, p


def _n_log2(max_n: int) -> int:
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    return n_log2


def _key_stream(password: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    n, r, p = _scrypt_parameters(opslimit, memlimit)
    needed = 128 * r * (n + 2) + 128 * r * p
    if needed > _HASHLIB_MAXMEM - (1 << 20):
        raise SignatureError(
            f"the secret key's scrypt parameters need {needed} bytes of memory, "
            "more than this Python supports"
        )
    try:
        return hashlib.scrypt(
            password,
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=needed + (1 << 20),
            dklen=_KEYNUM_SK_LEN,
        )
    except (ValueError, MemoryError) as exc:
        raise SignatureError(f"cannot derive the secret key's encryption key: {exc}") from None


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _checksum(key_id: bytes, sk: bytes) -> bytes:
    return hashlib.blake2b(_KEY_ALG + key_id + sk, digest_size=_CHK_LEN).digest()


def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    import nacl.signing

    return nacl.signing.SigningKey(seed)


def _public_bytes(seed: bytes) -> bytes:
    return bytes(_signing_key(seed).verify_key)


@dataclass
class SecretKey:
    """A minisign secret key: its key id and Ed25519 seed (the public key follows from them).

    ``password`` is the one it was loaded with or generated for: ``dump`` uses it unless
    told otherwise (``None``: an unencrypted key).
    """

    key_id: bytes
    seed: bytes = field(repr=False)
    password: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key_id) != _KEY_ID_LEN or len(self.seed) != _SEED_LEN:
            raise SignatureError("a secret key is an 8-byte key id and a 32-byte Ed25519 seed")

    @classmethod
    def load(cls, path: str | os.PathLike[str], password: bytes | None) -> SecretKey:
        """Read a minisign secret key file (``password`` is ignored for unencrypted keys)."""
        source = f"secret key file {os.fspath(path)!r}"
        return cls.parse(_read_text(path, "secret key file"), password, source=source)

    @classmethod
    def parse(cls, text: str, password: bytes | None, *, source: str = "secret key") -> SecretKey:
        raw = _secret_key_bytes(text, source)
        kdf = raw[2:4]
        salt = raw[6 : 6 + _SALT_LEN]
        opslimit = int.from_bytes(raw[38:46], "little")
        memlimit = int.from_bytes(raw[46:54], "little")
        keynum_sk = raw[54:]
        encrypted = kdf == _KDF_SCRYPT
        if encrypted:
            if password is None:
                raise SignatureError(f"{source} is encrypted: a password is needed")
            keynum_sk = _xor(keynum_sk, _key_stream(password, salt, opslimit, memlimit))
        key_id = keynum_sk[:_KEY_ID_LEN]
        sk = keynum_sk[_KEY_ID_LEN : _KEY_ID_LEN + _SEED_LEN + _PK_LEN]
        chk = keynum_sk[-_CHK_LEN:]
        if not hmac.compare_digest(chk, _checksum(key_id, sk)) and (
            encrypted or chk != bytes(_CHK_LEN)
        ):
            if encrypted:
                raise SignatureError(f"wrong password for {source}")
            raise SignatureError(f"{source} is corrupted: its checksum does not match")
        seed, public = sk[:_SEED_LEN], sk[_SEED_LEN:]
        if _public_bytes(seed) != public:
            raise SignatureError(f"{source} is corrupted: its public half does not match")
        return cls(key_id=key_id, seed=seed, password=password if encrypted else None)

    def public_key(self) -> PublicKey:
        return PublicKey(key_id=self.key_id, key=_public_bytes(self.seed))

    def to_file_text(
        self,
        password: bytes | EllipsisType | None = ...,
        *,
        opslimit: int = OPSLIMIT_SENSITIVE,
        memlimit: int = MEMLIMIT_SENSITIVE,
    ) -> str:
        """The text of a minisign secret key file, encrypted unless ``password`` is None.

        ``...`` (the default) means the key's own ``password``; opslimit and memlimit are
        the scrypt cost stored in the file (minisign's by default: 1 GiB, a few seconds).
        """
        pw = self.password if isinstance(password, EllipsisType) else password
        sk = self.seed + _public_bytes(self.seed)
        keynum_sk = self.key_id + sk + _checksum(self.key_id, sk)
        if pw is None:
            header = _KEY_ALG + _KDF_NONE + _CHK_BLAKE2B + bytes(_SALT_LEN + 16)
            comment = "minisign unencrypted secret key"
        else:
            if not pw:
                raise ValueError("an empty password: use None for an unencrypted key")
            salt = secrets.token_bytes(_SALT_LEN)
            header = (
                _KEY_ALG
                + _KDF_SCRYPT
                + _CHK_BLAKE2B
                + salt
                + opslimit.to_bytes(8, "little")
                + memlimit.to_bytes(8, "little")
            )
            keynum_sk = _xor(keynum_sk, _key_stream(pw, salt, opslimit, memlimit))
            comment = "minisign encrypted secret key"
        encoded = base64.b64encode(header + keynum_sk).decode("ascii")
        return f"{UNTRUSTED_PREFIX}{comment}\n{encoded}\n"

    def dump(
        self,
        path: str | os.PathLike[str],
        password: bytes | EllipsisType | None = ...,
        *,
        opslimit: int = OPSLIMIT_SENSITIVE,
        memlimit: int = MEMLIMIT_SENSITIVE,
    ) -> None:
        """Write a minisign secret key file (mode 0600); see ``to_file_text``."""
        text = self.to_file_text(password, opslimit=opslimit, memlimit=memlimit)
        _write_private(path, text, 0o600)


def _secret_key_bytes(text: str, source: str) -> bytes:
    lines = _lines(text)
    if len(lines) != 2 or not lines[0].startswith(UNTRUSTED_PREFIX):
        raise SignatureError(
            f"{source} is not a minisign secret key file "
            f"(expected an '{UNTRUSTED_PREFIX}…' line, then the base64 key)"
        )
    raw = _b64decode(lines[1], source, _SECRET_KEY_LEN)
    if raw[:2] != _KEY_ALG:
        raise SignatureError(f"{source}: signature algorithm {raw[:2]!r} is not supported")
    if raw[2:4] not in (_KDF_SCRYPT, _KDF_NONE):
        raise SignatureError(f"{source}: key derivation function {raw[2:4]!r} is not supported")
    if raw[4:6] != _CHK_BLAKE2B:
        raise SignatureError(f"{source}: checksum function {raw[4:6]!r} is not supported")
    return raw


def secret_key_encrypted(path: str | os.PathLike[str]) -> bool:
    """Whether the secret key file at ``path`` needs a password."""
    source = f"secret key file {os.fspath(path)!r}"
    return _secret_key_bytes(_read_text(path, "secret key file"), source)[2:4] == _KDF_SCRYPT


def generate(password: bytes | None = None) -> tuple[SecretKey, PublicKey]:
    """A new key pair; ``password`` (None: unencrypted) is what ``dump`` encrypts with."""
    if password is not None and not password:
        raise ValueError("an empty password: use None for an unencrypted key")
    import nacl.signing

    secret = SecretKey(
        key_id=secrets.token_bytes(_KEY_ID_LEN),
        seed=bytes(nacl.signing.SigningKey.generate()),
        password=password,
    )
    return secret, secret.public_key()


def sign(
    data: bytes,
    key: SecretKey,
    *,
    trusted_comment: str,
    untrusted_comment: str = "signature from plugbridge secret key",
    prehashed: bool = True,
) -> str:
    """The text of a ``.minisig`` file signing ``data`` (``ED`` unless not ``prehashed``)."""
    for name, comment, limit in (
        ("trusted comment", trusted_comment, _TRUSTED_COMMENT_MAX),
        ("untrusted comment", untrusted_comment, _COMMENT_MAX),
    ):
        if "\n" in comment or "\r" in comment:
            raise ValueError(f"the {name} must be one line")
        if "\0" in comment:
            raise ValueError(f"the {name} must not hold a NUL character (minisign stops there)")
        if len(comment.encode("utf-8")) > limit:
            raise ValueError(f"the {name} is longer than minisign reads ({limit} bytes)")
    private = _signing_key(key.seed)
    algorithm = _PREHASHED_ALG if prehashed else _KEY_ALG
    signature = private.sign(_blake2b512(data) if prehashed else data).signature
    global_signature = private.sign(signature + trusted_comment.encode("utf-8")).signature
    return Signature(
        algorithm=algorithm,
        key_id=key.key_id,
        signature=signature,
        untrusted_comment=untrusted_comment,
        trusted_comment=trusted_comment,
        global_signature=global_signature,
    ).to_text()
