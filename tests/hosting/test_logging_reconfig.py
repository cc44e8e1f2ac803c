"""Plugin logging survives whatever the host does to its own logging, and plugbridge changes
nothing the host configured.

Frameworks reconfigure logging after start-up: Django and uvicorn call
``logging.config.dictConfig``, others ``fileConfig``, ``basicConfig(force=True)`` or swap
the root handlers by hand. ``dictConfig`` and ``fileConfig`` close every handler logging
knows of and disable every logger they do not configure. Each test here loads plugins,
makes them log, reconfigures the host's logging, makes them log again, and checks that
every record before and after reached its own instance's callback (or, without one, the
handler the host configured) and nothing else, and that the host's configuration is
exactly what the host made it.

Every scenario runs for each kind of plugin: a Python plugin in-process and in a worker
process, and the compiled C plugin in-process and in a worker process.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import LogLevel
from plugbridge._levels import to_stdlib
from plugbridge._steadylog import is_steady

from ..conftest import LogCapture
from ..native.build import build_hello_c

RECON = """
    import logging
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class Recon(Plugin):
        name = "recon"

        @handler("log")
        def log_all(self, ctx, req):
            who = ctx.data["who"]
            log.info("%s module %s", who, req)
            ctx.logger.info("%s ctx %s", who, req)
            # A logger of the plugin's made after the load (on the first call).
            logging.getLogger(__name__ + ".late").warning("%s late %s", who, req)

        @handler("log_as")
        def log_as(self, ctx, req):
            # A logger of the plugin's named by the caller: made on its first use.
            logging.getLogger(f"{__name__}.{req}").info("%s as %s", ctx.data["who"], req)
"""

KINDS = ["inprocess", "process", "native-inprocess", "native-process"]

Record = tuple[LogLevel, str, str]
Seen = tuple[str, int, str, str | None, bool]
"""What a host handler got: logger name, level, message, ``plugin_target`` (the extra a
record of a handle without a callback carries), made by the host's record factory."""


@dataclasses.dataclass
class Kind:
    """One kind of plugin: how to load it, make it log, and what it then logs."""

    source: Path
    isolation: str
    native: bool

    def load(self, who: str, callback: LogCapture | None) -> plugbridge.PluginHandle:
        return plugbridge.load(
            self.source,
            config={"data": {"who": who}},
            log_callback=callback,
            isolation=self.isolation,
        )

    def make_log(self, handle: plugbridge.PluginHandle, who: str, phase: str) -> None:
        if self.native:
            handle.call("user.create", {"username": f"{who}-{phase}", "email": f"{who}@host"})
        else:
            handle.call("log", phase)

    def records(self, who: str, phase: str) -> list[Record]:
        if self.native:
            return [(LogLevel.INFO, "hello_c", f"Creating user: {who}-{phase} ({who}@host)")]
        return [
            (LogLevel.INFO, "recon_plugin", f"{who} module {phase}"),
            (LogLevel.INFO, "recon", f"{who} ctx {phase}"),
            (LogLevel.WARN, "recon_plugin.late", f"{who} late {phase}"),
        ]

    def lifecycle(self, message: str) -> bool:
        """A record the plugin logs as it starts or stops, not from ``make_log``."""
        return self.native and message.startswith("HelloPlugin (C) ")

    @property
    def fallback(self) -> str:
        """The stdlib logger records of a handle without a callback go to."""
        return "plugbridge.plugin.hello_c" if self.native else "plugbridge.plugin.recon"


@pytest.fixture(scope="module")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_reconfig"))


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, write_plugin: Callable[..., Path], hello_c: Path) -> Kind:
    name = str(request.param)
    native = name.startswith("native-")
    source = hello_c if native else write_plugin(RECON, name="recon_plugin.py")
    return Kind(source, name.removeprefix("native-"), native)


# -- the host's logging ------------------------------------------------------------------


