"""fedgate settings: read once at the edge (CLI, app start-up) and passed inward.

Every setting can be given as an environment variable with the ``FEDGATE_``
prefix, e.g. ``FEDGATE_DATABASE_URL=postgresql+psycopg://…``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consent import ReceiptNotice

__all__ = ["Settings", "DEFAULT_DATA_DIR", "DEFAULT_LOG_ORIGIN"]

DEFAULT_DATA_DIR = Path(".fedgate")
DEFAULT_LOG_ORIGIN = "fedgate.example/ledger"
_NOTICE = ReceiptNotice()  # consent's example notice supplies the defaults


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
    receipt_jurisdiction, receipt_language, receipt_policy_url, receipt_controller_contact,
    receipt_collection_method : str
        The notice every consent receipt states (Kantara fields); the defaults name
        ``fedgate.example`` and must be replaced in a deployment.
    credit_policy_file : Path | None, default ``<data_dir>/credit-policy.toml``
        The credit policy (lines, pricing, monitoring); fedgate's default policy when absent.
    """

    model_config = SettingsConfigDict(env_prefix="FEDGATE_", extra="ignore")

    data_dir: Path = Field(default=DEFAULT_DATA_DIR)
    database_url: str | None = None
    log_origin: str = DEFAULT_LOG_ORIGIN
    key_dir: Path | None = None
    receipt_jurisdiction: str = _NOTICE.jurisdiction
    receipt_language: str = _NOTICE.language
    receipt_policy_url: str = _NOTICE.policy_url
    receipt_controller_contact: str = _NOTICE.controller_contact
    receipt_collection_method: str = _NOTICE.collection_method
    credit_policy_file: Path | None = None

    @property
    def receipt_notice(self) -> ReceiptNotice:
        """The notice consent receipts state, from the ``receipt_*`` settings."""
        return ReceiptNotice(
            jurisdiction=self.receipt_jurisdiction,
            language=self.receipt_language,
            policy_url=self.receipt_policy_url,
            controller_contact=self.receipt_controller_contact,
            collection_method=self.receipt_collection_method,
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fedgate.db').resolve()}"

    @property
    def resolved_credit_policy_file(self) -> Path:
        """The credit policy file, defaulting to ``<data_dir>/credit-policy.toml``."""
        if self.credit_policy_file is not None:
            return self.credit_policy_file
        return self.data_dir / "credit-policy.toml"

    @property
    def resolved_key_dir(self) -> Path:
        """The key directory, defaulting to ``<data_dir>/keys``."""
        return self.key_dir if self.key_dir is not None else self.data_dir / "keys"
