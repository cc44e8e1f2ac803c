"""The host-worker messages: tagged msgspec ``Struct``s, one frame each (``channel.py``).

Each message is encoded as a msgpack array whose first element is its tag. The worker
speaks first (``Hello``), the host sends ``Start``; both carry ``PROTOCOL_VERSION`` and
each side refuses a peer that speaks another one.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._sources import BundledLibrary
from .._transport import HandlerSchema

PROTOCOL_VERSION = 4


class _Message(msgspec.Struct, array_like=True):
    pass


# -- host -> worker --------------------------------------------------------------------


class PythonPlugin(_Message, tag="py"):
    search_dir: str
    module: str
    class_name: str | None


class NativePlugin(_Message, tag="native"):
    path: str
    bundle: BundledLibrary | None = None
    """A verified bundle's library (``path`` is the bundle): the worker loads these bytes."""


class Start(_Message, tag=1):
    """Build the plugin instance; answered by ``Ready`` or ``StartFailed``. The start has
    no deadline in the worker: the host kills a worker that misses its own."""

    protocol: int
    source: PythonPlugin | NativePlugin
    config: dict[str, Any]
    sys_path: list[str]


class Call(_Message, tag=2):
    """Run ``type_tag`` with a JSON ``payload``; answered by ``Result`` or ``Failure``.

    ``cancellable``: the caller may send ``Cancel`` (an asyncio caller); the worker then
    runs it as a task on its own loop so that it can be cancelled.
    """

    id: int
    type_tag: str
    payload: bytes
    timeout: float | None
    cancellable: bool


class RawCall(_Message, tag=6):
    """Run the raw handler of ``message_id`` (the binary transport) with ``payload``; the
    answer is a ``Result`` whose payload is the response bytes, or a ``Failure``, exactly
    as for ``Call`` (``cancellable`` too)."""

    id: int
    message_id: int
    payload: bytes
    timeout: float | None
    cancellable: bool

    @property
    def type_tag(self) -> str:
        """How error messages name the call (a ``Call`` names its type tag)."""
        return f"raw message {self.message_id}"


class Cancel(_Message, tag=5):
    """The caller of call ``id`` gave up: cancel its work (its answer is still sent)."""

    id: int


class SetLevel(_Message, tag=3):
    """Applies before the worker reads the next frame."""

    level: int


class Stop(_Message, tag=4):
    """Shut the instance down within ``timeout``; answered by ``Stopped``, then exit."""

    timeout: float


HostMessage = Start | Call | RawCall | SetLevel | Stop | Cancel


# -- worker -> host --------------------------------------------------------------------


class Hello(_Message, tag=10):
    protocol: int
    pid: int


class Named(_Message, tag=20):
    """The instance being started has this name (sent before its start hook runs)."""

    name: str


class Ready(_Message, tag=11):
    name: str
    version: str
    type_tags: list[str]
    schemas: list[HandlerSchema]
    """The handlers' JSON Schemas, made by the instance as it started (``_schemas``)."""
    binary_transport: bool


class StartFailed(_Message, tag=12):
    code: int
    message: str


class Result(_Message, tag=13):
    """``done``: the call's work has ended (else a ``Released`` follows)."""

    id: int
    payload: bytes
    done: bool


class Failure(_Message, tag=14):
    id: int
    code: int
    message: str
    done: bool


class Released(_Message, tag=15):
    """The work of call ``id``, reported earlier, has now really ended."""

    id: int


class Log(_Message, tag=16):
    level: int
    target: str
    message: str


class Stats(_Message, tag=17):
    rejected: int


EXIT_STOP_FAILED = 4
"""Exit status of a worker whose instance failed to stop (its ``Stopped`` frame says why);
a worker that stopped cleanly exits with 0. The host relies on it when it could not read
``Stopped`` in time (its reader was held by a slow log callback)."""


class Stopped(_Message, tag=18):
    """``error``: why shutdown failed, or None. ``unanswered``: the calls read before
    ``Stop`` whose answers were not sent (they may have run); any other call the host
    still waits for was never run (the worker stopped before reading it, or refused it)."""

    error: str | None
    unanswered: list[int]


class Fatal(_Message, tag=19):
    """The worker is about to exit because of ``message`` (e.g. a protocol error)."""

    message: str


WorkerMessage = (
    Hello
    | Named
    | Ready
    | StartFailed
    | Result
    | Failure
    | Released
    | Log
    | Stats
    | Stopped
    | Fatal
)
