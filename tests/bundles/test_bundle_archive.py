"""A bundle's zip is judged before anything in it is believed: unsafe entry names, sizes
beyond the limits, zip bombs and headers that lie are refused with a ``BundleError``."""

from __future__ import annotations

import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

import plugbridge
from plugbridge import BundleError
from plugbridge._bundle.archive import MAX_ENTRY_BYTES, BundleArchive, unsafe_entry_name

from .conftest import HERE, BundleSpec, library_entry, write_zip


def good_entries(release: bytes) -> dict[str, bytes]:
    return BundleSpec(libraries={(HERE, "release"): release}).entries()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil.so", "climbs out of the bundle with '..'"),
        ("lib/../../evil.so", "climbs out of the bundle with '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("C:/Windows/evil.dll", "holds a ':' (a drive or stream name)"),
        ("lib\\..\\evil.so", "holds a backslash"),
        ("lib/evil\x01.so", "holds a control character"),
        ("lib//evil.so", "has an empty path component"),
        ("./evil.so", "has a '.' component"),
    ],
)
def test_unsafe_entry_names_are_refused(
    tmp_path: Path, hello_release: bytes, name: str, problem: str
) -> None:
    assert unsafe_entry_name(name) == f"it {problem}"
    entries = good_entries(hello_release)
    entries[name] = b"payload"
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match="unsafe entry path") as caught:
        plugbridge.load(bundle)
    assert caught.value.message.endswith(f": it {problem}")
    assert repr(name) in caught.value.message


@pytest.mark.parametrize("name", ["manifest.json", "lib/linux-x86_64/release/", "docs/a-b_c.1.txt"])
def test_ordinary_entry_names_are_safe(name: str) -> None:
    assert unsafe_entry_name(name) is None


