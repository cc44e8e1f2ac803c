"""Every native test leaves this process as it found it: no private copy of its own mapped.

A copy can legitimately stay mapped after ``shutdown`` returns, while a thread is still
inside the library (a call that timed out, a ``plugin_shutdown`` that was abandoned); it
is unmapped when that thread comes out. Waiting for that here, on the condition the
library module signals, means no test starts while an earlier one's copy is still going
away: a test that counts the mappings (``test_100_reload_cycles_leak_nothing``) would see
it vanish mid-test. A copy that never goes away is a leak, and fails the test that left it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugbridge._native.library import mapped_count, wait_for_unmapping

from .build import private_copies_mapped

UNMAP_WITHIN = 30.0
"""Seconds a test's library copies may take to go (the test library's hooks take 1.5 s)."""


@pytest.fixture(autouse=True)
def every_copy_unmapped() -> Iterator[None]:
    before, mapped = mapped_count(), private_copies_mapped()
    yield
    assert wait_for_unmapping(before, UNMAP_WITHIN), "a private library copy stayed mapped"
    assert private_copies_mapped() <= mapped
