"""plugbridge: load, call, reload and isolate plugins without the host ever crashing."""

from ._config import PluginConfig
from ._entrypoints import entry_points
from ._errors import (
    BundleError,
    Cancelled,
    ConfigError,
    ErrorCode,
    FfiError,
    HandlerError,
    InitializationFailed,
    InternalError,
    InvalidState,
    PluginCrashed,
    PluginError,
    PluginRuntimeError,
    SerializationError,
    ShutdownFailed,
    Timeout,
    TooManyRequests,
    UnknownMessageType,
)
from ._handle import PluginHandle
from ._host import PluginHost
from ._host_status import PluginStatus
from ._levels import LogLevel
from ._lifecycle import LifecycleState
from ._load import load
from ._logsink import LogCallback
from ._plugin import Plugin, PluginContext, handler, raw_handler
from ._stats import PluginStats
from ._transport import PluginMetadata

__version__ = "0.8.2"

__all__ = [
    "BundleError",
    "Cancelled",
    "ConfigError",
    "ErrorCode",
    "FfiError",
    "HandlerError",
    "InitializationFailed",
    "InternalError",
    "InvalidState",
    "LifecycleState",
    "LogCallback",
    "LogLevel",
    "Plugin",
    "PluginConfig",
    "PluginContext",
    "PluginCrashed",
    "PluginError",
    "PluginHandle",
    "PluginHost",
    "PluginMetadata",
    "PluginRuntimeError",
    "PluginStats",
    "PluginStatus",
    "SerializationError",
    "ShutdownFailed",
    "Timeout",
    "TooManyRequests",
    "UnknownMessageType",
    "__version__",
    "entry_points",
    "handler",
    "load",
    "raw_handler",
]