def test_traversal_entry_is_refused_in_both_isolation_modes(
    tmp_path: Path, hello_release: bytes, isolation: str
) -> None:
    entries = good_entries(hello_release)
    entries["../../outside.txt"] = b"x"
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=r"unsafe entry path '\.\./\.\./outside\.txt'"):
        plugbridge.load(bundle, isolation=isolation)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_duplicate_entry_is_refused(tmp_path: Path, hello_release: bytes) -> None:
    items = [*good_entries(hello_release).items(), ("manifest.json", b"{}")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate it writes
        bundle = write_zip(tmp_path / "h.rbp", items)
    with pytest.raises(BundleError, match=r"holds entry 'manifest\.json' twice"):
        plugbridge.load(bundle)


def test_symbolic_link_entry_is_refused(tmp_path: Path, hello_release: bytes) -> None:
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    with zipfile.ZipFile(bundle, "a") as archive:
        link = zipfile.ZipInfo("docs/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(BundleError, match=r"'docs/link' of bundle .* is a symbolic link"):
        plugbridge.load(bundle)


def test_oversized_entry_is_refused_by_its_declared_size(
    tmp_path: Path, hello_release: bytes, isolation: str
) -> None:
    entries = good_entries(hello_release)
    entries["docs/huge.bin"] = b"small in truth"
    bundle = write_zip(tmp_path / "h.rbp", entries)
    set_declared_size(bundle, "docs/huge.bin", MAX_ENTRY_BYTES + 1)
    with pytest.raises(BundleError) as caught:
        plugbridge.load(bundle, isolation=isolation)
    assert caught.value.message.startswith("entry 'docs/huge.bin' of bundle ")
    assert caught.value.message.endswith(
        f"is oversized: {MAX_ENTRY_BYTES + 1} bytes declared, the limit is {MAX_ENTRY_BYTES}"
    )


def test_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path, hello_release: bytes) -> None:
    entries = good_entries(hello_release)
    entries["docs/bomb.txt"] = bytes(8 * 1024 * 1024)  # deflates about 1000-fold
    bundle = write_zip(tmp_path / "h.rbp", entries)
    with pytest.raises(BundleError, match=r"'docs/bomb\.txt' .* more than 200-fold \(a zip bomb\)"):
        plugbridge.load(bundle)


def test_entry_whose_header_understates_its_size_is_refused(
    tmp_path: Path, hello_release: bytes
) -> None:
    """A header that declares fewer bytes than the data hold: at most one byte more than
    declared is ever inflated, and the entry is refused."""
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    declared = len(hello_release) // 2
    set_declared_size(bundle, library_entry(), declared)
    with pytest.raises(BundleError) as caught:
        plugbridge.load(bundle)
    assert caught.value.message.endswith(f"holds more than the {declared} bytes it declares")


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_entries_of_other_methods_are_read_and_checked_too(
    tmp_path: Path, hello_release: bytes, method: int
) -> None:
    """Stored entries are read directly, bzip2 and LZMA ones through zipfile: each is
    counted against its declared size all the same."""
    bundle = tmp_path / "h.rbp"
    with zipfile.ZipFile(bundle, "w") as archive:
        for name, data in good_entries(hello_release).items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    with BundleArchive(bundle) as opened:
        assert opened.read(library_entry()) == hello_release
    set_declared_size(bundle, library_entry(), len(hello_release) - 1)
    with pytest.raises(BundleError, match=r"holds more than|cannot be read"):
        plugbridge.load(bundle)


def test_corrupt_deflate_data_is_refused(tmp_path: Path, hello_release: bytes) -> None:
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    data = bytearray(bundle.read_bytes())
    at = data.find(library_entry().encode()) + len(library_entry()) + 200
    data[at : at + 8] = bytes(8)  # inside the library's compressed data
    bundle.write_bytes(bytes(data))
    with pytest.raises(
        BundleError, match=rf"entry '{library_entry()}' .* (cannot be read|not the)"
    ):
        plugbridge.load(bundle)


def test_local_header_naming_another_file_is_refused(tmp_path: Path, hello_release: bytes) -> None:
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    data = bundle.read_bytes()
    at = data.find(b"manifest.json", data.find(b"PK\x03\x04"))  # in the first local header
    bundle.write_bytes(data[:at] + b"manifest.jsoX" + data[at + 13 :])
    with pytest.raises(BundleError, match="its local header names another file"):
        plugbridge.load(bundle)


def test_entry_whose_header_overstates_its_size_is_refused(
    tmp_path: Path, hello_release: bytes
) -> None:
    """zipfile yields what the data hold, fewer bytes than declared: the count tells."""
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    set_declared_size(bundle, library_entry(), len(hello_release) + 4096)
    with pytest.raises(BundleError) as caught:
        plugbridge.load(bundle)
    assert caught.value.message.endswith(
        f"holds {len(hello_release)} bytes, not the {len(hello_release) + 4096} it declares"
    )


def test_read_refuses_more_than_the_callers_limit(tmp_path: Path, hello_release: bytes) -> None:
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    with BundleArchive(bundle) as archive:
        assert archive.read(library_entry()) == hello_release
        with pytest.raises(BundleError, match=r"oversized: .* the limit for it is 100"):
            archive.read(library_entry(), limit=100)


def test_truncated_bundle_is_not_a_zip(tmp_path: Path, hello_release: bytes) -> None:
    bundle = write_zip(tmp_path / "h.rbp", good_entries(hello_release))
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with pytest.raises(BundleError, match="is not a zip archive"):
        plugbridge.load(bundle)


def set_declared_size(bundle: Path, name: str, size: int) -> None:
    """Rewrite the uncompressed size of entry ``name`` in its local and central headers."""
    data = bytearray(bundle.read_bytes())
    encoded = name.encode()
    patched = 0
    for signature, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),  # local file header
        (b"PK\x01\x02", 24, 28, 46),  # central directory header
    ):
        at = data.find(signature)
        while at != -1:
            (name_len,) = struct.unpack_from("<H", data, at + name_len_at)
            if bytes(data[at + name_at : at + name_at + name_len]) == encoded:
                struct.pack_into("<I", data, at + size_at, size)
                patched += 1
            at = data.find(signature, at + 4)
    assert patched == 2
    bundle.write_bytes(bytes(data))
