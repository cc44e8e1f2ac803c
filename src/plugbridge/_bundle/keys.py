"""Which minisign keys a bundle's signatures must be made by.

``load(..., trusted_keys=...)`` names them (each a base64 ``RW…`` key or the path of a
``.pub`` file; one, or a list). Without the argument, the environment variable
``PLUGBRIDGE_TRUSTED_KEYS`` may list key files separated by ``os.pathsep``; it is read at
each ``load`` (a reload keeps the keys its ``load`` read). An explicit argument takes the
variable's place, even an empty list (which trusts no key: signatures are then only
checked against the bundle's own key, as when neither is given).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .._errors import BundleError, ConfigError
from .minisign import PublicKey, SignatureError

TRUSTED_KEYS_ENV = "PLUGBRIDGE_TRUSTED_KEYS"

KeySpec = str | os.PathLike[str]


def trusted_keys_for_load(argument: object) -> tuple[PublicKey, ...] | None:
    """The trusted keys for one ``load``; None when there are none (no argument, no
    environment variable, or an empty list)."""
    if argument is None:
        listed = os.environ.get(TRUSTED_KEYS_ENV, "")
        entries = [entry for entry in listed.split(os.pathsep) if entry.strip()]
        keys = tuple(_parse(entry, f"{TRUSTED_KEYS_ENV} entry {entry!r}") for entry in entries)
    else:
        keys = tuple(_parse(spec, f"trusted key {os.fspath(spec)!r}") for spec in _specs(argument))
    return keys or None


def _specs(argument: object) -> list[KeySpec]:
    if isinstance(argument, str | os.PathLike):
        return [argument]
    if isinstance(argument, Sequence) and not isinstance(argument, bytes | bytearray):
        specs = list(argument)
        for spec in specs:
            if not isinstance(spec, str | os.PathLike):
                raise ConfigError(
                    "trusted_keys must list minisign public keys (base64 'RW…' or .pub file "
                    f"paths), not {type(spec).__name__}"
                )
        return specs
    raise ConfigError(
        "trusted_keys must be a minisign public key (base64 'RW…' or a .pub file path) or "
        f"a list of them, not {type(argument).__name__}"
    )


def _parse(spec: KeySpec, label: str) -> PublicKey:
    try:
        return PublicKey.parse(spec)
    except SignatureError as exc:
        raise BundleError(f"cannot use {label} as a trusted key: {exc}") from None


def describe_keys(keys: Sequence[PublicKey]) -> str:
    """``7A6DA741B898E691, 0123…`` — key ids as minisign prints them."""
    return ", ".join(key.key_id_hex for key in keys)
