"""fedgate gateway: settings, database wiring, keys and the CLI (the HTTP API comes later)."""

from .settings import Settings

__all__ = ["Settings"]
