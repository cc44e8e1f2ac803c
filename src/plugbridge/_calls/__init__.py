"""Call machinery shared by every transport: admission, completions, offloading, wake-ups.

- ``limiter``: the handle's concurrency slots (refuse at once, never queue).
- ``gate``: who is inside one instance, and draining it.
- ``completion``: one-shot result slots raced by the work, a timeout and shutdown.
- ``offload``: sync work run off the caller's thread, cancellable at shutdown.
- ``inbox``: callbacks posted to an event loop from other threads, one wake-up per batch.
- ``threadpool``: a daemon pool whose hung threads can be abandoned.
- ``shutdown``: the stop of an instance hosted in this process.
- ``sessioned``: the transports whose instance lives elsewhere (a worker, a Ray actor): the
  call forms, restarts and one-shot shutdown over a replaceable session.
"""
