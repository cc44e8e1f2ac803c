"""A drop-in for rustbridge's Python host (``rustbridge`` 1.0.x on PyPI), on plugbridge.

Code written for rustbridge switches with one line::

    from plugbridge.rustbridge import NativePluginLoader, PluginConfig, LogLevel

Same names, signatures, results and errors (``PluginException`` with rustbridge's codes);
underneath, plugbridge's loading, calls and bundle checks: each plugin has its own copy of
its library (its own log callback and level, even when two come from one file), nothing is
left on disk, and plugbridge's options (``isolation="process"``, call timeouts, trusted
keys) are keyword-only arguments with rustbridge's behaviour when left out.
"""

from ._bundle_loader import BundleLoader
from ._config import PluginConfig
from ._envelope import ResponseEnvelope
from ._exception import PluginException
from ._ffi import FfiBuffer
from ._levels import LifecycleState, LogLevel
from ._loader import NativePluginLoader
from ._manifest import BundleManifest, PlatformInfo, SchemaInfo
from ._minisign import MinisignVerifier
from ._plugin import NativePlugin

__all__ = [
    "BundleLoader",
    "BundleManifest",
    "FfiBuffer",
    "LifecycleState",
    "LogLevel",
    "MinisignVerifier",
    "NativePlugin",
    "NativePluginLoader",
    "PlatformInfo",
    "PluginConfig",
    "PluginException",
    "ResponseEnvelope",
    "SchemaInfo",
]
