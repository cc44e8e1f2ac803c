"""``plugbridge keygen`` and ``plugbridge bundle create|inspect|verify|extract``, and bundle
details in ``plugbridge inspect x.rbp``: what they write, what they check, and that bad
input is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge._bundle import minisign
from plugbridge._bundle.minisign import PublicKey, SecretKey
from plugbridge._bundle.platform import current_platform
from plugbridge._cli import main

from ..conftest import HELLO
from .conftest import write_zip

HERE = current_platform()
OTHER = "darwin-aarch64" if HERE != "darwin-aarch64" else "linux-x86_64"

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``plugbridge ARGS`` in this process: (exit code, stdout, stderr)."""

    def run(*argv: str | Path) -> tuple[int, str, str]:
        try:
            code = main([str(arg) for arg in argv])
        except SystemExit as exc:  # argparse: --help and usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("plugbridge: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def lib(tmp_path: Path, hello_release: bytes) -> Path:
    """The C example (release build) as a file to bundle."""
    path = tmp_path / "build" / "libhello_c.so"
    path.parent.mkdir()
    path.write_bytes(hello_release)
    return path


@pytest.fixture
def debug_lib(tmp_path: Path, hello_debug: bytes) -> Path:
    path = tmp_path / "build-debug" / "libhello_c.so"
    path.parent.mkdir()
    path.write_bytes(hello_debug)
    return path


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, PublicKey]:
    """An unencrypted minisign secret key file, and its public key (no .pub written)."""
    secret, public = minisign.generate()
    secret.dump(tmp_path / "signer.key")
    return tmp_path / "signer.key", public


@pytest.fixture
def signed(cli: Cli, tmp_path: Path, lib: Path, signer: tuple[Path, PublicKey]) -> Path:
    """A bundle of the release library for this machine, signed by ``signer``."""
    return signed_bundle(cli, tmp_path, lib, signer[0])


def create(cli: Cli, out: Path, *args: str | Path) -> tuple[int, str, str]:
    return cli("bundle", "create", "-o", out, "--name", "hello-c", "--version", "2.0.1", *args)


def signed_bundle(cli: Cli, tmp_path: Path, lib: Path, key: Path) -> Path:
    out = tmp_path / "hello.rbp"
    code, _, err = create(cli, out, "--lib", f"{HERE}:{lib}", "--sign-key", key)
    assert code == 0, err
    return out


def rewrite(bundle: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite the bundle's entries through ``change`` (a tampering)."""
    with zipfile.ZipFile(bundle) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    change(entries)
    write_zip(bundle, entries)


# --- --help -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["keygen"],
        ["bundle"],
        ["bundle", "create"],
        ["bundle", "inspect"],
        ["bundle", "verify"],
        ["bundle", "extract"],
        ["inspect"],
    ],
    ids=lambda c: " ".join(c) or "plugbridge",
)
def test_every_command_answers_help(cli: Cli, command: list[str]) -> None:
    code, out, err = cli(*command, "--help")
    assert code == 0, err
    assert out.startswith("usage: plugbridge")


def test_python_dash_m_plugbridge_has_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plugbridge", "bundle", "verify", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--trusted-key KEY" in done.stdout


# The bundle machinery and PyNaCl (~45 ms of imports) are for the bundle commands only.
_IMPORTED = (
    "import sys; "
    "print('nacl' in sys.modules, any(m.startswith('plugbridge._bundle') for m in sys.modules))"
)


_MAIN = "from plugbridge._cli import main; assert main({}) == 0"


@pytest.mark.parametrize(
    ("code", "imported"),
    [
        ("import plugbridge", "False False"),
        ("import plugbridge._cli", "False False"),
        (_MAIN.format(["inspect", str(HELLO)]), "False False"),
        (_MAIN.format(["call", str(HELLO), "echo", '{"message": "hi"}']), "False False"),
        (_MAIN.format(["keygen", "--unencrypted", "-o", "k"]), "True True"),
    ],
    ids=["import plugbridge", "import plugbridge._cli", "inspect", "call", "keygen"],
)
def test_only_the_bundle_commands_import_the_bundle_machinery_and_pynacl(
    tmp_path: Path, code: str, imported: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}; {_IMPORTED}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == imported, done.stdout + done.stderr


