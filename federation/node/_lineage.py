"""Which models a merchant's data shaped at this node (what to list on revocation).

The node's privacy ledger knows every job whose releases were charged to a
merchant, and its model register knows the global models and encoders it
received in each job. Together they name the models a revoked merchant's data
shaped, on the node's own record rather than the platform's.
"""

from __future__ import annotations

from pathlib import Path

from ..dp import PrivacyLedger
from ._models import ModelRegister

__all__ = ["models_shaped_by"]


def models_shaped_by(
    ledger_path: Path, register_path: Path, merchant_id: str
) -> dict[str, list[str]]:
    """Job id → hashes of the global models this node received in it, for ``merchant_id``'s jobs.

    Every model received in a job after the merchant's first charged release may
    carry its influence (the node cannot tell which round an aggregate reflects), so
    all of the job's models are listed.
    """
    register = ModelRegister(register_path)
    lines = register._lines()  # noqa: SLF001 - same package
    out: dict[str, list[str]] = {}
    for job in PrivacyLedger(ledger_path).jobs_of(merchant_id):
        out[job] = sorted({str(x["model"]) for x in lines if str(x["job"]) == job})
    return out
