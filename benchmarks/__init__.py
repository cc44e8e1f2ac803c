"""plugbridge benchmarks.

``python -m benchmarks`` prints the table and writes docs/PERFORMANCE.md.
"""
