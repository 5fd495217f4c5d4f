"""What a log verification reports: the first failure, or what was recomputed."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AuditFailure", "AuditReport"]


@dataclass(frozen=True, slots=True)
class AuditFailure:
    """The first thing that does not hold: a reason ``code``, where, and why in words."""

    code: str
    index: int | None
    message: str
    checkpoint_size: int | None = None


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Outcome of a full replay: what was recomputed and the first failure, if any."""

    size: int
    root: bytes
    checkpoints_verified: int
    failure: AuditFailure | None = None
    origin: str | None = None
    checkpoint_sizes: tuple[int, ...] = field(default_factory=tuple)
    cosigners: tuple[str, ...] = field(default_factory=tuple)
    """Witness vkeys with a valid cosignature on the newest checkpoint (when asked)."""
    book_accounts: int | None = None
    book_transfers: int | None = None

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return self.failure is None

    @property
    def first_bad_index(self) -> int | None:
        """The entry index of the first failure (None when all is well)."""
        return None if self.failure is None else self.failure.index
