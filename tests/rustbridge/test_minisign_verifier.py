"""``plugbridge.rustbridge.MinisignVerifier`` against rustbridge's own, on signatures made by
the real ``minisign`` tool: same verdicts on the same inputs, same errors for malformed
keys and signatures, with one deliberate difference (a rewritten trusted comment)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from plugbridge.rustbridge import MinisignVerifier

rustbridge = pytest.importorskip("rustbridge", reason="the dev extra installs rustbridge")

MINISIGN = shutil.which("minisign")
DATA = b"plugbridge signs this library\x00\x01\x02"

# rustbridge's own test vector (rustbridge-python/tests/test_minisign_verifier.py, made by
# the Rust minisign crate): a prehashed ("ED") signature of DATA_V by KEY_V.
KEY_V = "RWRX0dXiesomR/SPv8ukThZBrY9f8LrZd0XFz/H5E9jtSR0G9/sRXPu0"
DATA_V = b"Hello, rustbridge!"
SIG_V = (
    "untrusted comment: untrusted comment for test\n"
    "RURX0dXiesomR1yQGGyQgLLAGcsXIj/T/IxgxPjXBuCQ9MD/DjQtm2vxXmuM2OEvRAn36pPO92uTCBiL+na0idTmJIkn9Fnd6g4=\n"
    "trusted comment: trusted comment for test\n"
    "oqvjCoVOeFtpPv1tQ33i2+BZqHndTlsPLU+/njVMuJw6fjQs+o9O8/MSgMkvG3DqxZVFqEeQYkfuFn3h96rIDQ==\n"
)


class Tool:
    """One key pair of the real ``minisign`` tool, and signing with it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pub, self.sec = directory / "minisign.pub", directory / "minisign.key"
        _run("-G", "-W", "-p", str(self.pub), "-s", str(self.sec))
        self.key = self.pub.read_text().splitlines()[1]

    def sign(self, data: bytes, *, legacy: bool = False) -> str:
        file = self.directory / "data.bin"
        file.write_bytes(data)
        _run("-S", *(["-l"] if legacy else []), "-s", str(self.sec), "-m", str(file))
        return Path(f"{file}.minisig").read_text()


def _run(*argv: str) -> None:
    assert MINISIGN is not None
    subprocess.run([MINISIGN, *argv], check=True, capture_output=True, input=b"")


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tool, Tool]:
    if MINISIGN is None:
        pytest.skip("the minisign tool is not installed")
    return Tool(tmp_path_factory.mktemp("signer")), Tool(tmp_path_factory.mktemp("other"))


def verdicts(key: str, data: bytes, signature: str) -> tuple[bool, bool]:
    """(ours, rustbridge's) answer to ``verify``."""
    theirs = rustbridge.MinisignVerifier(key).verify(data, signature)
    return MinisignVerifier(key).verify(data, signature), theirs


def test_rustbridges_own_test_vector_holds() -> None:
    assert verdicts(KEY_V, DATA_V, SIG_V) == (True, True)
    assert verdicts(KEY_V, DATA_V + b"!", SIG_V) == (False, False)


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_a_signature_by_the_minisign_tool_holds_and_changed_data_does_not(
    tools: tuple[Tool, Tool], legacy: bool
) -> None:
    signer, _ = tools
    signature = signer.sign(DATA, legacy=legacy)
    assert verdicts(signer.key, DATA, signature) == (True, True)
    flipped = bytes([DATA[0] ^ 1]) + DATA[1:]
    assert verdicts(signer.key, flipped, signature) == (False, False)
    assert verdicts(signer.key, DATA + b"\x00", signature) == (False, False)


def test_another_keys_signature_is_false_not_an_error(tools: tuple[Tool, Tool]) -> None:
    signer, other = tools
    assert verdicts(signer.key, DATA, other.sign(DATA)) == (False, False)


def test_a_rewritten_trusted_comment_is_refused_where_rustbridge_accepts_it(
    tools: tuple[Tool, Tool],
) -> None:
    """The deliberate difference: the global signature covers the trusted comment (which
    says what was signed, and when); rustbridge never checks it, minisign and we do."""
    signer, _ = tools
    lines = signer.sign(DATA).splitlines()
    lines[2] = "trusted comment: timestamp:0\tfile:something-else.so"
    forged = "\n".join(lines) + "\n"
    assert verdicts(signer.key, DATA, forged) == (False, True)


@pytest.mark.parametrize(
    "key",
    [
        "not base64!",
        "RWRX0dXiesomR/SPv8ukThZBrY9f8LrZd0XFz/H5E9jtSR0G9/sR",  # too short
        "AAAX0dXiesomR/SPv8ukThZBrY9f8LrZd0XFz/H5E9jtSR0G9/sRXPu0",  # not an Ed25519 key
    ],
    ids=["not-base64", "too-short", "wrong-algorithm"],
)
def test_a_malformed_public_key_is_a_value_error(key: str) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        rustbridge.MinisignVerifier(key)
    with pytest.raises(ValueError, match="invalid minisign public key"):
        MinisignVerifier(key)


@pytest.mark.parametrize(
    "signature",
    [
        "just one line",
        "untrusted comment: x\nnot-base64!!\ntrusted comment: y\nAAAA\n",
        "untrusted comment: x\nRURX0dXiesomR1yQGGyQ\ntrusted comment: y\nAAAA\n",
    ],
    ids=["one-line", "not-base64", "short"],
)
def test_a_malformed_signature_is_a_value_error(signature: str) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        rustbridge.MinisignVerifier(KEY_V).verify(DATA_V, signature)
    with pytest.raises(ValueError, match="malformed signature"):
        MinisignVerifier(KEY_V).verify(DATA_V, signature)


def test_the_parsing_helpers_answer_as_rustbridges(tools: tuple[Tool, Tool]) -> None:
    signer, _ = tools
    for key in (KEY_V, signer.key):
        assert MinisignVerifier._parse_public_key(key) == (
            rustbridge.MinisignVerifier._parse_public_key(key)
        )
    for signature in (SIG_V, signer.sign(DATA), signer.sign(DATA, legacy=True)):
        assert MinisignVerifier._parse_signature(signature) == (
            rustbridge.MinisignVerifier._parse_signature(signature)
        )
