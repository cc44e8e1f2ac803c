"""``NativePluginLoader``: rustbridge's loader of bare libraries, and ``open_native``, the one
place a facade plugin is made (the bundle loader makes its plugins there too).

Loading is plugbridge's: ``plugbridge.load`` maps a private copy of the library for each
plugin (so two plugins of one path have their own log callback and level), or starts it in
a worker process (``isolation="process"``); a load that fails leaves nothing behind. What
is added here: the facade's config and log callback translated, and plugbridge's failures
turned into ``PluginException``. Whether the library has the binary transport is the
handle's to say (``PluginMetadata.binary_transport``, known wherever the library runs).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._config import PluginConfig as CoreConfig
from .._errors import PluginError
from .._levels import LogLevel as CoreLevel
from .._load import Isolation, load
from .._sources import NATIVE_SUFFIXES
from ._config import PluginConfig
from ._exception import PluginException, from_plugin_error
from ._levels import LogLevel
from ._plugin import LogCallbackFn, NativePlugin

SEARCH_PATHS = (".", "./target/release", "./target/debug")
"""Where ``load_by_name`` looks first (then every directory on ``PATH``), as rustbridge does."""

Keys = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class NativePluginLoader:
    """Loads a rustbridge plugin library (``.so``, ``.dylib``, ``.dll``) into a
    ``NativePlugin``.

    plugbridge's extras are keyword-only, with rustbridge's behaviour when left out:
    ``isolation`` (``"inprocess"``, or ``"process"``: the library runs in a worker process,
    and a crash in it cannot take the host down), ``call_timeout`` (seconds, default for
    every call; None: no limit) and ``start_timeout`` (seconds ``plugin_init`` may take).
    """

    @staticmethod
    def load(
        library_path: str | Path,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """Load ``library_path`` with the default configuration and no log callback."""
        return NativePluginLoader.load_with_config(
            library_path,
            PluginConfig.defaults(),
            None,
            isolation=isolation,
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    @staticmethod
    def load_with_config(
        library_path: str | Path,
        config: PluginConfig,
        log_callback: LogCallbackFn | None = None,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """Load ``library_path`` with ``config``; ``log_callback(level, target, message)``
        gets this plugin's records (and only this plugin's). ``PluginException`` if it
        cannot be loaded."""
        path = Path(library_path)
        if not _is_library(path):
            raise PluginException(
                f"Failed to load library {library_path}: not a shared library "
                f"(plugbridge loads {', '.join(NATIVE_SUFFIXES)} files)",
                2,
            )
        return open_native(
            path,
            config,
            log_callback,
            isolation=isolation,
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    @staticmethod
    def load_by_name(
        library_name: str,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """``load_by_name_with_config`` with the default configuration."""
        return NativePluginLoader.load_by_name_with_config(
            library_name,
            PluginConfig.defaults(),
            isolation=isolation,
            call_timeout=call_timeout,
            start_timeout=start_timeout,
        )

    @staticmethod
    def load_by_name_with_config(
        library_name: str,
        config: PluginConfig,
        *,
        isolation: Isolation = "inprocess",
        call_timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> NativePlugin:
        """Load ``lib<name>.so`` (``.dylib``; ``<name>.dll``) from the first of ``.``,
        ``./target/release``, ``./target/debug`` and the ``PATH`` directories that has it;
        ``PluginException("Could not find library: ...")`` if none does."""
        filename = NativePluginLoader._get_library_filename(library_name)
        directories = [*SEARCH_PATHS, *os.environ.get("PATH", "").split(os.pathsep)]
        for directory in directories:
            if not directory:
                continue
            candidate = Path(directory) / filename
            if candidate.exists():
                return NativePluginLoader.load_with_config(
                    candidate,
                    config,
                    None,
                    isolation=isolation,
                    call_timeout=call_timeout,
                    start_timeout=start_timeout,
                )
        raise PluginException(f"Could not find library: {filename}")

    @staticmethod
    def _get_library_filename(library_name: str) -> str:
        """This system's file name for the library ``library_name``."""
        system = platform.system()
        if system == "Linux":
            return f"lib{library_name}.so"
        if system == "Darwin":
            return f"lib{library_name}.dylib"
        if system == "Windows":
            return f"{library_name}.dll"
        raise PluginException(f"Unsupported operating system: {system}")


def open_native(
    source: str | os.PathLike[str],
    config: PluginConfig | None,
    log_callback: LogCallbackFn | None = None,
    *,
    isolation: Isolation = "inprocess",
    variant: str | None = None,
    trusted_keys: Keys | None = None,
    call_timeout: float | None = None,
    start_timeout: float | None = None,
) -> NativePlugin:
    """Load ``source`` — a native library, or a ``.rbp`` bundle — into a ``NativePlugin``.

    Internal to the facade, and stable: ``BundleLoader`` calls it with a bundle's path.
    ``config``: the facade's ``PluginConfig`` (None: its defaults). ``log_callback``: the
    facade's callback, called with the facade's ``LogLevel``; what it raises is printed to
    stderr and ignored, as rustbridge does. Keyword-only, passed on to ``plugbridge.load``:
    ``isolation``, ``variant`` and ``trusted_keys`` (bundles only: which library variant,
    which minisign keys its signatures must be made by; see ``plugbridge.load``), and the
    plugbridge config settings ``call_timeout`` and ``start_timeout`` (seconds; None keeps
    plugbridge's default). Every failure is a ``PluginException`` carrying plugbridge's
    message and code (2 for a library or bundle that cannot be loaded); nothing is left
    running, mapped or on disk after one.
    """
    settings = (config if config is not None else PluginConfig.defaults()).load_settings()
    if call_timeout is not None:
        settings["call_timeout"] = call_timeout
    if start_timeout is not None:
        settings["start_timeout"] = start_timeout
    try:
        handle = load(
            source,
            config=CoreConfig(**settings),  # ConfigError for a value plugbridge refuses
            log_callback=None if log_callback is None else _facade_callback(log_callback),
            isolation=isolation,
            variant=variant,
            trusted_keys=trusted_keys,
        )
    except PluginError as exc:
        raise from_plugin_error(exc) from exc
    return NativePlugin(handle, log_callback=log_callback)


def _is_library(path: Path) -> bool:
    """A name plugbridge loads as a native library (``.so.1`` versions included)."""
    return path.suffix in NATIVE_SUFFIXES or ".so." in path.name


def _facade_callback(callback: LogCallbackFn) -> Any:
    """plugbridge's log callback for ``callback``: the level as the facade's ``LogLevel``,
    and a failure of the callback contained here, reported as rustbridge reports it."""
    levels = tuple(LogLevel)

    def deliver(level: CoreLevel, target: str, message: str) -> None:
        try:
            callback(levels[level], target, message)
        except Exception as exc:
            print(f"Error in log callback: {exc}", file=sys.stderr)

    return deliver
