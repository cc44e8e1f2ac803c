"""Bundles: load() of a signed, verified .rbp against load() of the bare library, same run.

Compiles examples/hello-c (as bench_native does), bundles it with plugbridge's own writer,
signed with a fresh key, and loads it with that key trusted: the zip read, the manifest
parse, sha256 of the library, four Ed25519 checks (signature and global signature of the
manifest and of the library), then the same private-copy load a bare library gets (from
bytes instead of a file copy). Target: bundle load ≤ 1.5 times bare load + the cost of the
checks' cryptography, measured apart in the same run: sha256 of the library and the two
minisign verifications (BLAKE2b-512 prehash, Ed25519 signature and global signature of the
manifest and of the library). That part grows with the library's size and is the price
of checking at all; everything else a bundle adds (zip, inflate, manifest, the copy from
bytes) must stay within half a bare load.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import plugbridge
from plugbridge._bundle.archive import BundleArchive
from plugbridge._bundle.minisign import PublicKey, generate, verify
from plugbridge._bundle.platform import current_platform
from plugbridge._bundle.verify import verify_bundle
from plugbridge._bundle.writer import LibraryInput, write_bundle

from .bench_native import EXPECTED, REQUEST, build
from .harness import Row, median, ms, p99, ratio, us, verdict

SECTION = "bundle"
TARGET = 1.5


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load_times(source: Path, rounds: int, **options: object) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        plugin = plugbridge.load(source, **options)  # type: ignore[arg-type]
        out.append(time.perf_counter() - start)
        plugin.shutdown()
    return out


def _crypto(bundle: Path, key: PublicKey) -> Callable[[], object]:
    """The checks' cryptography alone, on the bundle's own manifest, library, signatures."""
    with BundleArchive(bundle) as archive:
        manifest = archive.read("manifest.json")
        manifest_sig = archive.read_text("manifest.json.minisig", 1 << 16)
        (entry,) = (name for name in archive.names() if name.startswith("lib/") and
                    not name.endswith(".minisig"))  # fmt: skip
        library = archive.read(entry)
        library_sig = archive.read_text(entry + ".minisig", 1 << 16)

    def check() -> None:
        verify(manifest, manifest_sig, key)
        hashlib.sha256(library).hexdigest()
        verify(library, library_sig, key)

    return check


def run(quick: bool = False) -> list[Row]:
    platform = current_platform()
    if platform is None:
        return [Row(SECTION, "bundle load", "n/a", note="no rustbridge platform key here")]
    rounds = 20 if quick else 100
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        library = build(directory)
        secret, public = generate(None)
        pub_file = directory / "publisher.pub"
        public.dump(pub_file)
        signed = directory / "hello-c-signed.rbp"
        unsigned = directory / "hello-c.rbp"
        libraries = [LibraryInput(platform, "release", library)]
        write_bundle(signed, name="hello-c", version="1.0.0", libraries=libraries, sign_key=secret)
        write_bundle(unsigned, name="hello-c", version="1.0.0", libraries=libraries)
        trusted = {"trusted_keys": [str(pub_file)]}
        with plugbridge.load(signed, **trusted) as plugin:  # type: ignore[arg-type]
            assert plugin.call("echo", REQUEST) == EXPECTED
            assert plugin.metadata.trust == "trusted"

        # Interleave baseline and subjects so drift hits them alike; the crypto too, in the
        # same state of the caches as the loads it is part of (not in a hot loop of its own).
        crypto = _crypto(signed, public)
        bare: list[float] = []
        bundle: list[float] = []
        plain: list[float] = []
        verify: list[float] = []
        hashing: list[float] = []
        for _ in range(rounds):
            bare += _load_times(library, 1)
            bundle += _load_times(signed, 1, **trusted)
            plain += _load_times(unsigned, 1)
            verify.append(_time(lambda: verify_bundle(signed, trusted_keys=[public])))
            hashing.append(_time(crypto))
        lib_bytes = library.read_bytes()
        bare_p = _load_times(library, max(rounds // 10, 5), isolation="process")
        bundle_p = _load_times(signed, max(rounds // 10, 5), isolation="process", **trusted)

    bare_m, bundle_m, hash_m = median(bare), median(bundle), median(hashing)
    bound = TARGET * bare_m + hash_m
    size = f"{len(lib_bytes) // 1024} KiB library"
    return [
        Row(SECTION, f"load() bare library ({size}) to ACTIVE (baseline)",
            ms(bare_m), ms(p99(bare))),
        Row(SECTION, "load() signed bundle, trusted key (verified) to ACTIVE",
            ms(bundle_m), ms(p99(bundle)), ratio(bundle_m, bare_m),
            f"≤ {TARGET}× + crypto = {ms(bound)}", verdict(bundle_m <= bound)),
        Row(SECTION, "load() unsigned bundle (checksum only) to ACTIVE",
            ms(median(plain)), ms(p99(plain)), ratio(median(plain), bare_m)),
        Row(SECTION, "verify_bundle() alone (zip, manifest, sha256, 4 Ed25519 checks)",
            ms(median(verify)), ms(p99(verify))),
        Row(SECTION, "crypto of the checks (sha256; 2 minisign checks: BLAKE2b-512, 2 Ed25519)",
            us(hash_m), us(p99(hashing))),
        Row(SECTION, "load() bare library, isolation=process", ms(median(bare_p)),
            ms(p99(bare_p))),
        Row(SECTION, "load() signed bundle, trusted key, isolation=process",
            ms(median(bundle_p)), ms(p99(bundle_p)), ratio(median(bundle_p), median(bare_p))),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(True):
        print(row)
