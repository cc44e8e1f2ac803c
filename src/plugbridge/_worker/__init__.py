"""Worker-process isolation: a plugin instance in a child process the host owns.

``host.WorkerTransport`` is the host's side (a ``Transport`` like any other); ``child`` is
the worker's entry point; ``protocol`` is the wire format between them.
"""
