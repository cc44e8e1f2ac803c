"""minisign keys and signatures: the reference's vectors, every failure named, and the
``minisign`` tool (Debian package ``minisign``) accepting ours and making what we accept."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import plugbridge
from plugbridge._bundle import minisign
from plugbridge._bundle.minisign import PublicKey, SecretKey, SignatureError

from .conftest import write_zip

# The oracle vectors of rustbridge-python's tests (made with the Rust minisign crate).
VECTOR_DATA = b"Hello, rustbridge!"
VECTOR_KEY = "RWRX0dXiesomR/SPv8ukThZBrY9f8LrZd0XFz/H5E9jtSR0G9/sRXPu0"
VECTOR_SIG = (
    "untrusted comment: untrusted comment for test\n"
    "RURX0dXiesomR1yQGGyQgLLAGcsXIj/T/IxgxPjXBuCQ9MD/DjQtm2vxXmuM2OEvRAn36pPO92uTCBiL+na0idTm"
    "JIkn9Fnd6g4=\n"
    "trusted comment: trusted comment for test\n"
    "oqvjCoVOeFtpPv1tQ33i2+BZqHndTlsPLU+/njVMuJw6fjQs+o9O8/MSgMkvG3DqxZVFqEeQYkfuFn3h96rIDQ==\n"
)
VECTOR_KEY_ID = "4726CA7AE2D5D157"
"""The vector key's id as minisign prints it."""

FAST_OPS, FAST_MEM = 1 << 20, 1 << 24
"""A cheap scrypt cost for encrypted keys in tests (minisign reads the cost from the file)."""


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _replace_line(text: str, index: int, line: str) -> str:
    lines = _lines(text)
    lines[index] = line
    return "\n".join(lines) + "\n"


def _flip_byte(b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- the reference's vectors ------------------------------------------------------------


def test_reference_vector_verifies_and_returns_the_trusted_comment() -> None:
    key = PublicKey.parse(VECTOR_KEY)
    assert minisign.verify(VECTOR_DATA, VECTOR_SIG, key) == "trusted comment for test"
    assert minisign.signature_key_id(VECTOR_SIG) == key.key_id
    assert key.key_id_hex == VECTOR_KEY_ID


def test_reference_vector_with_other_data_is_a_bad_signature() -> None:
    with pytest.raises(SignatureError, match=r"^bad signature: the data does not match"):
        minisign.verify(b"Hello, rustbridge?", VECTOR_SIG, PublicKey.parse(VECTOR_KEY))


def test_reference_vector_with_a_tampered_signature_is_a_bad_signature() -> None:
    sig_line = _lines(VECTOR_SIG)[1]
    tampered = _replace_line(VECTOR_SIG, 1, _flip_byte(sig_line, 40))
    with pytest.raises(SignatureError, match=r"^bad signature: "):
        minisign.verify(VECTOR_DATA, tampered, PublicKey.parse(VECTOR_KEY))


def test_reference_vector_with_a_tampered_trusted_comment_fails_the_global_signature() -> None:
    tampered = VECTOR_SIG.replace("trusted comment for test\n", "trusted comment for tesT\n")
    with pytest.raises(SignatureError, match=r"^bad global signature: the trusted comment"):
        minisign.verify(VECTOR_DATA, tampered, PublicKey.parse(VECTOR_KEY))


def test_reference_vector_with_a_tampered_global_signature_fails() -> None:
    global_line = _lines(VECTOR_SIG)[3]
    tampered = _replace_line(VECTOR_SIG, 3, _flip_byte(global_line, 10))
    with pytest.raises(SignatureError, match=r"^bad global signature: "):
        minisign.verify(VECTOR_DATA, tampered, PublicKey.parse(VECTOR_KEY))


def test_a_signature_by_another_key_names_both_key_ids() -> None:
    _, other = minisign.generate()
    with pytest.raises(SignatureError) as raised:
        minisign.verify(VECTOR_DATA, VECTOR_SIG, other)
    assert str(raised.value) == (
        f"signature was made by key {VECTOR_KEY_ID}, not by key {other.key_id_hex}"
    )


def test_a_key_claiming_the_signers_key_id_still_fails() -> None:
    _, other = minisign.generate()
    impostor = PublicKey(key_id=PublicKey.parse(VECTOR_KEY).key_id, key=other.key)
    with pytest.raises(SignatureError, match=r"^bad signature: "):
        minisign.verify(VECTOR_DATA, VECTOR_SIG, impostor)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda s: "\n".join(_lines(s)[:2]), r"malformed signature: 2 lines, expected 4"),
        (lambda s: s + "extra line\n", r"malformed signature: 5 lines, expected 4"),
        (
            lambda s: _replace_line(s, 0, "comment: x"),
            r"malformed signature: line 1 does not start with 'untrusted comment: '",
        ),
        (
            lambda s: _replace_line(s, 2, "trusted: x"),
            r"malformed signature: line 3 does not start with 'trusted comment: '",
        ),
        (
            lambda s: _replace_line(s, 1, "not*base64"),
            r"malformed signature: line 2 is not valid base64",
        ),
        (
            lambda s: _replace_line(s, 1, base64.b64encode(b"ED" + bytes(70)).decode()),
            r"malformed signature: line 2 holds 72 bytes, expected 74",
        ),
        (
            lambda s: _replace_line(s, 1, base64.b64encode(b"XY" + bytes(72)).decode()),
            r"malformed signature: algorithm b'XY' is not supported",
        ),
        (
            lambda s: _replace_line(s, 3, base64.b64encode(bytes(63)).decode()),
            r"malformed signature: line 4 holds 63 bytes, expected 64",
        ),
        (lambda s: "", r"malformed signature: 0 lines, expected 4"),
    ],
)
def test_malformed_signatures_name_the_problem(mangle: object, message: str) -> None:
    text = mangle(VECTOR_SIG)  # type: ignore[operator]
    key = PublicKey.parse(VECTOR_KEY)
    with pytest.raises(SignatureError, match=rf"^{message}"):
        minisign.verify(VECTOR_DATA, text, key)
    with pytest.raises(SignatureError, match=rf"^{message}"):
        minisign.signature_key_id(text)