# --- keygen -------------------------------------------------------------------------------


def test_keygen_unencrypted_writes_a_minisign_pair(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "signing.key"
    key.parent.mkdir()
    code, out, err = cli("keygen", "-o", key, "--unencrypted")
    assert code == 0, err
    public = PublicKey.parse(Path(f"{key}.pub"))
    assert out.strip() == public.to_base64()
    assert key.stat().st_mode & 0o777 == 0o600
    assert not minisign.secret_key_encrypted(key)
    assert SecretKey.load(key, None).public_key() == public
    assert (
        Path(f"{key}.pub")
        .read_text()
        .startswith(f"untrusted comment: minisign public key {public.key_id_hex}\n")
    )


def test_keygen_refuses_to_overwrite_without_force(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "k"
    assert cli("keygen", "-o", key, "--unencrypted")[0] == 0
    first = key.read_text()
    code, _, err = cli("keygen", "-o", key, "--unencrypted")
    assert_one_line_error(code, err, f"{key} already exists", "--force")
    assert key.read_text() == first
    Path(f"{key}").unlink()
    code, _, err = cli("keygen", "-o", key, "--unencrypted")  # the .pub is still there
    assert_one_line_error(code, err, f"{key}.pub already exists")
    assert cli("keygen", "-o", key, "--unencrypted", "--force")[0] == 0
    assert key.read_text() != first


def test_keygen_password_file_errors(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    code, _, err = cli("keygen", "-o", tmp_path / "k", "--password-file", empty)
    assert_one_line_error(code, err, "password file", "is empty")
    code, _, err = cli("keygen", "-o", tmp_path / "k", "--password-file", tmp_path / "none")
    assert_one_line_error(code, err, "cannot read password file")
    code, _, err = cli("keygen", "-o", tmp_path / "k", "--password-file", empty, "--unencrypted")
    assert code == 2
    assert "not allowed with argument" in err
    assert not (tmp_path / "k").exists()


def _keygen_on_a_terminal(key: Path, answers: list[bytes]) -> tuple[int, str]:
    """``plugbridge keygen -o KEY`` on a pseudo-terminal, answering each prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal (getpass reads /dev/tty)
        os.execv(sys.executable, [sys.executable, "-m", "plugbridge", "keygen", "-o", str(key)])
    seen = b""
    pending = list(answers)
    answered = 0  # where the output stood at the last answer
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 60)
            assert ready, f"keygen went quiet; output so far: {seen!r}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen[answered:].rstrip().endswith(b":"):
                os.write(fd, pending.pop(0) + b"\n")
                answered = len(seen)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_keygen_prompts_twice_for_the_password(tmp_path: Path) -> None:
    key = tmp_path / "prompted.key"
    code, output = _keygen_on_a_terminal(key, [b"tty secret", b"tty secret"])
    assert code == 0, output
    assert "Password for the new secret key:" in output
    assert "Password (again):" in output
    assert "tty secret" not in output  # not echoed
    assert minisign.secret_key_encrypted(key)
    assert SecretKey.load(key, b"tty secret").public_key() == PublicKey.parse(Path(f"{key}.pub"))


def test_keygen_refuses_two_different_passwords(tmp_path: Path) -> None:
    key = tmp_path / "prompted.key"
    code, output = _keygen_on_a_terminal(key, [b"one", b"two"])
    assert code == 1
    assert "plugbridge: the two passwords differ" in output
    assert "Traceback" not in output
    assert not key.exists()


# --- bundle create ------------------------------------------------------------------------


def test_create_unsigned_writes_rustbridge_layout(
    cli: Cli, tmp_path: Path, lib: Path, debug_lib: Path
) -> None:
    header = tmp_path / "messages.h"
    header.write_text("#define MSG_X ((uint32_t)1)\n")
    out = tmp_path / "hello.rbp"
    code, stdout, err = create(
        cli, out,
        "--description", "the C example",
        "--lib", f"{HERE}:{lib}", "--lib", f"{HERE}:debug:{debug_lib}",
        "--lib", f"{OTHER}:release:{lib}",
        "--schema", f"{header}", "--schema", f"{header}:other.h",
        "--metadata", "repository=https://example.org/x", "--metadata", "ci=no=really",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert "3 libraries, unsigned" in err
    with zipfile.ZipFile(out) as archive:
        infos = archive.infolist()
        manifest = json.loads(archive.read("manifest.json"))
        names = [info.filename for info in infos]
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in infos)
        release = f"lib/{HERE}/release/libhello_c.so"
        assert archive.read(release) == lib.read_bytes()
        assert archive.getinfo(release).external_attr >> 16 & 0o777 == 0o755
    assert names[0] == "manifest.json"
    assert not [n for n in names if n.endswith(".minisig")]
    assert manifest["bundle_version"] == "1.1"
    assert manifest["plugin"] == {
        "name": "hello-c", "version": "2.0.1", "description": "the C example"
    }  # fmt: skip
    variants = manifest["platforms"][HERE]["variants"]
    assert variants["release"] == {
        "library": release,
        "checksum": "sha256:" + hashlib.sha256(lib.read_bytes()).hexdigest(),
    }
    assert variants["debug"]["library"] == f"lib/{HERE}/debug/libhello_c.so"
    assert list(manifest["platforms"][OTHER]["variants"]) == ["release"]
    assert "public_key" not in manifest
    assert manifest["build_info"]["custom"] == {
        "repository": "https://example.org/x", "ci": "no=really"
    }  # fmt: skip
    assert manifest["build_info"]["built_at"].endswith("Z")
    assert manifest["schemas"] == {
        "messages.h": {
            "path": "schema/messages.h",
            "format": "c-header",
            "checksum": hashlib.sha256(header.read_bytes()).hexdigest(),
        },
        "other.h": {
            "path": "schema/other.h",
            "format": "c-header",
            "checksum": hashlib.sha256(header.read_bytes()).hexdigest(),
        },
    }
    assert list(manifest) == [
        "bundle_version", "plugin", "platforms", "build_info", "schemas"
    ]  # fmt: skip


def test_create_signed_signs_the_manifest_and_every_library(
    cli: Cli, tmp_path: Path, lib: Path, debug_lib: Path, signer: tuple[Path, PublicKey]
) -> None:
    key, public = signer
    out = tmp_path / "hello.rbp"
    code, _, err = create(
        cli, out, "--lib", f"{HERE}:{lib}", "--lib", f"{HERE}:debug:{debug_lib}",
        "--sign-key", key, "--bundle-version", "1.0", "--no-build-info",
    )  # fmt: skip
    assert code == 0, err
    assert f"signed by key {public.key_id_hex}" in err
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        entries = {name: archive.read(name) for name in names}
    release, debug = (f"lib/{HERE}/{v}/libhello_c.so" for v in ("release", "debug"))
    assert names == [
        "manifest.json", "manifest.json.minisig",
        release, f"{release}.minisig", debug, f"{debug}.minisig",
    ]  # fmt: skip
    manifest = json.loads(entries["manifest.json"])
    assert manifest["bundle_version"] == "1.0"
    assert manifest["public_key"] == public.to_base64()  # derived from the secret key
    assert "build_info" not in manifest
    for name in ("manifest.json", release, debug):
        comment = minisign.verify(entries[name], entries[f"{name}.minisig"].decode(), public)
        assert comment.endswith(f"\tfile:{name}\thashed")


def test_a_created_bundle_loads_as_trusted(
    cli: Cli, tmp_path: Path, lib: Path, signer: tuple[Path, PublicKey], isolation: str
) -> None:
    key, public = signer
    bundle = signed_bundle(cli, tmp_path, lib, key)
    with plugbridge.load(bundle, trusted_keys=public.to_base64(), isolation=isolation) as plugin:
        assert plugin.metadata.trust == "trusted"
        assert plugin.metadata.name == "hello-c"
        assert plugin.metadata.version == "2.0.1"
        assert plugin.call("echo", {"message": "bundled"}) == {"message": "bundled", "length": 7}
    with plugbridge.load(bundle, isolation=isolation) as plugin:
        assert plugin.metadata.trust == "self-signed"


def test_create_signs_with_an_encrypted_key_and_its_password_file(
    cli: Cli, tmp_path: Path, lib: Path
) -> None:
    secret, public = minisign.generate(b"hunter2")
    secret.dump(tmp_path / "enc.key", opslimit=1 << 20, memlimit=1 << 24)
    (tmp_path / "pw").write_text("hunter2\n")
    (tmp_path / "bad").write_text("hunter3\n")
    out = tmp_path / "hello.rbp"
    code, _, err = create(
        cli, out, "--lib", f"{HERE}:{lib}", "--sign-key", tmp_path / "enc.key",
        "--password-file", tmp_path / "bad",
    )  # fmt: skip
    assert_one_line_error(code, err, "wrong password for secret key file")
    assert not out.exists()
    code, _, err = create(
        cli, out, "--lib", f"{HERE}:{lib}", "--sign-key", tmp_path / "enc.key",
        "--password-file", tmp_path / "pw",
    )  # fmt: skip
    assert code == 0, err
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("manifest.json"))["public_key"] == public.to_base64()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--lib", "solaris-sparc:{lib}"], ["unknown platform 'solaris-sparc'", HERE]),
        (["--lib", "{here}:debug:{lib}"], [f"{HERE} has no 'release' variant"]),
        (["--lib", "{here}:{lib}", "--lib", "{here}:{lib}"], ["two libraries for", "'release'"]),
        (["--lib", "{here}:Fast:{lib}", "--lib", "{here}:{lib}"], ["variant name 'Fast'"]),
        (["--lib", "{here}:{missing}"], ["cannot read library", "missing.so"]),
        (["--lib", "{here}:{dir}"], ["is a directory"]),
        (["--lib", "nocolon"], ["--lib 'nocolon' is not PLATFORM[:VARIANT]:PATH"]),
        (["--lib", "{here}:{lib}", "--metadata", "novalue"], ["--metadata 'novalue' is not K=V"]),
        (["--lib", "{here}:{lib}", "--schema", "{missing}"], ["cannot read schema"]),
        (["--lib", "{here}:{lib}", "--schema", "{lib}:.."], ["entry 'schema/..' is not a safe"]),
        (["--lib", "{here}:{lib}", "--sign-key", "{missing}"], ["cannot read secret key file"]),
        (["--lib", "{here}:{lib}", "--sign-key", "{lib}"], ["is not a text file"]),
        (["--lib", "{here}:{lib}", "--password-file", "{lib}"], ["--password-file is for"]),
        (
            ["--lib", "{here}:{lib}", "--bundle-version", "9.9"],
            ["bundle version '9.9' cannot be written (choose 1.0 or 1.1)"],
        ),
    ],
)
def test_create_refuses_bad_input_in_one_line(
    cli: Cli, tmp_path: Path, lib: Path, args: list[str], fragments: list[str]
) -> None:
    values = {
        "lib": lib, "here": HERE, "missing": tmp_path / "missing.so", "dir": tmp_path,
    }  # fmt: skip
    out = tmp_path / "out.rbp"
    code, _, err = create(cli, out, *(arg.format(**values) for arg in args))
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.rbp")] == []


def test_create_default_output_name(
    cli: Cli, tmp_path: Path, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(
        "bundle", "create", "--name", "x", "--version", "0.1", "--lib", f"{HERE}:{lib}"
    )
    assert code == 0, err
    assert out.strip() == "x-0.1.rbp"
    assert (tmp_path / "x-0.1.rbp").is_file()


# --- bundle inspect / verify ------------------------------------------------------------------


def test_inspect_shows_platforms_variants_checks_and_trust(
    cli: Cli, tmp_path: Path, lib: Path, debug_lib: Path, signer: tuple[Path, PublicKey]
) -> None:
    key, public = signer
    out = tmp_path / "hello.rbp"
    code, _, err = create(
        cli, out, "--lib", f"{HERE}:{lib}", "--lib", f"{HERE}:debug:{debug_lib}",
        "--lib", f"{OTHER}:{lib}", "--sign-key", key, "--metadata", "team=core",
    )  # fmt: skip
    assert code == 0, err
    code, text, err = cli("bundle", "inspect", out)
    assert code == 0, err
    assert "name:          hello-c" in text
    assert "version:       2.0.1" in text
    assert f"self-signed (by key {public.key_id_hex}, the bundle's own" in text
    assert f"  {HERE}  (this machine)" in text
    assert f"  {OTHER}\n" in text
    assert "    debug      lib/" in text
    assert "team=core" in text
    assert text.count(f"signed by {public.key_id_hex}: ok") == 3

    pub = tmp_path / "trusted.pub"
    public.dump(pub)
    code, text, _ = cli("bundle", "inspect", out, "--trusted-key", pub, "--json")
    assert code == 0
    report = json.loads(text)
    assert report["ok"] is True
    assert report["trust"] == "trusted"
    assert report["this_platform"] == HERE
    assert report["manifest"]["plugin"]["name"] == "hello-c"
    assert {(lib["platform"], lib["variant"], lib["trust"]) for lib in report["libraries"]} == {
        (HERE, "release", "trusted"), (HERE, "debug", "trusted"), (OTHER, "release", "trusted")
    }  # fmt: skip


def test_verify_with_the_right_wrong_and_no_trusted_key(
    cli: Cli, tmp_path: Path, lib: Path, signer: tuple[Path, PublicKey]
) -> None:
    key, public = signer
    bundle = signed_bundle(cli, tmp_path, lib, key)
    code, out, err = cli("bundle", "verify", bundle, "--trusted-key", public.to_base64())
    assert code == 0, err
    assert f"ok      {HERE}/release: lib/{HERE}/release/libhello_c.so (trusted)" in out
    assert f"verified, trusted by {public.key_id_hex}" in err

    _, stranger = minisign.generate()
    code, _, err = cli("bundle", "verify", bundle, "--trusted-key", stranger.to_base64())
    assert_one_line_error(
        code, err, "failed verification", f"signed by an untrusted key ({public.key_id_hex}"
    )
    code, _, err = cli("bundle", "verify", bundle)  # no keys: the bundle's own
    assert code == 0, err
    assert "verified, self-signed" in err


def test_verify_reads_trusted_keys_from_the_environment(
    cli: Cli, tmp_path: Path, lib: Path, signer: tuple[Path, PublicKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    key, _ = signer
    bundle = signed_bundle(cli, tmp_path, lib, key)
    _, stranger = minisign.generate()
    stranger.dump(tmp_path / "stranger.pub")
    monkeypatch.setenv("PLUGBRIDGE_TRUSTED_KEYS", str(tmp_path / "stranger.pub"))
    code, _, err = cli("bundle", "verify", bundle)
    assert_one_line_error(code, err, "signed by an untrusted key")


def test_verify_an_unsigned_bundle(cli: Cli, tmp_path: Path, lib: Path) -> None:
    out = tmp_path / "u.rbp"
    assert create(cli, out, "--lib", f"{HERE}:{lib}")[0] == 0
    code, _, err = cli("bundle", "verify", out)
    assert code == 0, err
    assert "verified, unsigned" in err
    _, public = minisign.generate()
    code, _, err = cli("bundle", "verify", out, "--trusted-key", public.to_base64())
    assert_one_line_error(code, err, "missing signature: manifest.json is not signed")


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        (
            lambda e: e.__setitem__(
                "manifest.json", e["manifest.json"].replace(b'"2.0.1"', b'"2.0.2"')
            ),
            "bad signature on manifest.json",
        ),
        (
            lambda e: e.__setitem__(f"lib/{HERE}/release/libhello_c.so", b"\x7fELF evil"),
            f"checksum mismatch for lib/{HERE}/release/libhello_c.so",
        ),
    ],
    ids=["manifest", "library"],
)
def test_a_tampered_bundle_fails_verify_and_shows_in_inspect(
    cli: Cli, signed: Path, signer: tuple[Path, PublicKey],
    tamper: Callable[[dict[str, bytes]], None], fragment: str,
) -> None:  # fmt: skip
    bundle, public = signed, signer[1]
    rewrite(bundle, tamper)
    code, _, err = cli("bundle", "verify", bundle, "--trusted-key", public.to_base64())
    assert_one_line_error(code, err, fragment)
    code, _, err = cli("bundle", "verify", bundle)
    assert_one_line_error(code, err, fragment)
    code, text, err = cli("bundle", "inspect", bundle)
    assert code == 0, err
    assert "signature:     FAILED: " in text
    assert fragment in text


def test_a_tampered_schema_fails_verify(cli: Cli, tmp_path: Path, lib: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text("{}")
    out = tmp_path / "s.rbp"
    assert create(cli, out, "--lib", f"{HERE}:{lib}", "--schema", schema)[0] == 0
    assert cli("bundle", "verify", out)[0] == 0
    rewrite(out, lambda e: e.__setitem__("schema/schema.json", b'{"x": 1}'))
    code, out_text, err = cli("bundle", "verify", out)
    assert_one_line_error(code, err, "checksum mismatch for schema/schema.json")
    assert "FAILED  checksum mismatch for schema/schema.json" in out_text


@pytest.mark.parametrize("command", [["bundle", "inspect"], ["bundle", "verify"], ["inspect"]])
def test_not_a_bundle_is_one_line(cli: Cli, tmp_path: Path, command: list[str]) -> None:
    fake = tmp_path / "fake.rbp"
    fake.write_bytes(b"not a zip at all")
    code, _, err = cli(*command, fake)
    assert_one_line_error(code, err, "is not a zip archive")
    code, _, err = cli(*command, tmp_path / "absent.rbp")
    assert_one_line_error(code, err, "bundle not found")


def test_a_bad_trusted_key_is_one_line(cli: Cli, tmp_path: Path, lib: Path) -> None:
    out = tmp_path / "u.rbp"
    assert create(cli, out, "--lib", f"{HERE}:{lib}")[0] == 0
    code, _, err = cli("bundle", "verify", out, "--trusted-key", "RWnotakey")
    assert_one_line_error(code, err, "cannot use trusted key 'RWnotakey'")


# --- bundle extract -----------------------------------------------------------------------


def test_extract_writes_the_verified_library(
    cli: Cli, tmp_path: Path, lib: Path, debug_lib: Path, signer: tuple[Path, PublicKey]
) -> None:
    key, public = signer
    out = tmp_path / "hello.rbp"
    code, _, err = create(
        cli, out, "--lib", f"{HERE}:{lib}", "--lib", f"{HERE}:debug:{debug_lib}",
        "--lib", f"{OTHER}:{debug_lib}", "--sign-key", key,
    )  # fmt: skip
    assert code == 0, err
    dest = tmp_path / "extracted"
    code, stdout, err = cli("bundle", "extract", out, "-o", dest)
    assert code == 0, err
    assert Path(stdout.strip()) == dest / "libhello_c.so"
    assert (dest / "libhello_c.so").read_bytes() == lib.read_bytes()
    assert (dest / "libhello_c.so").stat().st_mode & 0o111

    code, _, err = cli("bundle", "extract", out, "-o", dest, "--variant", "debug")
    assert_one_line_error(code, err, "already exists", "--force")
    code, _, err = cli(
        "bundle", "extract", out, "-o", dest, "--variant", "debug", "--force",
        "--trusted-key", public.to_base64(),
    )  # fmt: skip
    assert code == 0, err
    assert "(trusted)" in err
    assert (dest / "libhello_c.so").read_bytes() == debug_lib.read_bytes()

    other = tmp_path / "other"
    assert cli("bundle", "extract", out, "-o", other, "--platform", OTHER)[0] == 0
    assert (other / "libhello_c.so").read_bytes() == debug_lib.read_bytes()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--variant", "fast"], "no variant 'fast'"),
        (["--platform", "windows-aarch64"], "windows-aarch64"),
        (["--trusted-key", "{stranger}"], "signed by an untrusted key"),
    ],
)
def test_extract_writes_nothing_when_a_check_fails(
    cli: Cli, tmp_path: Path, signed: Path, args: list[str], fragment: str
) -> None:
    bundle = signed
    stranger = minisign.generate()[1].to_base64()
    dest = tmp_path / "dest"
    code, _, err = cli(
        "bundle", "extract", bundle, "-o", dest, *(a.format(stranger=stranger) for a in args)
    )
    assert_one_line_error(code, err, fragment)
    assert not dest.exists() or list(dest.iterdir()) == []


# --- plugbridge inspect x.rbp -------------------------------------------------------------


def test_inspect_a_bundle_loads_it_and_shows_the_bundle(
    cli: Cli, tmp_path: Path, lib: Path, signer: tuple[Path, PublicKey]
) -> None:
    key, public = signer
    bundle = signed_bundle(cli, tmp_path, lib, key)
    code, text, err = cli("inspect", bundle)
    assert code == 0, err
    assert f"loaded:        release for {HERE}: self-signed" in text
    assert "type tags:" in text
    assert "name:          hello-c" in text
    assert f"  {HERE}  (this machine)" in text
    code, text, err = cli(
        "inspect", bundle, "--trusted-key", public.to_base64(), "--isolation", "process", "--json"
    )
    assert code == 0, err
    shown = json.loads(text)
    assert (shown["name"], shown["version"], shown["trust"]) == ("hello-c", "2.0.1", "trusted")
    assert shown["bundle"]["libraries"][0]["platform"] == HERE


def test_inspect_a_bundle_for_another_platform(cli: Cli, tmp_path: Path, lib: Path) -> None:
    out = tmp_path / "elsewhere.rbp"
    assert create(cli, out, "--lib", f"{OTHER}:{lib}")[0] == 0
    code, text, err = cli("inspect", out)
    assert_one_line_error(code, err, "cannot load", "no library for this platform", OTHER)
    assert "loaded:        no: error 2 (INITIALIZATION_FAILED)" in text
    assert f"  {OTHER}\n" in text


def test_minisign_verifies_a_created_bundles_signatures(
    cli: Cli, tmp_path: Path, lib: Path, signer: tuple[Path, PublicKey]
) -> None:
    import shutil

    tool = shutil.which("minisign")
    if tool is None:
        pytest.fail("the minisign tool is needed for this test: apt-get install -y minisign")
    key, public = signer
    bundle = signed_bundle(cli, tmp_path, lib, key)
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(unpacked)
    for name in ("manifest.json", f"lib/{HERE}/release/libhello_c.so"):
        done = subprocess.run(
            [tool, "-V", "-P", public.to_base64(), "-m", str(unpacked / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"file:{name}" in done.stdout
