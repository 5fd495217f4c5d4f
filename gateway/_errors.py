"""The gateway's one exception tree.

* :class:`GatewayError` — root; carries a machine-readable ``code`` that the CLI
  prints and exits non-zero with.

  * :class:`~gateway.jobs.JobSetupError` — a job cannot be assembled around a
    world or model directory (``BAD_WORLD``, ``BAD_MODEL``); nothing ran.
  * :class:`~gateway.demo.DemoError` — the demo could not finish or one of its
    checks failed (``BAD_ARGUMENT``, ``DEMO_EXISTS``, ``JOB_FAILED``,
    ``REVOKED_STILL_USED``, ``AUDIT_FAILED``).
  * :class:`~gateway.credit.CreditError` — the money loop refused an operation;
    nothing took effect (its own branches: ``PolicyError``, ``ImportRefused``,
    ``PeriodError``, ``NotFound``).
  * :class:`~gateway.witness.WitnessFolderError` — a witness folder is missing,
    unreadable or inconsistent.

Errors of the packages underneath (``ledger.LedgerError``,
``consent.ConsentError``, ``federation.FederationError``) keep their own roots:
the gateway passes them through with their codes.
"""

from __future__ import annotations

__all__ = ["GatewayError"]


class GatewayError(Exception):
    """Root of the gateway's errors; ``code`` says what went wrong for machines.

    Parameters
    ----------
    message : str
    code : str
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
