"""``plugbridge.rustbridge.BundleLoader`` against rustbridge's own ``BundleLoader`` on the same
real bundles (the C example compiled now, zipped and signed in a tmp dir): the same
signature verdicts, answers and errors, plugins that really run (in-process and in a
worker process), and the deliberate differences: nothing extracted by a load, temp
extractions removed at exit, a rewritten trusted comment or a broken signature refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugbridge._bundle.minisign import PublicKey, SecretKey, sign
from plugbridge.rustbridge import (
    BundleLoader,
    LifecycleState,
    LogLevel,
    PluginConfig,
    PluginException,
)
from plugbridge.rustbridge._bundle_loader import remove_temp_dirs
from tests.bundles.conftest import (  # noqa: F401 (fixtures)
    HERE,
    LIB_FILE,
    BundleSpec,
    hello_debug,
    hello_release,
    keys,
    library_entry,
    write_zip,
)
from tests.native.build import ROOT

rustbridge = pytest.importorskip("rustbridge", reason="the dev extra installs rustbridge")

Keys = dict[str, tuple[SecretKey, PublicKey]]
SCHEMA = b'{"$schema": "http://json-schema.org/draft-07/schema#", "title": "echo"}'
BRIDGE = f"bridge/jni/{HERE}/release/librustbridge_jni.so"
BRIDGE_BYTES = b"\x7fELF not really a JNI bridge, but bytes to carry and check"
ISOLATIONS = ["inprocess", "process"]


@pytest.fixture(scope="session")
def release_lib(request: pytest.FixtureRequest) -> bytes:
    """The C example built for release (tests/bundles' ``hello_release``)."""
    value: bytes = request.getfixturevalue("hello_release")
    return value


@pytest.fixture(scope="session")
def debug_lib(request: pytest.FixtureRequest) -> bytes:
    """The C example with its test hooks (``test.deep``): tests/bundles' ``hello_debug``."""
    value: bytes = request.getfixturevalue("hello_debug")
    return value


@pytest.fixture(scope="session")
def pairs(request: pytest.FixtureRequest) -> Keys:
    """Key pairs ``"publisher"`` and ``"other"`` (tests/bundles' ``keys``)."""
    value: Keys = request.getfixturevalue("keys")
    return value


# -- bundles ------------------------------------------------------------------------------


def spec(release: bytes, debug: bytes | None = None, **fields: Any) -> BundleSpec:
    """The C example's bundle (version 1.1) with a schema, build info and a JNI bridge, as
    rustbridge writes one."""
    libraries = {(HERE, "release"): release}
    if debug is not None:
        libraries[(HERE, "debug")] = debug
    schema = {"path": "schema/echo.json", "format": "json-schema", "checksum": _sha(SCHEMA)}
    bridge = {"library": BRIDGE, "checksum": "sha256:" + _sha(BRIDGE_BYTES)}
    extra = {
        "schemas": {"echo.json": schema},
        "build_info": {"built_by": "CI", "git": {"commit": "abc123", "dirty": False}},
        "bridges": {"jni": {HERE: {"variants": {"release": bridge}}}},
    }
    return BundleSpec(libraries, bundle_version="1.1", manifest_extra=extra, **fields)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries_of(made: BundleSpec) -> dict[str, bytes]:
    """``made``'s archive entries, the schema and the (signed, when signing) bridge too."""
    entries = made.entries()
    entries["schema/echo.json"] = SCHEMA
    entries[BRIDGE] = BRIDGE_BYTES
    if made.sign_with is not None:
        entries[BRIDGE + ".minisig"] = sign(
            BRIDGE_BYTES, made.sign_with, trusted_comment="timestamp:0"
        ).encode()
    return entries


@pytest.fixture
def signed(tmp_path: Path, release_lib: bytes, debug_lib: bytes, pairs: Keys) -> Path:
    """The release and debug builds, signed by the publisher (who embedded their key)."""
    made = spec(release_lib, debug_lib, sign_with=pairs["publisher"][0])
    return write_zip(tmp_path / "signed.rbp", entries_of(made))


@pytest.fixture
def unsigned(tmp_path: Path, release_lib: bytes) -> Path:
    return write_zip(tmp_path / "unsigned.rbp", entries_of(spec(release_lib)))


def _manifest_tampered(entries: dict[str, bytes]) -> None:
    manifest = json.loads(entries["manifest.json"])
    manifest["plugin"]["version"] = "6.6.6"
    entries["manifest.json"] = json.dumps(manifest, indent=2).encode()


def _comment_forged(entries: dict[str, bytes]) -> None:
    lines = entries["manifest.json.minisig"].decode().splitlines()
    lines[2] = "trusted comment: timestamp:0\tfile:some-other-bundle"
    entries["manifest.json.minisig"] = ("\n".join(lines) + "\n").encode()


BUNDLES: dict[str, Callable[[bytes, Keys], dict[str, bytes]]] = {
    "signed": lambda lib, k: entries_of(spec(lib, sign_with=k["publisher"][0])),
    "unsigned": lambda lib, k: entries_of(spec(lib)),
    "unsigned-with-key": lambda lib, k: entries_of(spec(lib, embed_key=k["publisher"][1])),
    "library-unsigned": lambda lib, k: _without(
        entries_of(spec(lib, sign_with=k["publisher"][0])), library_entry() + ".minisig"
    ),
    "manifest-tampered": lambda lib, k: _changed(
        entries_of(spec(lib, sign_with=k["publisher"][0])), _manifest_tampered
    ),
    "comment-forged": lambda lib, k: _changed(
        entries_of(spec(lib, sign_with=k["publisher"][0])), _comment_forged
    ),
    "library-replaced": lambda lib, k: _changed(  # manifest re-signed, library signature old
        entries_of(spec(lib + b"\0", sign_with=k["publisher"][0])),
        lambda e: e.update(
            {
                library_entry() + ".minisig": sign(
                    lib, k["publisher"][0], trusted_comment="timestamp:0"
                ).encode()
            }
        ),
    ),
    "checksum-mismatch": lambda lib, k: _changed(
        entries_of(spec(lib, sign_with=k["publisher"][0])),
        lambda e: e.update({library_entry(): lib + b"\0"}),
    ),
    "key-swap": lambda lib, k: entries_of(spec(lib, sign_with=k["other"][0])),
}


def _without(entries: dict[str, bytes], name: str) -> dict[str, bytes]:
    del entries[name]
    return entries


def _changed(
    entries: dict[str, bytes], change: Callable[[dict[str, bytes]], object]
) -> dict[str, bytes]:
    change(entries)
    return entries


LOADERS: dict[str, Callable[[Keys], dict[str, Any]]] = {
    "verify-on": lambda k: {},
    "verify-off": lambda k: {"verify_signatures": False},
    "override": lambda k: {"public_key_override": k["publisher"][1].to_base64()},
}

REFUSED_HERE_ONLY = {
    # Deliberate: a signature present must hold (against the bundle's own key when
    # verification is off), and minisign's global signature covers the trusted comment.
    ("manifest-tampered", "verify-off"),
    ("library-replaced", "verify-off"),
    ("comment-forged", "verify-off"),
    ("comment-forged", "verify-on"),
    ("comment-forged", "override"),
}


@contextlib.contextmanager
def rustbridge_temp(tmp_path: Path) -> Iterator[None]:
    """rustbridge's loads extract into a temp dir they never remove: give them their own
    (this test's temp dir must stay empty of ours)."""
    saved = tempfile.tempdir
    directory = tmp_path / "rustbridge-tmp"
    directory.mkdir(exist_ok=True)
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def outcome(action: Callable[[], Any]) -> Any:
    """The result of ``action``, or ``"refused"`` for a ``PluginException`` (either one)."""
    try:
        return action()
    except (PluginException, rustbridge.PluginException):
        return "refused"


# -- signature verdicts -------------------------------------------------------------------


@pytest.mark.parametrize("loader_kind", list(LOADERS))
@pytest.mark.parametrize("bundle_kind", list(BUNDLES))
def test_signature_verdicts_match_rustbridges(
    tmp_path: Path, release_lib: bytes, pairs: Keys, bundle_kind: str, loader_kind: str
) -> None:
    """Same bundle, same loader settings: ours extracts (and loads) exactly what
    rustbridge's extracts, except where refusing is the deliberate difference."""
    bundle = write_zip(tmp_path / "b.rbp", BUNDLES[bundle_kind](release_lib, pairs))
    options = LOADERS[loader_kind](pairs)
    theirs = outcome(
        lambda: (
            rustbridge.BundleLoader(**options)
            .extract_library(bundle, tmp_path / "theirs")
            .read_bytes()
        )
    )
    ours = outcome(
        lambda: BundleLoader(**options).extract_library(bundle, tmp_path / "ours").read_bytes()
    )
    if (bundle_kind, loader_kind) in REFUSED_HERE_ONLY:
        assert (ours, theirs != "refused") == ("refused", True)
    else:
        assert ours == theirs
    loaded = outcome(lambda: BundleLoader(**options).load(bundle).close())
    assert (loaded == "refused") == (ours == "refused")


def test_verification_on_refuses_a_bundle_without_a_key_as_rustbridge_does(
    unsigned: Path, tmp_path: Path
) -> None:
    with pytest.raises(rustbridge.PluginException, match="no public key available"):
        rustbridge.BundleLoader().extract_library(unsigned, tmp_path)
    with pytest.raises(PluginException, match="no public key available") as caught:
        BundleLoader().load(unsigned)
    assert caught.value.error_code == 1
    with pytest.raises(PluginException, match="no public key available"):
        BundleLoader().extract_library_to_temp(unsigned)


def test_an_invalid_override_key_is_a_value_error_as_in_rustbridge(
    signed: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        rustbridge.BundleLoader(public_key_override="RWnotakey").extract_library(signed, tmp_path)
    with pytest.raises(ValueError, match="invalid minisign public key"):
        BundleLoader(public_key_override="RWnotakey").load(signed)


def test_trusted_keys_decide_over_the_bundles_own_key(
    signed: Path, pairs: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plugbridge's extra: with trusted keys, the bundle's own key counts for nothing."""
    publisher, other = pairs["publisher"][1], pairs["other"][1]
    with BundleLoader(trusted_keys=[publisher.to_base64()]).load(signed) as plugin:
        assert plugin.handle.metadata.trust == "trusted"
    with pytest.raises(PluginException, match="untrusted key") as caught:
        BundleLoader(trusted_keys=other.to_base64()).load(signed)
    assert caught.value.error_code == 2
    # PLUGBRIDGE_TRUSTED_KEYS holds for facade loads too, even with verification off
    other.dump(tmp_path / "other.pub")
    monkeypatch.setenv("PLUGBRIDGE_TRUSTED_KEYS", str(tmp_path / "other.pub"))
    with pytest.raises(PluginException, match="untrusted key"):
        BundleLoader(verify_signatures=False).load(signed)
    with pytest.raises(PluginException, match="untrusted key"):
        BundleLoader(verify_signatures=False).extract_library(signed, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_reload_checks_against_the_key_the_load_verified_with(
    tmp_path: Path, release_lib: bytes, pairs: Keys
) -> None:
    """rustbridge's rule (the manifest's own key) is checked as that one key trusted: a
    bundle replaced by one re-signed with another key does not come in by a reload."""
    bundle = write_zip(tmp_path / "b.rbp", BUNDLES["signed"](release_lib, pairs))
    with BundleLoader().load(bundle) as plugin:
        write_zip(bundle, BUNDLES["key-swap"](release_lib, pairs))
        with pytest.raises(Exception, match="untrusted key"):
            plugin.handle.reload()
        assert plugin.call("echo", '{"message": "still"}') == '{"message":"still","length":5}'


# -- loading ------------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_load_runs_the_plugin_with_nothing_extracted(
    signed: Path, tmp_path: Path, nothing_left_behind: Path, isolation: Any
) -> None:
    request = json.dumps({"message": "from the bundle"})
    with rustbridge_temp(tmp_path), rustbridge.BundleLoader().load(signed) as oracle:
        expected = oracle.call("echo", request)
    with BundleLoader().load(signed, isolation=isolation) as plugin:
        assert json.loads(plugin.call("echo", request)) == json.loads(expected)
        assert plugin.state == LifecycleState.ACTIVE
        assert plugin.handle.metadata.name == "hello-c"
        assert os.listdir(nothing_left_behind) == []  # not even while it runs
    assert plugin.state == LifecycleState.STOPPED


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_load_variant_with_config_loads_that_variant_with_that_config(
    signed: Path, isolation: Any
) -> None:
    records: list[tuple[LogLevel, str, str]] = []
    config = PluginConfig.defaults().log_level(LogLevel.DEBUG)
    loader = BundleLoader()
    with loader.load_variant_with_config(
        signed, "debug", config, lambda *r: records.append(r), isolation=isolation
    ) as debug:
        assert json.loads(debug.call("test.deep", json.dumps({"depth": 0}))) is None
        debug.call("echo", json.dumps({"message": "logged"}))
    assert any("logged" in message for _, _, message in records)
    assert all(isinstance(level, LogLevel) for level, _, _ in records)
    with loader.load_with_config(signed, config) as release:
        with pytest.raises(PluginException) as caught:
            release.call("test.deep", json.dumps({"depth": 0}))  # release: no test hooks
        assert caught.value.error_code == 6


def test_plugbridges_timeouts_reach_the_plugin_as_keywords(signed: Path) -> None:
    config = PluginConfig.defaults()
    loader = BundleLoader()
    with loader.load(signed) as plain:
        assert plain.handle.config.call_timeout is None  # rustbridge's: no limit
    with loader.load_variant_with_config(
        signed, "debug", config, call_timeout=0.05, start_timeout=7.0
    ) as plugin:
        assert (plugin.handle.config.call_timeout, plugin.handle.config.start_timeout) == (
            0.05,
            7.0,
        )
        with pytest.raises(PluginException) as caught:
            plugin.call("test.sleep", json.dumps({"duration_ms": 300}))
        assert caught.value.error_code == 10


def test_a_missing_variant_or_platform_is_a_plugin_exception_naming_what_there_is(
    signed: Path, tmp_path: Path, release_lib: bytes
) -> None:
    config = PluginConfig.defaults()
    with rustbridge_temp(tmp_path), pytest.raises(rustbridge.PluginException):
        rustbridge.BundleLoader().load_variant_with_config(signed, "nightly", config)
    with pytest.raises(PluginException, match=r"no variant 'nightly'.*debug, release"):
        BundleLoader().load_variant_with_config(signed, "nightly", config)
    elsewhere = BundleSpec({("windows-x86_64", "release"): release_lib})
    bundle = elsewhere.write(tmp_path / "elsewhere.rbp")
    with rustbridge_temp(tmp_path), pytest.raises(rustbridge.PluginException, match="Platform"):
        rustbridge.BundleLoader(verify_signatures=False).load(bundle)
    with pytest.raises(PluginException, match="windows-x86_64") as caught:
        BundleLoader(verify_signatures=False).load(bundle)
    assert caught.value.error_code == 2


def test_a_library_that_is_no_plugin_fails_to_load_and_leaves_nothing(
    tmp_path: Path, not_a_plugin: Path
) -> None:
    bundle = BundleSpec({(HERE, "release"): not_a_plugin.read_bytes()}).write(tmp_path / "x.rbp")
    with pytest.raises(PluginException) as caught:
        BundleLoader(verify_signatures=False).load(bundle)
    assert caught.value.error_code == 2


def test_a_file_that_is_not_a_zip_is_a_plugin_exception(tmp_path: Path) -> None:
    """rustbridge lets ``zipfile.BadZipFile`` escape; here it is a ``PluginException``."""
    bundle = tmp_path / "junk.rbp"
    bundle.write_bytes(b"not a zip at all")
    for method in (BundleLoader().get_manifest, BundleLoader().list_files, BundleLoader().load):
        with pytest.raises(PluginException, match="not a zip"):
            method(bundle)


def test_a_missing_bundle_is_file_not_found_everywhere_as_in_rustbridge(tmp_path: Path) -> None:
    missing = tmp_path / "missing.rbp"
    config = PluginConfig.defaults()
    calls: list[Callable[[Any], Any]] = [
        lambda b: b.load(missing),
        lambda b: b.load_with_config(missing, config),
        lambda b: b.load_variant_with_config(missing, "debug", config),
        lambda b: b.extract_library_to_temp(missing),
        lambda b: b.extract_library(missing, tmp_path),
        lambda b: b.extract_library_variant(missing, tmp_path, "debug"),
        lambda b: b.list_variants(missing),
        lambda b: b.get_default_variant(missing),
        lambda b: b.get_build_info(missing),
        lambda b: b.get_effective_build_info(missing),
        lambda b: b.has_jni_bridge(missing),
        lambda b: b.extract_jni_bridge_to_temp(missing),
        lambda b: b.extract_jni_bridge(missing, tmp_path),
        lambda b: b.get_manifest(missing),
        lambda b: b.list_files(missing),
        lambda b: b.get_schemas(missing),
        lambda b: b.extract_schema(missing, "echo.json", tmp_path),
        lambda b: b.read_schema(missing, "echo.json"),
    ]
    for call in calls:
        with pytest.raises(FileNotFoundError):
            call(rustbridge.BundleLoader())
        with pytest.raises(FileNotFoundError, match=r"missing\.rbp"):
            call(BundleLoader())


# -- what the bundle says ---------------------------------------------------------------------


def test_queries_answer_as_rustbridges(signed: Path) -> None:
    ours, theirs = BundleLoader(), rustbridge.BundleLoader()
    assert ours.get_current_platform() == theirs.get_current_platform() == HERE
    for name in ("list_variants", "get_default_variant", "list_files", "has_jni_bridge"):
        assert getattr(ours, name)(signed) == getattr(theirs, name)(signed), name
    assert ours.list_variants(signed) == ["release", "debug"]
    assert ours.get_default_variant(signed, "windows-x86_64") == "release"
    for name in ("get_manifest", "get_build_info", "get_schemas"):
        assert _plain(getattr(ours, name)(signed)) == _plain(getattr(theirs, name)(signed)), name
    for variant in ("release", "debug"):
        mine = ours.get_effective_build_info(signed, variant=variant)
        assert _plain(mine) == _plain(theirs.get_effective_build_info(signed, variant=variant))
    assert ours.get_manifest(signed).plugin_name == "hello-c"
    assert ours.get_build_info(signed).git.commit == "abc123"  # type: ignore[union-attr]
    with pytest.raises(rustbridge.PluginException, match="Platform not supported"):
        theirs.list_variants(signed, "windows-x86_64")
    with pytest.raises(PluginException, match="Platform not supported: windows-x86_64"):
        ours.list_variants(signed, "windows-x86_64")


def _plain(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


# -- extracting -----------------------------------------------------------------------------


def test_extract_library_writes_the_verified_library_once(
    signed: Path, tmp_path: Path, release_lib: bytes, debug_lib: bytes
) -> None:
    dest = tmp_path / "new" / "dir"
    written = BundleLoader().extract_library(signed, dest)
    assert written == dest / LIB_FILE
    assert written.read_bytes() == release_lib
    assert written.stat().st_mode & stat.S_IXUSR
    with pytest.raises(FileExistsError, match="already exists"):
        BundleLoader().extract_library(signed, dest)
    with pytest.raises(FileExistsError):
        rustbridge.BundleLoader().extract_library(signed, dest)
    variant = BundleLoader().extract_library_variant(signed, tmp_path / "dbg", "debug")
    assert variant.read_bytes() == debug_lib
    link_dir = tmp_path / "link"
    link_dir.mkdir()
    (link_dir / LIB_FILE).symlink_to(tmp_path / "target-of-link")
    with pytest.raises(FileExistsError):  # never written through a link
        BundleLoader().extract_library(signed, link_dir)
    assert not (tmp_path / "target-of-link").exists()


def test_extract_library_to_temp_is_there_until_removed(
    signed: Path, release_lib: bytes, nothing_left_behind: Path
) -> None:
    written = BundleLoader().extract_library_to_temp(signed)
    assert written.parent.parent == nothing_left_behind
    assert written.parent.name.startswith("rustbridge-")
    assert written.read_bytes() == release_lib
    bridge = BundleLoader().extract_jni_bridge_to_temp(signed)
    assert bridge.read_bytes() == BRIDGE_BYTES
    remove_temp_dirs()  # what the interpreter runs at exit
    assert os.listdir(nothing_left_behind) == []


def test_temp_extractions_are_gone_when_the_interpreter_exits(signed: Path, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from plugbridge.rustbridge import BundleLoader\n"
        "loader = BundleLoader()\n"
        "print(loader.extract_library_to_temp(sys.argv[1]))\n"
        "print(loader.extract_jni_bridge_to_temp(sys.argv[1]))\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(signed)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    paths = [Path(line) for line in done.stdout.splitlines()]
    assert len(paths) == 2
    assert all(path.parent.parent == tmp_path for path in paths)
    assert not any(path.parent.exists() for path in paths)


# -- schemas ----------------------------------------------------------------------------------


def test_schemas_read_and_extract_as_rustbridges(signed: Path, tmp_path: Path) -> None:
    ours, theirs = BundleLoader(), rustbridge.BundleLoader()
    assert ours.read_schema(signed, "echo.json") == theirs.read_schema(signed, "echo.json")
    assert ours.read_schema(signed, "echo.json") == SCHEMA.decode()
    (tmp_path / "o").mkdir()
    (tmp_path / "t").mkdir()
    mine = ours.extract_schema(signed, "echo.json", tmp_path / "o")
    their = theirs.extract_schema(signed, "echo.json", tmp_path / "t")
    assert mine.read_bytes() == their.read_bytes() == SCHEMA
    assert mine == tmp_path / "o" / "echo.json"
    for loader, error in ((ours, PluginException), (theirs, rustbridge.PluginException)):
        with pytest.raises(error, match=r"Schema not found in bundle: nope\.json"):
            loader.read_schema(signed, "nope.json")


def test_a_tampered_schema_is_refused_by_both(tmp_path: Path, release_lib: bytes) -> None:
    entries = entries_of(spec(release_lib))
    entries["schema/echo.json"] = SCHEMA + b" "
    bundle = write_zip(tmp_path / "b.rbp", entries)
    with pytest.raises(rustbridge.PluginException, match="Checksum verification failed"):
        rustbridge.BundleLoader().read_schema(bundle, "echo.json")
    with pytest.raises(PluginException, match="Checksum verification failed for schema"):
        BundleLoader().read_schema(bundle, "echo.json")
    with pytest.raises(PluginException, match="Checksum verification failed for schema"):
        BundleLoader().extract_schema(bundle, "echo.json", tmp_path)
    assert not (tmp_path / "echo.json").exists()


def test_a_schema_named_to_escape_is_not_written_outside_the_directory(
    tmp_path: Path, release_lib: bytes
) -> None:
    """rustbridge writes ``dest_dir / schema_name`` whatever the bundle names it."""
    made = spec(release_lib)
    schemas = made.manifest_extra["schemas"]
    schemas["../escaped.json"] = schemas.pop("echo.json")
    bundle = write_zip(tmp_path / "b.rbp", entries_of(made))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PluginException, match="not a plain file name"):
        BundleLoader().extract_schema(bundle, "../escaped.json", dest)
    assert not (tmp_path / "escaped.json").exists()
    assert BundleLoader().read_schema(bundle, "../escaped.json") == SCHEMA.decode()


# -- the JNI bridge ---------------------------------------------------------------------------


def test_the_jni_bridge_extracts_as_rustbridges(signed: Path, tmp_path: Path) -> None:
    mine = BundleLoader().extract_jni_bridge(signed, tmp_path / "o")
    their = rustbridge.BundleLoader().extract_jni_bridge(signed, tmp_path / "t")
    assert mine.read_bytes() == their.read_bytes() == BRIDGE_BYTES
    assert mine.name == their.name == "librustbridge_jni.so"
    with pytest.raises(FileExistsError, match="extract_jni_bridge_to_temp"):
        BundleLoader().extract_jni_bridge(signed, tmp_path / "o")


@pytest.mark.parametrize(
    "case", ["no-bridge", "no-bridge-unsigned", "other-platform", "tampered", "unsigned"]
)
def test_a_jni_bridge_that_is_absent_or_bad_is_refused_by_both(
    tmp_path: Path, release_lib: bytes, pairs: Keys, case: str
) -> None:
    signer = None if case == "no-bridge-unsigned" else pairs["publisher"][0]
    made = spec(release_lib, sign_with=signer)
    bridges = made.manifest_extra["bridges"]["jni"]
    if case.startswith("no-bridge"):
        del made.manifest_extra["bridges"]
    elif case == "other-platform":
        bridges["windows-x86_64"] = bridges.pop(HERE)
    entries = entries_of(made)
    if case == "tampered":
        entries[BRIDGE] = BRIDGE_BYTES + b"!"
    elif case == "unsigned":
        del entries[BRIDGE + ".minisig"]
    bundle = write_zip(tmp_path / "b.rbp", entries)
    messages = {
        "no-bridge": "Bundle does not contain a JNI bridge library",
        "no-bridge-unsigned": "Bundle does not contain a JNI bridge library",  # not "no key"
        "other-platform": f"JNI bridge not available for platform: {HERE}",
        "tampered": "[Cc]hecksum",
        "unsigned": "minisig",
    }
    with pytest.raises(rustbridge.PluginException, match=messages[case]):
        rustbridge.BundleLoader().extract_jni_bridge(bundle, tmp_path / "t")
    with pytest.raises(PluginException, match=messages[case]):
        BundleLoader().extract_jni_bridge(bundle, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert BundleLoader().has_jni_bridge(bundle) is not case.startswith("no-bridge")
