"""A call and its answer as they cross Ray: one msgpack ``bytes`` value each way.

Ray serializes every argument of an actor task and pickles a returned tuple; a call sent as
four arguments with a five-part answer cost ~20 µs more per round trip than a bare actor
method taking and returning bytes (the baseline of ``benchmarks/bench_ray.py``). Packed
by msgspec into one ``bytes`` each way, Ray has a single buffer to move and nothing to
pickle.
"""

from __future__ import annotations

import msgspec


class CallRequest(msgspec.Struct, array_like=True, frozen=True):
    """One call: its id (for ``cancel``), its type tag or raw message id, the request bytes
    (JSON for a tag, the raw payload for an id) and its timeout."""

    call_id: int
    key: str | int
    payload: bytes
    timeout: float | None


class CallAnswer(msgspec.Struct, array_like=True, frozen=True):
    """A call's outcome: ``ok`` with the response bytes in ``data``, else the error code
    in ``code`` and its message; with the records the instance made so far (the host
    delivers those before it returns) and its own count of refused calls (native)."""

    ok: bool
    data: bytes
    code: int
    message: str
    produced: int
    rejected: int


pack = msgspec.msgpack.Encoder().encode
"""``CallRequest`` or ``CallAnswer`` → bytes."""
unpack_request = msgspec.msgpack.Decoder(CallRequest).decode
unpack_answer = msgspec.msgpack.Decoder(CallAnswer).decode
