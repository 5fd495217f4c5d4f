"""fedgate gateway: settings, database wiring, keys and the CLI (the HTTP API comes later)."""

from ._errors import GatewayError
from .settings import Settings

__all__ = ["GatewayError", "Settings"]
