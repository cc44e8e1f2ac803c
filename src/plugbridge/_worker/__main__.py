"""``python -m plugbridge._worker``: the worker process entry point."""

from .child import main

if __name__ == "__main__":
    main()