class HostHandler(logging.Handler):
    """A handler the host configures: keeps what it was handed (see ``Seen``)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.seen: list[Seen] = []

    def emit(self, record: logging.LogRecord) -> None:
        target = getattr(record, "plugin_target", None)
        marked = getattr(record, "host_mark", False)
        self.seen.append((record.name, record.levelno, record.getMessage(), target, marked))


@dataclasses.dataclass
class Host:
    """What the host set up before loading plugins: a root handler, a record factory, an
    application logger it configured and a library logger it left alone."""

    handler: HostHandler
    factory: Callable[..., logging.LogRecord]
    app: logging.Logger
    library: logging.Logger

    def log(self, phase: str) -> None:
        self.app.info("host %s", phase)
        self.library.warning("library %s", phase)


@pytest.fixture(autouse=True)
def host() -> Iterator[Host]:
    """Set up the host's logging; put everything back as it was afterwards."""
    root = logging.getLogger()
    manager = logging.Logger.manager
    saved_root = (root.handlers[:], root.level, root.filters[:])
    saved_loggers = {
        name: (logger, logger.level, logger.handlers[:], logger.propagate, logger.disabled)
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    saved_factory = logging.getLogRecordFactory()
    saved_handler_list = logging._handlerList[:]  # type: ignore[attr-defined]
    saved_named = dict(logging._handlers)  # type: ignore[attr-defined]

    previous = saved_factory

    def host_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.host_mark = True
        return record

    handler = HostHandler()
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.setLogRecordFactory(host_factory)
    app = logging.getLogger("hostapp")
    app.setLevel(logging.INFO)
    library = logging.getLogger("hostlib")
    yield Host(handler, host_factory, app, library)

    for created in root.handlers:
        if created not in saved_root[0]:
            created.close()
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    root.filters[:] = saved_root[2]
    for name, logger in list(manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if name in saved_loggers:
            _, level, handlers, propagate, disabled = saved_loggers[name]
        else:
            level, handlers, propagate, disabled = logging.NOTSET, [], True, False
        for created in logger.handlers:
            if created not in handlers:
                created.close()
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled
    logging.setLogRecordFactory(saved_factory)
    logging._handlerList[:] = saved_handler_list  # type: ignore[attr-defined]
    logging._handlers.clear()  # type: ignore[attr-defined]
    logging._handlers.update(saved_named)  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class HostConfig:
    """The parts of the host's logging configuration plugbridge must leave alone."""

    root_handlers: tuple[logging.Handler, ...]
    root_level: int
    loggers: tuple[tuple[str, type, int, tuple[logging.Handler, ...], bool, bool], ...]
    logger_class: tuple[type | None, type]

    @classmethod
    def now(cls) -> HostConfig:
        root = logging.getLogger()
        loggers = tuple(
            (name, type(lg), lg.level, tuple(lg.handlers), lg.propagate, lg.disabled)
            for name in ("hostapp", "hostlib")
            for lg in [logging.getLogger(name)]
        )
        logger_class = (logging.Logger.manager.loggerClass, logging.getLoggerClass())
        return cls(tuple(root.handlers), root.level, loggers, logger_class)


# -- the reconfigurations ----------------------------------------------------------------


def dict_config(disable_existing: bool) -> Callable[[Path], HostHandler]:
    def reconfigure(tmp_path: Path) -> HostHandler:
        fresh = HostHandler()
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": disable_existing,
                "handlers": {"host": {"()": lambda: fresh}},
                "loggers": {"hostapp": {"level": "INFO"}},
                "root": {"level": "INFO", "handlers": ["host"]},
            }
        )
        return fresh

    return reconfigure


def file_config(tmp_path: Path) -> HostHandler:
    ini = tmp_path / "logging.ini"
    ini.write_text(
        textwrap.dedent(
            """
            [loggers]
            keys=root,hostapp

            [handlers]
            keys=host

            [formatters]
            keys=

            [logger_root]
            level=INFO
            handlers=host

            [logger_hostapp]
            level=INFO
            handlers=
            qualname=hostapp

            [handler_host]
            class={HostHandler.__module__}.HostHandler
            args=()
            """
        ).format(HostHandler=HostHandler)
    )
    logging.config.fileConfig(ini)
    (fresh,) = logging.getLogger().handlers
    assert isinstance(fresh, HostHandler)
    return fresh


def basic_config_force(tmp_path: Path) -> HostHandler:
    fresh = HostHandler()
    logging.basicConfig(level=logging.INFO, handlers=[fresh], force=True)
    return fresh


def swap_root_handlers(tmp_path: Path) -> HostHandler:
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    fresh = HostHandler()
    root.addHandler(fresh)
    return fresh


RECONFIGURATIONS = {
    "dictConfig-disable-existing": dict_config(True),
    "dictConfig-keep-existing": dict_config(False),
    "fileConfig": file_config,
    "basicConfig-force": basic_config_force,
    "swap-root-handlers": swap_root_handlers,
}


@pytest.fixture(params=list(RECONFIGURATIONS))
def reconfigure(request: pytest.FixtureRequest) -> Callable[[Path], HostHandler]:
    return RECONFIGURATIONS[str(request.param)]


# -- the tests ---------------------------------------------------------------------------