def test_windows_line_endings_are_read() -> None:
    text = VECTOR_SIG.replace("\n", "\r\n")
    key = PublicKey.parse(VECTOR_KEY)
    assert minisign.verify(VECTOR_DATA, text, key) == "trusted comment for test"


# --- public keys --------------------------------------------------------------------------


def test_public_key_from_base64_file_path_and_file_text(tmp_path: Path) -> None:
    key = PublicKey.parse(VECTOR_KEY)
    assert key.to_base64() == VECTOR_KEY
    key.dump(tmp_path / "k.pub")
    text = (tmp_path / "k.pub").read_text()
    assert text == f"untrusted comment: minisign public key {VECTOR_KEY_ID}\n{VECTOR_KEY}\n"
    assert PublicKey.parse(tmp_path / "k.pub") == key
    assert PublicKey.parse(str(tmp_path / "k.pub")) == key
    assert PublicKey.parse(text) == key
    assert PublicKey.parse(f"  {VECTOR_KEY}\n") == key


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("RWRX0dXiesomR", r"'RWRX0dXiesomR' is neither a minisign public key"),
        (
            base64.b64encode(b"Xy" + bytes(40)).decode(),
            r"public key algorithm b'Xy' is not supported",
        ),
        ("untrusted comment: x\nnot-base64!", r"public key file: public key is not valid base64"),
        ("a\nb\nc", r"public key file is not a minisign public key file"),
    ],
)
def test_bad_public_keys_name_the_problem(given: str, message: str) -> None:
    with pytest.raises(SignatureError, match=rf"^{message}"):
        PublicKey.parse(given)


def test_an_unreadable_public_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"^cannot read public key file '.*missing.pub'"):
        PublicKey.parse(tmp_path / "missing.pub")
    (tmp_path / "bad.pub").write_text("untrusted comment: x\nAAAA\n")
    with pytest.raises(SignatureError, match=r"^public key file '.*bad.pub': public key holds 3"):
        PublicKey.parse(tmp_path / "bad.pub")


# --- our own signatures ------------------------------------------------------------------


@pytest.mark.parametrize("prehashed", [True, False])
def test_sign_and_verify(prehashed: bool) -> None:
    secret, public = minisign.generate()
    text = minisign.sign(b"data", secret, trusted_comment="tc\twith tab", prehashed=prehashed)
    lines = _lines(text)
    assert lines[0] == "untrusted comment: signature from plugbridge secret key"
    assert lines[2] == "trusted comment: tc\twith tab"
    assert base64.b64decode(lines[1])[:2] == (b"ED" if prehashed else b"Ed")
    assert minisign.verify(b"data", text, public) == "tc\twith tab"
    assert minisign.signature_key_id(text) == public.key_id
    with pytest.raises(SignatureError, match=r"^bad signature"):
        minisign.verify(b"datA", text, public)


