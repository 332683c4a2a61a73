"""The web layer: webhook intake, health, metrics and status (Starlette)."""

from provisioner.web.app import create_app, open_pool

__all__ = ["create_app", "open_pool"]