def test_records_reach_their_own_callback_across_a_reconfiguration(
    kind: Kind, reconfigure: Callable[[Path], HostHandler], host: Host, tmp_path: Path
) -> None:
    a_log, b_log = LogCapture(), LogCapture()
    a = kind.load("A", a_log)
    b = kind.load("B", b_log)
    try:
        a_start, b_start = list(a_log.records), list(b_log.records)
        host.log("before")
        kind.make_log(a, "A", "before")
        kind.make_log(b, "B", "before")
        assert a_log.records == a_start + kind.records("A", "before")
        assert b_log.records == b_start + kind.records("B", "before")

        fresh = reconfigure(tmp_path)
        configured = HostConfig.now()

        host.log("after")
        kind.make_log(a, "A", "after")
        kind.make_log(b, "B", "after")
        assert a_log.records == a_start + kind.records("A", "before") + kind.records("A", "after")
        assert b_log.records == b_start + kind.records("B", "before") + kind.records("B", "after")
        assert HostConfig.now() == configured
    finally:
        a.shutdown()
        b.shutdown()
    assert HostConfig.now() == configured
    assert logging.getLogRecordFactory() is host.factory

    # Each callback got its own instance's records only (its start and stop included).
    assert all(not m.startswith("B") for m in a_log.messages())
    assert all(not m.startswith("A") for m in b_log.messages())
    # The host's handlers got the host's records, made by the host's factory, and not
    # one record of a plugin.
    assert host.handler.seen == [
        ("hostapp", logging.INFO, "host before", None, True),
        ("hostlib", logging.WARNING, "library before", None, True),
    ]
    library_after = (
        [] if host.library.disabled else [("hostlib", logging.WARNING, "library after", None, True)]
    )
    assert fresh.seen == [("hostapp", logging.INFO, "host after", None, True), *library_after]


@pytest.mark.parametrize("configured_at", ["root", "plugbridge.plugin"])
def test_records_without_a_callback_reach_the_handler_the_host_configured(
    kind: Kind, configured_at: str, host: Host
) -> None:
    a = kind.load("A", None)
    b = kind.load("B", None)
    try:
        kind.make_log(a, "A", "before")
        kind.make_log(b, "B", "before")

        fresh = HostHandler()
        if configured_at == "root":  # disable_existing_loggers is True by default
            loggers: dict[str, Any] = {}
            root: dict[str, Any] = {"level": "INFO", "handlers": ["host"]}
        else:
            loggers = {"plugbridge.plugin": {"handlers": ["host"], "propagate": False}}
            root = {}
        logging.config.dictConfig(
            {
                "version": 1,
                "handlers": {"host": {"()": lambda: fresh}},
                "loggers": loggers,
                "root": root,
            }
        )
        configured = HostConfig.now()
        fallback = logging.getLogger(kind.fallback)
        fallback_config = (fallback.level, fallback.handlers[:], fallback.propagate)

        kind.make_log(a, "A", "after")
        kind.make_log(b, "B", "after")
        assert HostConfig.now() == configured
        assert (fallback.level, fallback.handlers, fallback.propagate) == fallback_config
    finally:
        a.shutdown()
        b.shutdown()
    assert HostConfig.now() == configured
    assert logging.getLogRecordFactory() is host.factory

    def as_seen(records: list[Record]) -> list[Seen]:
        return [
            (kind.fallback, to_stdlib(level), message, target, True)
            for level, target, message in records
        ]

    def plugin_records(handler: HostHandler) -> list[Seen]:
        return [s for s in handler.seen if not kind.lifecycle(s[2])]

    assert plugin_records(host.handler) == as_seen(
        kind.records("A", "before") + kind.records("B", "before")
    )
    assert plugin_records(fresh) == as_seen(kind.records("A", "after") + kind.records("B", "after"))


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_loggers_made_between_reconfigurations_and_a_reload_survive_the_next_one(
    isolation: str, write_plugin: Callable[..., Path], host: Host, tmp_path: Path
) -> None:
    # After the first reconfiguration logging no longer knows the instance's handler, so
    # only the loggers themselves can keep a logger made later alive through the next.
    capture = LogCapture()
    source = write_plugin(RECON, name="recon_plugin.py")
    expected: list[Record] = []
    with plugbridge.load(
        source, config={"data": {"who": "A"}}, log_callback=capture, isolation=isolation
    ) as plugin:

        def log_as(*names: str) -> None:
            for name in names:
                plugin.call("log_as", name)
                expected.append((LogLevel.INFO, f"recon_plugin.{name}", f"A as {name}"))

        log_as("one")
        dict_config(True)(tmp_path)
        log_as("one", "two")
        file_config(tmp_path)
        log_as("one", "two", "three")
        plugin.reload()
        log_as("four")
        dict_config(True)(tmp_path)
        log_as("four", "five")
        assert capture.records == expected


def test_a_plugins_loggers_are_steady_from_their_creation(
    write_plugin: Callable[..., Path], host: Host
) -> None:
    # Steady from the start, not only once a reconfiguration made them so: a logger whose
    # class is changed later keeps working, but every record then costs more.
    source = write_plugin(RECON, name="recon_plugin.py")
    with plugbridge.load(source, config={"data": {"who": "A"}}) as plugin:
        plugin.call("log", "x")
        loggers = {
            name.partition(".")[2]: logger
            for name, logger in logging.Logger.manager.loggerDict.items()
            if name.startswith("_plugbridge_") and isinstance(logger, logging.Logger)
        }
        assert {name: is_steady(logger) for name, logger in loggers.items()} == {
            "": True,  # the namespace's root
            "recon_plugin": True,  # getLogger(__name__)
            "recon": True,  # ctx.logger
            "recon_plugin.late": False,  # made by the plugin after its import: plain so far
        }
        assert is_steady(logging.getLogger("plugbridge.plugin.recon"))
