"""faceprov HTTP server: aiohttp + uvloop, API keys and roles, a batching model worker, OpenAPI,
Prometheus metrics and input limits. `create_app(ServerConfig(...))` builds the application;
`faceprov serve` runs it."""
from .app import ServerConfig, create_app, run

__all__ = ["ServerConfig", "create_app", "run"]
