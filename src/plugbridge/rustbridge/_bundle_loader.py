"""``BundleLoader``: rustbridge's ``.rbp`` API, on plugbridge's bundle machinery.

Every method keeps rustbridge's signature, answers and errors, but the work is
plugbridge's: the zip is read by ``_bundle.archive`` (entry names, sizes and zip bombs
checked before anything is read), the manifest by ``_bundle.manifest``, signatures by
``_bundle.minisign`` and the library of this machine by ``_bundle.verify``. ``load*`` goes
through ``plugbridge.load`` (``open_native``): the library is verified and mapped from
memory, and nothing is extracted to disk (rustbridge leaves a temp directory per load).

Signatures, rustbridge's rule mapped onto plugbridge's:

- ``verify_signatures=True`` (the default) requires ``manifest.json.minisig`` and the
  library's ``.minisig``, made by ``public_key_override`` if given, else by the key the
  manifest carries (no key at all: ``PluginException``). This is plugbridge's trusted-key
  check with that one key trusted, so a reload checks against the same key.
- ``verify_signatures=False`` requires no signature. Signatures that are present are still
  checked against the bundle's own key, as ``plugbridge.load`` always does: a broken
  signature is a corrupt bundle (rustbridge would ignore it).
- Trusted keys (plugbridge's ``trusted_keys=`` keyword, else ``PLUGBRIDGE_TRUSTED_KEYS``,
  read at each call) take precedence over both: the manifest and the library must be
  signed by one of them, whatever the manifest claims.

The same rule holds for ``extract_library*`` and ``extract_jni_bridge*``, which write
exactly the file asked for (``*_to_temp``: in a fresh temp directory that is removed when
the interpreter exits, where rustbridge leaves it forever). Reading the manifest, the file
list and schemas checks no signature, as in rustbridge (schemas: their checksum).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._bundle.archive import BundleArchive, unsafe_entry_name
from .._bundle.keys import trusted_keys_for_load
from .._bundle.manifest import (
    DEFAULT_VARIANT,
    MANIFEST,
    Manifest,
    checksum_hex,
    parse_manifest,
)
from .._bundle.minisign import PublicKey
from .._bundle.platform import current_platform, describe_this_machine
from .._bundle.verify import MANIFEST_LIMIT, _Signatures, verify_bundle
from .._errors import BundleError, PluginError
from .._load import Isolation
from ._exception import PluginException, from_plugin_error
from ._manifest import BridgeInfo, BuildInfo, BundleManifest, SchemaInfo
from ._minisign import MinisignVerifier

if TYPE_CHECKING:
    from ._config import PluginConfig
    from ._plugin import LogCallbackFn, NativePlugin

__all__ = ["BundleLoader"]

KeySpec = str | os.PathLike[str]


class BundleLoader:
    """Loads, inspects and extracts rustbridge ``.rbp`` bundles.

    ``BundleLoader(verify_signatures=True, public_key_override=None)`` as in rustbridge;
    ``trusted_keys`` (keyword only, plugbridge's): minisign public keys (base64 ``RW…`` or
    ``.pub`` paths) that must have signed what is loaded or extracted (see the module
    docstring).
    """

    def __init__(
        self,
        verify_signatures: bool = True,
        public_key_override: str | None = None,
        *,
        trusted_keys: KeySpec | Sequence[KeySpec] | None = None,
    ) -> None:
        self._verify_signatures = verify_signatures
        self._public_key_override = public_key_override
        self._trusted_keys: tuple[PublicKey, ...] | None = None
        self._explicit_keys = trusted_keys is not None
        if trusted_keys is not None:
            try:
                self._trusted_keys = trusted_keys_for_load(trusted_keys)
            except PluginError as exc:
                raise from_plugin_error(exc) from None

    # -- loading -----------------------------------------------------------------------

    def load(
        self,
        bundle_path: str | Path,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """Load the bundle's ``release`` library with the default configuration.

        ``PluginException`` if the bundle fails its checks or the plugin cannot start;
        ``FileNotFoundError`` if there is no such file. plugbridge's extras, keyword-only
        (rustbridge's behaviour when left out): ``isolation`` (``"process"``: the library
        runs in a worker process), ``call_timeout`` and ``start_timeout`` (seconds).
        """
        from ._config import PluginConfig

        return self.load_with_config(
            bundle_path,
            PluginConfig.defaults(),
            isolation=isolation,
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    def load_with_config(
        self,
        bundle_path: str | Path,
        config: PluginConfig,
        log_callback: LogCallbackFn | None = None,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """Load the bundle's ``release`` library with ``config``; ``log_callback(level,
        target, message)`` gets this plugin's records."""
        return self._load(
            bundle_path,
            None,
            config,
            log_callback,
            isolation=isolation,
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    def load_variant_with_config(
        self,
        bundle_path: str | Path,
        variant: str,
        config: PluginConfig,
        log_callback: LogCallbackFn | None = None,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """Load the bundle's ``variant`` library (``"debug"``, …) with ``config``."""
        return self._load(
            bundle_path,
            variant,
            config,
            log_callback,
            isolation=isolation,
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    def _load(
        self,
        bundle_path: str | Path,
        variant: str | None,
        config: PluginConfig,
        log_callback: LogCallbackFn | None,
        *,
        isolation: Isolation,
        call_timeout: float | None,
        start_timeout: float | None,
    ) -> NativePlugin:
        path = _existing(bundle_path)
        keys = self._signature_keys(path)
        from ._loader import open_native

        return open_native(
            path,
            config,
            log_callback,
            isolation=isolation,
            variant=variant,
            trusted_keys=[key.to_base64() for key in keys or ()],
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    # -- extracting the library ----------------------------------------------------------

    def extract_library_to_temp(self, bundle_path: str | Path) -> Path:
        """Verify the bundle and write its ``release`` library into a new temp directory,
        which is removed when the interpreter exits; the library's path."""
        library, data = self._verified_library(bundle_path, None)
        return _write_to_temp(library, data)

    def extract_library(self, bundle_path: str | Path, dest_dir: str | Path) -> Path:
        """Verify the bundle and write its ``release`` library into ``dest_dir`` (made if
        missing); ``FileExistsError`` if the file is already there."""
        library, data = self._verified_library(bundle_path, None)
        return _write(Path(dest_dir), library, data, exclusive=True, what="Library")

    def extract_library_variant(
        self, bundle_path: str | Path, dest_dir: str | Path, variant: str
    ) -> Path:
        """As ``extract_library``, for the library of ``variant``."""
        library, data = self._verified_library(bundle_path, variant)
        return _write(Path(dest_dir), library, data, exclusive=True, what="Library")

    def _verified_library(self, bundle_path: str | Path, variant: str | None) -> tuple[str, bytes]:
        path = _existing(bundle_path)
        keys = self._signature_keys(path)
        try:
            verified = verify_bundle(path, variant, keys)
        except PluginError as exc:
            raise from_plugin_error(exc) from None
        return verified.library.library, verified.library.data

    # -- what the bundle says ------------------------------------------------------------

    def list_variants(self, bundle_path: str | Path, platform: str | None = None) -> list[str]:
        """The variants of ``platform`` (default: this machine's), in the manifest's order;
        ``PluginException`` if the bundle has no library for it."""
        key = platform or self.get_current_platform()
        found = self.get_manifest(bundle_path).get_platform(key)
        if found is None:
            raise PluginException(f"Platform not supported: {key}")
        return found.list_variants()

    def get_default_variant(self, bundle_path: str | Path, platform: str | None = None) -> str:
        """The variant ``load`` picks (``release``, also for a platform the bundle lacks)."""
        key = platform or self.get_current_platform()
        found = self.get_manifest(bundle_path).get_platform(key)
        return DEFAULT_VARIANT if found is None else found.get_default_variant()

    def get_build_info(self, bundle_path: str | Path) -> BuildInfo | None:
        """The manifest's top-level ``build_info``."""
        return self.get_manifest(bundle_path).build_info

    def get_effective_build_info(
        self,
        bundle_path: str | Path,
        platform: str | None = None,
        variant: str = DEFAULT_VARIANT,
    ) -> BuildInfo | None:
        """The build info of ``platform``'s ``variant``: its own, else the top-level one."""
        key = platform or self.get_current_platform()
        return self.get_manifest(bundle_path).get_effective_build_info(key, variant)

    def get_manifest(self, bundle_path: str | Path) -> BundleManifest:
        """The bundle's manifest (read and checked, not signature-verified)."""
        path = _existing(bundle_path)
        try:
            with BundleArchive(path) as archive:
                manifest = _read_manifest(archive)
        except PluginError as exc:
            raise from_plugin_error(exc) from None
        return BundleManifest.from_model(manifest)

    def list_files(self, bundle_path: str | Path) -> list[str]:
        """Every entry of the bundle, in archive order."""
        path = _existing(bundle_path)
        try:
            with BundleArchive(path) as archive:
                return archive.names()
        except PluginError as exc:
            raise from_plugin_error(exc) from None

    # -- schemas -------------------------------------------------------------------------

    def get_schemas(self, bundle_path: str | Path) -> dict[str, SchemaInfo]:
        """The manifest's top-level schemas, by name."""
        return self.get_manifest(bundle_path).schemas

    def extract_schema(
        self, bundle_path: str | Path, schema_name: str, dest_dir: str | Path
    ) -> Path:
        """Write schema ``schema_name`` (its checksum verified) to ``dest_dir/schema_name``,
        replacing a file of that name, as rustbridge does; ``dest_dir`` must exist."""
        data = self._schema(bundle_path, schema_name)
        if "/" in schema_name or unsafe_entry_name(schema_name) is not None:
            raise PluginException(
                f"Schema name {schema_name!r} is not a plain file name: it would be written "
                f"outside {os.fspath(dest_dir)}"
            )
        output = Path(dest_dir) / schema_name
        output.write_bytes(data)
        return output

    def read_schema(self, bundle_path: str | Path, schema_name: str) -> str:
        """The text of schema ``schema_name``, its checksum verified."""
        data = self._schema(bundle_path, schema_name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise PluginException(f"Schema {schema_name} is not UTF-8 text", 2) from None

    def _schema(self, bundle_path: str | Path, schema_name: str) -> bytes:
        path = _existing(bundle_path)
        try:
            with BundleArchive(path) as archive:
                info = _read_manifest(archive).schemas.get(schema_name)
                if info is None:
                    raise PluginException(f"Schema not found in bundle: {schema_name}")
                data = archive.read(info.path)
        except PluginError as exc:
            raise from_plugin_error(exc) from None
        actual = hashlib.sha256(data).hexdigest()
        if checksum_hex(info.checksum) != actual:
            raise PluginException(
                f"Checksum verification failed for schema {schema_name}: the manifest says "
                f"{info.checksum}, the file is {actual}",
                2,
            )
        return data

    # -- the JNI bridge (rustbridge 0.7 bundles) -------------------------------------------

    def has_jni_bridge(self, bundle_path: str | Path) -> bool:
        """Whether the bundle ships a JNI bridge library for any platform."""
        bridges = self.get_manifest(bundle_path).bridges
        return bridges is not None and bool(bridges.jni)

    def extract_jni_bridge_to_temp(self, bundle_path: str | Path) -> Path:
        """Verify and write this platform's JNI bridge into a new temp directory, which is
        removed when the interpreter exits; the library's path."""
        library, data = self._verified_bridge(bundle_path)
        return _write_to_temp(library, data)

    def extract_jni_bridge(self, bundle_path: str | Path, dest_dir: str | Path) -> Path:
        """Verify and write this platform's JNI bridge into ``dest_dir`` (made if missing);
        ``FileExistsError`` if the file is already there."""
        library, data = self._verified_bridge(bundle_path)
        return _write(Path(dest_dir), library, data, exclusive=True, what="JNI bridge")

    def _verified_bridge(self, bundle_path: str | Path) -> tuple[str, bytes]:
        """The JNI bridge library of this platform's default variant, checked by the same
        rule as a plugin library (``_bundle.verify``'s), in memory. A bundle without one
        says so before any signature is looked at, as in rustbridge."""
        if not self.has_jni_bridge(bundle_path):
            raise PluginException("Bundle does not contain a JNI bridge library")
        path = Path(bundle_path)
        policy = _Signatures(self._signature_keys(path))
        try:
            with BundleArchive(path) as archive:
                manifest = _read_manifest(archive, policy)
                bridges = BundleManifest.from_model(manifest).bridges or BridgeInfo()
                key = self.get_current_platform()
                found = bridges.jni.get(key)
                if found is None:
                    raise PluginException(f"JNI bridge not available for platform: {key}")
                variant = found.get_default_variant()
                library = found.get_library(variant)
                if not library:
                    raise PluginException(
                        f"JNI bridge variant '{variant}' not found for platform '{key}'"
                    )
                data = archive.read(library)
                expected, actual = checksum_hex(found.get_checksum(variant)), _sha256(data)
                if expected != actual:
                    raise BundleError(
                        f"checksum mismatch for JNI bridge {library}: the manifest says "
                        f"sha256:{expected}, the file is sha256:{actual}"
                    )
                policy.check(archive, library, data, manifest)
        except PluginError as exc:
            raise from_plugin_error(exc) from None
        return library, data

    # -- signatures ----------------------------------------------------------------------

    def _signature_keys(self, path: Path) -> tuple[PublicKey, ...] | None:
        """The keys the manifest and the library must be signed by, or None: signatures
        not required (those present are checked against the bundle's own key)."""
        if self._explicit_keys:
            if self._trusted_keys:
                return self._trusted_keys
        else:
            try:
                from_environment = trusted_keys_for_load(None)
            except PluginError as exc:
                raise from_plugin_error(exc) from None
            if from_environment:
                return from_environment
        if not self._verify_signatures:
            return None
        if self._public_key_override:
            MinisignVerifier(self._public_key_override)  # ValueError if it is no key
            return (PublicKey.from_base64(self._public_key_override),)
        try:
            with BundleArchive(path) as archive:
                own = _read_manifest(archive).public_key
        except PluginError as exc:
            raise from_plugin_error(exc) from None
        if not own:
            raise PluginException(
                "Signature verification enabled but no public key available. Bundle must "
                "include public_key in manifest, or provide via public_key_override."
            )
        try:
            MinisignVerifier(own)
        except ValueError as exc:
            raise PluginException(f"invalid {MANIFEST}: public_key: {exc}", 2) from None
        return (PublicKey.from_base64(own),)

    @staticmethod
    def get_current_platform() -> str:
        """This machine's platform key (``linux-x86_64``, ``darwin-aarch64``, …); on a
        machine rustbridge has no key for, a description no bundle lists."""
        return current_platform() or describe_this_machine()


# -- helpers ----------------------------------------------------------------------------


def _existing(bundle_path: str | Path) -> Path:
    path = Path(bundle_path)
    if not path.exists():
        raise FileNotFoundError(f"Bundle not found: {path}")
    return path


def _read_manifest(archive: BundleArchive, policy: _Signatures | None = None) -> Manifest:
    """The bundle's manifest; with ``policy``, its signature checked by that rule (before
    it is parsed when keys are trusted, as ``_bundle.verify`` does)."""
    if not archive.has(MANIFEST):
        raise BundleError(f"bundle {archive.path} has no {MANIFEST}")
    data = archive.read(MANIFEST, MANIFEST_LIMIT)
    if policy is not None and policy.trusted is not None:
        policy.check(archive, MANIFEST, data, None)
    manifest = parse_manifest(data)
    if policy is not None and policy.trusted is None:
        policy.check(archive, MANIFEST, data, manifest)
    return manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(dest_dir: Path, library: str, data: bytes, *, exclusive: bool, what: str) -> Path:
    """Write ``data`` as ``dest_dir/<library's file name>``, executable (as rustbridge
    does). ``exclusive``: never replace a file (nor follow a link) already there."""
    output = dest_dir / library.rpartition("/")[2]
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    if exclusive and (output.exists() or output.is_symlink()):
        raise _exists(output, what)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(output, flags, 0o666)
    except FileExistsError:
        raise _exists(output, what) from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        if os.name != "nt":
            mode = os.fstat(out.fileno()).st_mode
            os.fchmod(out.fileno(), mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return output


def _exists(output: Path, what: str) -> FileExistsError:
    to_temp = (
        "extract_jni_bridge_to_temp()" if what == "JNI bridge" else "extract_library_to_temp()"
    )
    return FileExistsError(
        f"{what} already exists at target path: {output}. Remove the existing file or use "
        f"{to_temp} for automatic temp directory."
    )


# -- temp directories, removed at exit ------------------------------------------------------

_temp_dirs: list[tuple[int, str]] = []
"""(process id, directory) of every ``*_to_temp`` extraction."""
_exit_hook_pid: int | None = None


def _write_to_temp(library: str, data: bytes) -> Path:
    """Write into a fresh ``rustbridge-*`` temp directory that goes when this interpreter
    exits (nothing is created when the bundle fails its checks: they ran already)."""
    directory = tempfile.mkdtemp(prefix="rustbridge-")
    _remove_at_exit(directory)
    try:
        return _write(Path(directory), library, data, exclusive=False, what="Library")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _remove_at_exit(directory: str) -> None:
    global _exit_hook_pid
    pid = os.getpid()
    if _exit_hook_pid != pid:  # once per process (a forked child inherits the list)
        _exit_hook_pid = pid
        atexit.register(remove_temp_dirs)
    _temp_dirs.append((pid, directory))


def remove_temp_dirs() -> None:
    """Remove the temp directories this process extracted into (run at exit; a forked
    child never removes its parent's)."""
    pid = os.getpid()
    for entry in [entry for entry in _temp_dirs if entry[0] == pid]:
        _temp_dirs.remove(entry)
        shutil.rmtree(entry[1], ignore_errors=True)
