"""A host for the hello plugin: load, call, log levels, two instances side by side, reload.

Run it with ``python examples/hello/host.py`` (after ``pip install -e .``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import plugbridge
from plugbridge import LogLevel

HERE = Path(__file__).resolve().parent


def printer(prefix: str) -> plugbridge.LogCallback:
    def callback(level: LogLevel, target: str, message: str) -> None:
        print(f"    {prefix} [{level.name:<5}] {target}: {message}")

    return callback


def main() -> None:
    print("1. Load the hello plugin and call it")
    with plugbridge.load(HERE / "hello_plugin.py", log_callback=printer("hello")) as plugin:
        meta = plugin.metadata
        print(f"   loaded {meta.name} {meta.version}; handles {', '.join(meta.type_tags)}")
        print("   echo      ->", plugin.call("echo", {"message": "Hello, plugbridge!"}))
        print("   greet     ->", plugin.call_json("greet", '{"name": "Ada"}'))
        print("   math.add  ->", plugin.call("math.add", {"a": 40, "b": 2}))
        print(
            "   user.create ->",
            plugin.call("user.create", {"username": "ada", "email": "ada@example.com"}),
        )

        async def concurrently() -> list[object]:
            return await asyncio.gather(
                *(plugin.acall("test.sleep", {"duration_ms": 50}) for _ in range(100))
            )

        replies = asyncio.run(concurrently())
        print(f"   100 concurrent acall(test.sleep 50ms) -> {len(replies)} replies")
        try:
            plugin.call("echo", {"message": 42})
        except plugbridge.SerializationError as exc:
            print(f"   a bad request is a clear error: code {int(exc.code)}: {exc.message}")

        print("\n2. Log levels change at runtime, for the next record")
        plugin.call("math.add", {"a": 1, "b": 1})  # logs at DEBUG: filtered at INFO
        plugin.set_log_level("debug")
        plugin.call("math.add", {"a": 2, "b": 2})  # now delivered
        plugin.set_log_level(LogLevel.WARN)

    print("\n3. Two instances of the same plugin, each with its own level and callback")
    with (
        plugbridge.load(
            HERE / "hello_plugin.py", log_callback=printer("first "), config={"log_level": "debug"}
        ) as first,
        plugbridge.load(
            HERE / "hello_plugin.py", log_callback=printer("second"), config={"log_level": "info"}
        ) as second,
    ):
        first.call("echo", {"message": "to the first"})
        second.call("echo", {"message": "to the second (DEBUG filtered here)"})
        print(
            "   user ids are per instance:",
            first.call("user.create", {"username": "a", "email": "a@x"})["user_id"],
            second.call("user.create", {"username": "b", "email": "b@x"})["user_id"],
        )

    print("\n4. Reload picks up the code as it is on disk now; the handle stays valid")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "hello_plugin.py"
        shutil.copy(HERE / "hello_plugin.py", copy)
        with plugbridge.load(copy) as plugin:
            print("   before:", plugin.call("greet", {"name": "Ada"})["greeting"])
            copy.write_text(copy.read_text().replace("Welcome to plugbridge.", "Reloaded!"))
            plugin.reload()
            print("   after: ", plugin.call("greet", {"name": "Ada"})["greeting"])
        print(f"   state after the with block: {plugin.state.name}")


if __name__ == "__main__":
    main()
