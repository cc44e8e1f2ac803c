"""The gateway: a ``PluginHost``'s plugins over HTTP, with metrics and an admin page.

``create_app(host, token=None)`` returns the ASGI application; ``plugbridge serve
CONFIG.toml`` runs it under uvicorn (see ``serve``). Imported only when used: its
dependencies (starlette, uvicorn, prometheus-client) are not needed to load plugins.
"""

from .app import create_app

__all__ = ["create_app"]
