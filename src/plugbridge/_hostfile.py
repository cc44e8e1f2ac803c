"""The host file (``plugbridge.toml``): read, validated, turned into one ``PluginSpec`` per plugin.

A plugin table holds the placement keys (``source`` or ``entry_point``, ``isolation``,
``variant``, ``trusted_keys``, ``replicas``, ``ray``, ``required``) and every
``PluginConfig`` key. The placement keys are typed by a msgspec struct; the config keys are
checked by ``PluginConfig`` itself, one key at a time, so the rules live in one place and
the error can name the key. Every error is a ``ConfigError`` that names the file, the table
and the key, so a user can go straight to the line. ``PluginHost.add`` goes through the
same checks, with ``PluginHost.add`` standing where the file name would be.

The ``ray`` table holds a Ray plugin's actor options (``load``'s ``ray_options``, contract
section 10): a plugin's own ``ray`` key with another isolation is a ``ConfigError`` (it would
be ignored), while a ``ray`` table in ``[defaults]`` applies to the plugins that run on Ray
only (a default for some plugins, as ``variant`` is for bundles only).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ._config import PluginConfig
from ._entrypoints import entry_point_source
from ._errors import ConfigError, PluginError
from ._load import check_placement
from ._sources import _DOTTED, BUNDLE_SUFFIX, NATIVE_SUFFIXES, resolve_source

CONFIG_KEYS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(PluginConfig))


class _Placement(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The keys of a plugin table that say what to load and where (typed by msgspec)."""

    source: str | msgspec.UnsetType = msgspec.UNSET
    entry_point: str | msgspec.UnsetType = msgspec.UNSET
    isolation: str | msgspec.UnsetType = msgspec.UNSET
    variant: str | msgspec.UnsetType = msgspec.UNSET
    trusted_keys: str | list[str] | msgspec.UnsetType = msgspec.UNSET
    replicas: int | msgspec.UnsetType = msgspec.UNSET
    ray: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    required: bool | msgspec.UnsetType = msgspec.UNSET


PLACEMENT_KEYS: tuple[str, ...] = _Placement.__struct_fields__
TABLE_KEYS: tuple[str, ...] = PLACEMENT_KEYS + CONFIG_KEYS


@dataclass(frozen=True)
class PluginSpec:
    """One plugin, validated: everything a host needs to start (and restart) it."""

    name: str
    source: str | None
    """What ``load`` is given: an absolute path or an importable name. For an entry point,
    its value when the file was read (None: not installed then; looked up at each start)."""
    entry_point: str | None
    isolation: str
    variant: str | None
    trusted_keys: tuple[str, ...] | None
    """Base64 keys or absolute ``.pub`` paths; None: ``PLUGBRIDGE_TRUSTED_KEYS`` decides."""
    replicas: int
    ray: Mapping[str, Any] | None
    required: bool
    config: PluginConfig
    """A template: each handle gets its own copy (``set_log_level`` changes the handle's)."""

    def current_source(self) -> str:
        """The source to start from now: an entry point is looked up again at each start,
        so a distribution installed (or upgraded) meanwhile is picked up by a reload."""
        if self.entry_point is not None:
            return entry_point_source(self.entry_point)
        assert self.source is not None
        return self.source

    @property
    def shown_source(self) -> str:
        if self.source is not None:
            return self.source
        return f"entry point {self.entry_point!r} (not installed)"


@dataclass(frozen=True)
class HostFile:
    """A host file, read and validated."""

    path: Path
    defaults: dict[str, Any]
    """The ``[defaults]`` table, checked, with its relative paths made absolute."""
    plugins: tuple[PluginSpec, ...]
    """In the file's order."""