@pytest.mark.parametrize(
    ("comment", "problem"),
    [
        ("two\nlines", "must be one line"),
        ("carriage\rreturn", "must be one line"),
        ("nul\0byte", "must not hold a NUL"),
    ],
)
def test_comments_minisign_could_not_read_back_are_refused(comment: str, problem: str) -> None:
    secret, _ = minisign.generate()
    with pytest.raises(ValueError, match=problem):
        minisign.sign(b"x", secret, trusted_comment=comment)
    with pytest.raises(ValueError, match=problem):
        minisign.sign(b"x", secret, trusted_comment="ok", untrusted_comment=comment)


# --- secret keys --------------------------------------------------------------------------


def test_unencrypted_secret_key_round_trip(tmp_path: Path) -> None:
    secret, public = minisign.generate()
    secret.dump(tmp_path / "k.sec")
    assert (tmp_path / "k.sec").stat().st_mode & 0o777 == 0o600
    assert not minisign.secret_key_encrypted(tmp_path / "k.sec")
    loaded = SecretKey.load(tmp_path / "k.sec", None)
    assert loaded == secret
    assert loaded.public_key() == public


def test_encrypted_secret_key_round_trip_and_wrong_password(tmp_path: Path) -> None:
    secret, public = minisign.generate(b"correct horse")
    secret.dump(tmp_path / "k.sec", opslimit=FAST_OPS, memlimit=FAST_MEM)
    assert minisign.secret_key_encrypted(tmp_path / "k.sec")
    assert SecretKey.load(tmp_path / "k.sec", b"correct horse").public_key() == public
    with pytest.raises(SignatureError, match=r"^wrong password for secret key file '.*k.sec'$"):
        SecretKey.load(tmp_path / "k.sec", b"battery staple")
    with pytest.raises(SignatureError, match=r"k.sec' is encrypted: a password is needed$"):
        SecretKey.load(tmp_path / "k.sec", None)


def test_a_corrupted_secret_key_is_refused(tmp_path: Path) -> None:
    secret, _ = minisign.generate()
    lines = _lines(secret.to_file_text(None))
    raw = bytearray(base64.b64decode(lines[1]))
    raw[54 + 8 + 40] ^= 1  # a byte of the public half
    (tmp_path / "k.sec").write_text(f"{lines[0]}\n{base64.b64encode(bytes(raw)).decode()}\n")
    with pytest.raises(SignatureError, match=r"is corrupted: its checksum does not match$"):
        SecretKey.load(tmp_path / "k.sec", None)
    raw[2:4] = b"Xx"
    (tmp_path / "k.sec").write_text(f"{lines[0]}\n{base64.b64encode(bytes(raw)).decode()}\n")
    with pytest.raises(SignatureError, match=r"key derivation function b'Xx' is not supported$"):
        SecretKey.load(tmp_path / "k.sec", None)
    (tmp_path / "k.sec").write_text("just text\n")
    with pytest.raises(SignatureError, match=r"is not a minisign secret key file"):
        SecretKey.load(tmp_path / "k.sec", None)


def test_an_empty_password_is_refused_for_new_keys() -> None:
    with pytest.raises(ValueError, match="empty password"):
        minisign.generate(b"")
    secret, _ = minisign.generate()
    with pytest.raises(ValueError, match="empty password"):
        secret.to_file_text(b"")


# --- the minisign tool --------------------------------------------------------------------


@pytest.fixture(scope="module")
def minisign_tool() -> str:
    found = shutil.which("minisign")
    if found is None:
        pytest.fail("the minisign tool is needed for these tests: apt-get install -y minisign")
    return found


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=False, input=stdin, capture_output=True, text=True, timeout=120
    )


def _minisign_keypair(tool: str, where: Path, password: str | None) -> tuple[Path, Path]:
    sec, pub = where / "ms.key", where / "ms.pub"
    if password is None:
        done = _run(tool, "-G", "-W", "-p", str(pub), "-s", str(sec))
    else:
        done = _run(tool, "-G", "-p", str(pub), "-s", str(sec), stdin=f"{password}\n{password}\n")
    assert done.returncode == 0, done.stderr
    return sec, pub


