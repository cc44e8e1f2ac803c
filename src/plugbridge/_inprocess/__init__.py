"""The in-process transport: a Python plugin instance in the host's own process.

- ``transport``: the instance (lifecycle, the call paths, bounded shutdown).
- ``namespace``: the plugin's private module namespace, compiled fresh from source.
- ``routes``: type tag → handler, with msgspec validation in and out.
- ``logrouting``: the instance's loggers and the attribution of other libraries' records.
- ``loopthread``: the instance's event loop on its own thread.
"""