def read_host_file(path: str | os.PathLike[str]) -> HostFile:
    """Read and validate a host file; ``ConfigError`` naming file, table and key if wrong."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read the host file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: not UTF-8 text ({exc.reason})") from None
    for key in document:
        if key not in ("defaults", "plugins"):
            raise ConfigError(
                f"{shown}: unknown top-level key {key!r} (a host file holds a [defaults] table "
                "and [plugins.NAME] tables)"
            )
    base_dir = Path(path).absolute().parent
    defaults = checked_table(document.get("defaults", {}), shown, "[defaults]", base_dir)
    plugins = document.get("plugins", {})
    if not isinstance(plugins, dict):
        raise ConfigError(
            f"{shown}: 'plugins' must hold one [plugins.NAME] table per plugin, "
            f"not {_toml_type(plugins)}"
        )
    specs = tuple(
        plugin_spec(name, table, defaults, shown, base_dir) for name, table in plugins.items()
    )
    return HostFile(Path(path), defaults, specs)


def checked_table(table: object, origin: str, section: str, base_dir: Path) -> dict[str, Any]:
    """A plugin table (or ``[defaults]``) with every key it holds checked on its own, and
    relative ``source``/``trusted_keys`` paths made absolute (relative to ``base_dir``)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{origin}: {section} must be a table, not {_toml_type(table)}")
    for key in table:
        if key not in TABLE_KEYS:
            raise ConfigError(f"{origin}: {section} unknown key {key!r}{_suggestion(str(key))}")
    placement = {key: value for key, value in table.items() if key in PLACEMENT_KEYS}
    try:
        msgspec.convert(placement, _Placement)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{origin}: {section} {_type_error(str(exc))}") from None
    checked = dict(table)
    fail = _failing(origin, section)
    for key in CONFIG_KEYS:
        if key in checked:
            try:
                PluginConfig(**{key: checked[key]})
            except ConfigError as exc:
                raise fail(key, exc.message) from None
    if "source" in checked and "entry_point" in checked:
        raise ConfigError(
            f"{origin}: {section} keys 'source' and 'entry_point' both name the plugin; "
            "give exactly one of them"
        )
    if "isolation" in checked:
        try:
            check_placement(checked["isolation"], 1)
        except ConfigError as exc:
            raise fail("isolation", exc.message) from None
    if "replicas" in checked:
        try:
            check_placement("process", checked["replicas"])
        except ConfigError as exc:
            raise fail("replicas", exc.message) from None
    if "source" in checked:
        if not checked["source"]:
            raise fail("source", "is empty")
        checked["source"] = _source_relative_to(checked["source"], base_dir)
    if "entry_point" in checked and not checked["entry_point"]:
        raise fail("entry_point", "is empty")
    if "trusted_keys" in checked:
        from ._bundle.keys import trusted_keys_for_load  # the bundle machinery: when used only

        keys = checked["trusted_keys"]
        keys = tuple(
            _key_relative_to(key, base_dir) for key in ([keys] if isinstance(keys, str) else keys)
        )
        try:
            trusted_keys_for_load(keys)
        except PluginError as exc:
            raise fail("trusted_keys", exc.message) from None
        checked["trusted_keys"] = keys
    return checked