def _minisign_verifies(tool: str, data: Path, sig: Path, pub: Path) -> str:
    done = _run(tool, "-V", "-p", str(pub), "-m", str(data), "-x", str(sig))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_minisign_unencrypted_key_signs_with_plugbridge(
    minisign_tool: str, tmp_path: Path
) -> None:
    sec, pub = _minisign_keypair(minisign_tool, tmp_path, None)
    secret = SecretKey.load(sec, None)
    assert secret.public_key() == PublicKey.parse(pub)
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x00binary\xffdata" * 1000)
    sig = tmp_path / "data.bin.minisig"
    sig.write_text(minisign.sign(data.read_bytes(), secret, trusted_comment="made by plugbridge"))
    out = _minisign_verifies(minisign_tool, data, sig, pub)
    assert "Trusted comment: made by plugbridge" in out
    legacy = tmp_path / "legacy.minisig"
    legacy.write_text(
        minisign.sign(data.read_bytes(), secret, trusted_comment="l", prehashed=False)
    )
    _minisign_verifies(minisign_tool, data, legacy, pub)


def test_a_minisign_encrypted_key_signs_with_plugbridge(minisign_tool: str, tmp_path: Path) -> None:
    sec, pub = _minisign_keypair(minisign_tool, tmp_path, "pass phrase")
    assert minisign.secret_key_encrypted(sec)
    with pytest.raises(SignatureError, match=r"^wrong password"):
        SecretKey.load(sec, b"pass phrasE")
    secret = SecretKey.load(sec, b"pass phrase")
    data = tmp_path / "data.txt"
    data.write_bytes(b"hello")
    sig = tmp_path / "data.txt.minisig"
    sig.write_text(minisign.sign(b"hello", secret, trusted_comment="encrypted key"))
    assert "Trusted comment: encrypted key" in _minisign_verifies(minisign_tool, data, sig, pub)


@pytest.mark.parametrize(
    "cost",
    [(1 << 16, 1 << 24), (1 << 20, 1 << 24)],
    ids=["p1-branch", "memlimit-branch"],
)
def test_a_plugbridge_encrypted_key_signs_with_minisign(
    minisign_tool: str, tmp_path: Path, cost: tuple[int, int]
) -> None:
    secret, public = minisign.generate(b"s3cret")
    secret.dump(tmp_path / "pb.key", opslimit=cost[0], memlimit=cost[1])
    public.dump(tmp_path / "pb.pub")
    data = tmp_path / "data.txt"
    data.write_bytes(b"signed by minisign with a plugbridge key")
    done = _run(
        minisign_tool, "-S", "-s", str(tmp_path / "pb.key"), "-m", str(data), "-t", "by minisign",
        stdin="s3cret\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "data.txt.minisig").read_text()
    assert minisign.verify(data.read_bytes(), text, public) == "by minisign"
    wrong = _run(
        minisign_tool, "-S", "-s", str(tmp_path / "pb.key"), "-m", str(data), stdin="other\n"
    )
    assert wrong.returncode != 0
    assert "Wrong password" in wrong.stderr + wrong.stdout


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_a_plugbridge_unencrypted_key_signs_with_minisign(
    minisign_tool: str, tmp_path: Path, legacy: bool
) -> None:
    secret, public = minisign.generate()
    secret.dump(tmp_path / "pb.key")
    data = tmp_path / "data.txt"
    data.write_bytes(b"x" * 5000)
    args = ["-S", *(["-l"] if legacy else []), "-s", str(tmp_path / "pb.key"), "-m", str(data)]
    done = _run(minisign_tool, *args)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "data.txt.minisig").read_text()
    assert base64.b64decode(_lines(text)[1])[:2] == (b"Ed" if legacy else b"ED")
    assert "file:data.txt" in minisign.verify(data.read_bytes(), text, public)
    with pytest.raises(SignatureError, match=r"^bad signature"):
        minisign.verify(data.read_bytes() + b"!", text, public)


def test_minisign_and_plugbridge_both_refuse_a_tampered_trusted_comment(
    minisign_tool: str, tmp_path: Path
) -> None:
    secret, public = minisign.generate()
    public.dump(tmp_path / "pb.pub")
    data = tmp_path / "data.txt"
    data.write_bytes(b"payload")
    text = minisign.sign(b"payload", secret, trusted_comment="version 1")
    tampered = text.replace("trusted comment: version 1", "trusted comment: version 2")
    sig = tmp_path / "data.txt.minisig"
    sig.write_text(tampered)
    done = _run(minisign_tool, "-V", "-p", str(tmp_path / "pb.pub"), "-m", str(data))
    assert done.returncode != 0
    assert "Comment signature verification failed" in done.stderr
    with pytest.raises(SignatureError, match=r"^bad global signature"):
        minisign.verify(b"payload", tampered, public)


