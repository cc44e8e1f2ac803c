"""This machine's rustbridge platform key (``linux-x86_64``, ``darwin-aarch64``, …).

A bundle holds one library per platform key; the key is the operating system and the
architecture the *interpreter* runs as (a 32-bit Python on a 64-bit machine cannot map a
64-bit library, so it has no key).
"""

from __future__ import annotations

import functools
import platform
import struct
import sys

PLATFORMS = (
    "linux-x86_64",
    "linux-aarch64",
    "darwin-x86_64",
    "darwin-aarch64",
    "windows-x86_64",
    "windows-aarch64",
)
"""Every platform key rustbridge defines."""

_SYSTEMS = {"linux": "linux", "darwin": "darwin", "win32": "windows", "cygwin": "windows"}
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def platform_key(system: str, machine: str, pointer_bits: int = 64) -> str | None:
    """The key for ``sys.platform``-style ``system`` and ``platform.machine()``-style
    ``machine``; None when rustbridge has none for it."""
    os_name = _SYSTEMS.get(system) or _SYSTEMS.get(system.rstrip("0123456789"))
    arch = _MACHINES.get(machine.lower())
    if os_name is None or arch is None or pointer_bits != 64:
        return None
    return f"{os_name}-{arch}"


@functools.cache
def current_platform() -> str | None:
    """This interpreter's platform key, or None."""
    return platform_key(sys.platform, platform.machine(), struct.calcsize("P") * 8)


def describe_this_machine() -> str:
    """``linux-x86_64``, or what this machine is when it has no key."""
    return current_platform() or f"{sys.platform}/{platform.machine() or 'unknown'}"
