"""fedgate settings: read once at the edge (CLI, app start-up) and passed inward.

Every setting can be given as an environment variable with the ``FEDGATE_``
prefix, e.g. ``FEDGATE_DATABASE_URL=postgresql+psycopg://…``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "DEFAULT_DATA_DIR", "DEFAULT_LOG_ORIGIN"]

DEFAULT_DATA_DIR = Path(".fedgate")
DEFAULT_LOG_ORIGIN = "fedgate.example/ledger"


class Settings(BaseSettings):
    """Process-wide configuration.

    Parameters
    ----------
    data_dir : Path, default ``./.fedgate``
        Where the SQLite database, keys and run artefacts live.
    database_url : str | None, default SQLite file ``<data_dir>/fedgate.db``
        SQLAlchemy URL; PostgreSQL in deployment (``postgresql+psycopg://…``).
    log_origin : str, default ``fedgate.example/ledger``
        The checkpoint origin line (C2SP tlog-checkpoint) naming this log.
    key_dir : Path | None, default ``<data_dir>/keys``
        Where Ed25519 keys are generated on first use (mode 0600).
    """

    model_config = SettingsConfigDict(env_prefix="FEDGATE_", extra="ignore")

    data_dir: Path = Field(default=DEFAULT_DATA_DIR)
    database_url: str | None = None
    log_origin: str = DEFAULT_LOG_ORIGIN
    key_dir: Path | None = None

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fedgate.db').resolve()}"

    @property
    def resolved_key_dir(self) -> Path:
        """The key directory, defaulting to ``<data_dir>/keys``."""
        return self.key_dir if self.key_dir is not None else self.data_dir / "keys"
