"""A small consumer of a rustbridge plugin, written for rustbridge's Python host.

Usage: python consumer_rustbridge.py path/to/libhello_c.so (built by examples/hello-c's Makefile)

It loads the plugin with a config and a log callback, calls it with JSON and with the
binary transport, raises its log level at runtime and shows how a failed call reads.
``consumer_plugbridge.py`` is this file with one line changed: the import.
"""

import json
import struct
import sys

from plugbridge.rustbridge import LogLevel, NativePluginLoader, PluginConfig, PluginException

MSG_FILL = 11  # hello-c's binary message: (size, seed) -> `size` bytes counting up from seed


def on_log(level: LogLevel, target: str, message: str) -> None:
    print(f"  log [{level.name}] {target}: {message}")


def main(library_path: str) -> None:
    config = PluginConfig.defaults().log_level(LogLevel.INFO).max_concurrent_ops(100)
    with NativePluginLoader.load_with_config(library_path, config, on_log) as plugin:
        print("state:", plugin.state.name)

        # call() takes and returns JSON text: compare parsed values, not the text.
        reply = plugin.call("echo", json.dumps({"message": "Hello, rustbridge!"}))
        print("echo:", json.loads(reply))
        print("greet:", plugin.call_typed("greet", {"name": "Ada"}))
        print("math.add:", plugin.call_typed("math.add", {"a": 40, "b": 2}))

        if plugin.has_binary_transport:
            data = plugin.call_raw_bytes(MSG_FILL, struct.pack("<II", 8, ord("a")))
            print("fill (binary):", data)

        plugin.set_log_level(LogLevel.DEBUG)  # the handlers' debug records now come through
        print("math.add:", plugin.call_typed("math.add", {"a": 2, "b": 3}))

        try:
            plugin.call_typed("math.add", {"a": 1})  # no "b": the plugin refuses it
        except PluginException as exc:
            print(f"bad request: error_code={exc.error_code}; str: {exc}")

        plugin.set_log_level(LogLevel.INFO)  # back to INFO: shutdown logs at INFO
    print("state after the with block:", plugin.state.name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} path/to/libhello_c.so")
    main(sys.argv[1])
