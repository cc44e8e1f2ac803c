"""Every native test leaves this process as it found it: no private copy still mapped.

A copy can legitimately stay mapped after ``shutdown`` returns, while a thread is still
inside the library (a call that timed out, a ``plugin_shutdown`` that was abandoned); it
is unmapped when that thread comes out. Waiting for that here, on the event the library
module signals, means no test starts while an earlier one's copy is still going away:
a test that counts the mappings (``test_100_reload_cycles_leak_nothing``) would see it
vanish mid-test. A copy that never goes away is a leak, and fails the test that left it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugbridge._native.library import wait_all_unmapped

from .build import private_copies_mapped

UNMAP_WITHIN = 30.0
"""Seconds the hooks of the test library may keep running after a test (at most 1.5 s)."""


@pytest.fixture(autouse=True)
def every_copy_unmapped() -> Iterator[None]:
    yield
    assert wait_all_unmapped(UNMAP_WITHIN), "a private library copy stayed mapped after the test"
    assert private_copies_mapped() == 0
