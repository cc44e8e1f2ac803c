"""Native plugins: shared libraries exporting the rustbridge C ABI (CONTRACT section 5).

``abi`` declares the C functions, ``library`` gives every instance its own private copy
of the library, ``trampoline`` is the log callback C calls, ``envelope`` turns response
buffers into values or errors, and ``transport`` puts them together behind the
``Transport`` interface (with the shared ``CallGate``, which keeps the library mapped while a
thread is inside it).
"""