def plugin_spec(
    name: object, table: object, defaults: Mapping[str, Any], origin: str, base_dir: Path
) -> PluginSpec:
    """One plugin's table merged over ``defaults`` (both checked by ``checked_table``) into
    a ``PluginSpec``. A required plugin's source must be found now; an optional one's may
    be missing (it is then listed FAILED, and a reload once it exists picks it up)."""
    section = f"[plugins.{name}]"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{origin}: {section} a plugin needs a non-empty name")
    own = checked_table(table, origin, section, base_dir)
    merged = dict(defaults)
    if "source" in own or "entry_point" in own:  # the plugin's own choice replaces the defaults'
        merged.pop("source", None)
        merged.pop("entry_point", None)
    merged.update(own)
    fail = _failing(origin, section)
    if "source" not in merged and "entry_point" not in merged:
        raise fail("source", "source is missing: give 'source' (a path or module) or 'entry_point'")
    isolation = merged.get("isolation", "inprocess")
    replicas = merged.get("replicas", 1)
    try:
        check_placement(isolation, replicas)
    except ConfigError as exc:
        raise fail("replicas", exc.message) from None
    ray = merged.get("ray") if isolation == "ray" or "ray" in own else None
    try:
        check_placement(isolation, replicas, ray)
    except ConfigError as exc:
        raise fail("ray", exc.message) from None
    keys = merged.get("trusted_keys")
    spec = PluginSpec(
        name=name,
        source=merged.get("source"),
        entry_point=merged.get("entry_point"),
        isolation=isolation,
        variant=merged.get("variant"),
        trusted_keys=None if keys is None else tuple(keys),
        replicas=replicas,
        ray=ray,
        required=merged.get("required", True),
        config=PluginConfig(**{key: merged[key] for key in CONFIG_KEYS if key in merged}),
    )
    key = "source" if spec.entry_point is None else "entry_point"
    try:
        source = spec.current_source()
        resolve_source(source, variant=spec.variant, trusted_keys=spec.trusted_keys)
    except PluginError as exc:
        if spec.required:
            raise fail(key, exc.message) from None
        return spec if spec.entry_point is None else dataclasses.replace(spec, source=None)
    return dataclasses.replace(spec, source=source)


def _failing(origin: str, section: str) -> Callable[[str, str], ConfigError]:
    """Builds the error for one key of one table: ``FILE: [plugins.NAME] key 'KEY' ...``."""

    def fail(key: str, message: str) -> ConfigError:
        if message.startswith(f"{key} "):
            return ConfigError(f"{origin}: {section} key {message.replace(key, repr(key), 1)}")
        return ConfigError(f"{origin}: {section} key {key!r}: {message}")

    return fail


def _source_relative_to(text: str, base_dir: Path) -> str:
    """A path source made absolute against ``base_dir``; an importable name as it is.

    Told apart as ``resolve_source`` does: a ``.py``/``.rbp``/library suffix or a path
    separator makes a path; so does an existing entry of ``base_dir``; otherwise a
    ``pkg.module[:Class]`` name stays a name.
    """
    path = Path(text)
    if path.is_absolute():
        return text
    looks_like_path = (
        path.suffix in (".py", BUNDLE_SUFFIX, *NATIVE_SUFFIXES)
        or ".so." in path.name
        or "/" in text
        or os.sep in text
    )
    if looks_like_path or (base_dir / path).exists() or not _DOTTED.match(text):
        return os.path.abspath(base_dir / path)
    return text


def _key_relative_to(text: str, base_dir: Path) -> str:
    """A trusted key: a base64 key (or a ``.pub`` file's text) as it is, a path made absolute."""
    from ._bundle.minisign import _looks_like_base64_key

    if "\n" in text or _looks_like_base64_key(text.strip()) or Path(text).is_absolute():
        return text
    return os.path.abspath(base_dir / text)


_TYPE_ERROR = re.compile(
    r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)` - at `\$\.(?P<key>\w+)(?P<rest>\S*)`$"
)
_TOML_TYPES = {
    "object": "a table",
    "array": "an array",
    "str": "a string",
    "int": "an integer",
    "float": "a float",
    "bool": "a boolean",
}


def _type_error(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.replicas`" in the host file's terms."""
    match = _TYPE_ERROR.match(message)
    if match is None:
        return message
    want = " or ".join(_TOML_TYPES.get(t, t) for t in match["want"].split(" | "))
    got = _TOML_TYPES.get(match["got"], match["got"])
    where = f" (at {match['key']}{match['rest']})" if match["rest"] else ""
    return f"key {match['key']!r} must be {want}, not {got}{where}"


def _toml_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "str", int: "int", float: "float", bool: "bool"}
    name = names.get(type(value), type(value).__name__)
    return _TOML_TYPES.get(name, name)


def _suggestion(key: str) -> str:
    close = difflib.get_close_matches(key, TABLE_KEYS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(TABLE_KEYS)})"