def test_a_small_order_key_cannot_make_a_universal_forgery_as_minisign_refuses_it(
    minisign_tool: str, tmp_path: Path
) -> None:
    """The identity point as a public key, with R = identity and s = 0, satisfies the plain
    (cofactorless) Ed25519 equation for every message: OpenSSL accepts such a signature,
    libsodium and so minisign refuse small-order keys. A trusted key must not be one that
    "signs" everything: plugbridge refuses as minisign does."""
    identity = (1).to_bytes(32, "little")
    key = PublicKey(key_id=bytes.fromhex("0102030405060708"), key=identity)
    key.dump(tmp_path / "weak.pub")
    forged = identity + bytes(32)
    text = minisign.Signature(
        algorithm=b"ED",
        key_id=key.key_id,
        signature=forged,
        untrusted_comment="forged",
        trusted_comment="anything at all",
        global_signature=forged,
    ).to_text()
    data = tmp_path / "data.txt"
    data.write_bytes(b"any data")
    (tmp_path / "data.txt.minisig").write_text(text)
    done = _run(minisign_tool, "-V", "-p", str(tmp_path / "weak.pub"), "-m", str(data))
    assert done.returncode != 0
    assert "Signature verification failed" in done.stderr
    with pytest.raises(SignatureError) as raised:
        minisign.verify(b"any data", text, key)
    assert str(raised.value) == (
        "bad signature: the data does not match the signature by key 0807060504030201"
    )


# --- plugbridge keygen and bundles with the minisign tool ---------------------------------


def _keygen(where: Path, *options: str) -> tuple[Path, PublicKey]:
    key = where / "pb.key"
    done = _run(sys.executable, "-m", "plugbridge", "keygen", "-o", str(key), *options)
    assert done.returncode == 0, done.stderr
    public = PublicKey.parse(Path(f"{key}.pub"))
    assert done.stdout.strip() == public.to_base64()
    return key, public


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "unencrypted"])
def test_keys_from_plugbridge_keygen_sign_with_minisign(
    minisign_tool: str, tmp_path: Path, encrypted: bool
) -> None:
    if encrypted:  # minisign's own scrypt cost (1 GiB): what keygen always writes
        (tmp_path / "pw").write_text("keygen password\n")
        key, public = _keygen(tmp_path, "--password-file", str(tmp_path / "pw"))
    else:
        key, public = _keygen(tmp_path, "--unencrypted")
    assert minisign.secret_key_encrypted(key) == encrypted
    data = tmp_path / "data.txt"
    data.write_bytes(b"signed by minisign")
    done = _run(
        minisign_tool, "-S", "-s", str(key), "-m", str(data), "-t", "keygen key",
        stdin="keygen password\n" if encrypted else "",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "data.txt.minisig").read_text()
    assert minisign.verify(data.read_bytes(), text, public) == "keygen key"
    _minisign_verifies(minisign_tool, data, tmp_path / "data.txt.minisig", Path(f"{key}.pub"))


def test_a_bundle_signed_by_the_minisign_tool_loads_as_trusted(
    minisign_tool: str, tmp_path: Path, hello_release: bytes, isolation: str
) -> None:
    from plugbridge._bundle.platform import current_platform

    sec, pub = _minisign_keypair(minisign_tool, tmp_path, None)
    entry = f"lib/{current_platform()}/release/libhello_c.so"
    manifest = {
        "bundle_version": "1.0",
        "plugin": {"name": "minisigned", "version": "1.0.0"},
        "platforms": {
            current_platform(): {
                "variants": {
                    "release": {
                        "library": entry,
                        "checksum": "sha256:" + hashlib.sha256(hello_release).hexdigest(),
                    }
                }
            }
        },
    }
    files = {"manifest.json": json.dumps(manifest, indent=2).encode(), entry: hello_release}
    entries: dict[str, bytes] = {}
    for name, data in files.items():
        path = tmp_path / "sign-me"
        path.write_bytes(data)
        done = _run(minisign_tool, "-S", "-s", str(sec), "-m", str(path))
        assert done.returncode == 0, done.stderr
        entries[name] = data
        entries[f"{name}.minisig"] = (tmp_path / "sign-me.minisig").read_bytes()
    bundle = write_zip(tmp_path / "minisigned.rbp", entries)
    with plugbridge.load(bundle, trusted_keys=[pub], isolation=isolation) as plugin:
        assert plugin.metadata.trust == "trusted"
        assert plugin.call("echo", {"message": "m"}) == {"message": "m", "length": 1}
    _, stranger = minisign.generate()
    with pytest.raises(plugbridge.BundleError, match="signed by an untrusted key"):
        plugbridge.load(bundle, trusted_keys=[stranger.to_base64()], isolation=isolation)
