"""exec-runtime: run processes for a remote client, with Trio structured concurrency."""

from ._config import ServerConfig
from ._server import serve

__all__ = ["ServerConfig", "serve"]
