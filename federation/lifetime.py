"""The platform's per-merchant lifetime ε account, across every ISV node and every job.

Each node keeps its own :class:`~federation.dp.PrivacyLedger`, so on its own a
merchant served by two ISVs would get two lifetime budgets. The gateway
therefore keeps one more account, per merchant, over all nodes: a persisted
JSON file (``run_config["privacy-account"]``), locked with ``flock`` while it is
read and updated, so concurrent jobs in several processes share it safely.

Composition bound. A DP job of budget ``(ε, δ)`` is ``(ε, δ)``-DP with respect to
each node's rows (RDP accounting over all its rounds at that node). A merchant
whose rows are read by the job at ``k`` ISVs changes ``k`` independent releases, so
the job costs that merchant at most ``k·ε`` (and ``k·δ``) by sequential
composition; over jobs the costs add up (basic composition, an upper bound).
The account charges exactly that: one job ε per (job, ISV) whose training
manifest names the merchant, at most once however many rounds the job runs.
A job is refused before it starts (:func:`federation.runner.check_budget`) if any
merchant of its cohorts would pass its lifetime ε; the ServerApp charges each
training manifest before it is sent and leaves out any merchant the charge would
push past its lifetime (another job may have spent it meanwhile).

Exact charges. A manifest's charge is *provisional* until the node's signed
receipt says whom it used (:meth:`MerchantPrivacyAccount.settle`, with the
receipt's ``unused_entries``): a merchant the node left out (no rows in range,
its own lifetime spent, held out of training and not evaluated) gets its
provisional charge back; one the node used stays charged, and one used without
a standing charge (a receipt after a refund) is charged then. A charge that no
receipt ever settles stays (the upper bound: without the node's word the
platform cannot tell it was unused).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._errors import BudgetExceeded
from .specs import DPBudget

__all__ = ["MerchantPrivacyAccount", "PRIVACY_ACCOUNT_KEY", "split_by_receipt"]

PRIVACY_ACCOUNT_KEY = "privacy-account"
"""Run-config key: the platform account's JSON file (none: per-node ledgers only)."""

_EPS_SLACK = 1e-12


class MerchantPrivacyAccount:
    """Per-merchant lifetime ε charged across all ISVs (a JSON file, locked while updated).

    Parameters
    ----------
    path : Path
        The JSON file; created on first charge.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- storage --------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"merchants": {}}
        return dict(json.loads(self.path.read_text(encoding="utf-8")))

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                tmp = self.path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- queries --------------------------------------------------------------------------
    def spent(self, merchant_id: str) -> float:
        """The merchant's lifetime ε charged so far, over all ISVs and jobs."""
        m = self._read()["merchants"].get(merchant_id)
        return float(m["epsilon"]) if m else 0.0

    def summary(self) -> tuple[int, float]:
        """Merchants charged and the largest lifetime ε any of them has spent."""
        merchants = {k: m for k, m in self._read()["merchants"].items() if m["charges"]}
        return len(merchants), max((float(m["epsilon"]) for m in merchants.values()), default=0.0)

    def over_budget(
        self, *, job_id: str, budget: DPBudget, cohorts: Mapping[str, Sequence[str]]
    ) -> list[str]:
        """Merchants that the job's ``cohorts`` (ISV → merchant ids) would push past lifetime."""
        return sorted(_charges(self._read(), job_id, budget, cohorts)[1])

    def check(
        self, *, job_id: str, budget: DPBudget, cohorts: Mapping[str, Sequence[str]]
    ) -> None:
        """Refuse a job whose cohorts would push any merchant past its lifetime ε (pure read).

        Raises
        ------
        BudgetExceeded
            Naming how many merchants would overrun (and a few of them).
        """
        over = self.over_budget(job_id=job_id, budget=budget, cohorts=cohorts)
        if over:
            raise BudgetExceeded(
                f"{self.path}: {len(over)} merchant(s) would exceed lifetime "
                f"ε={budget.lifetime_epsilon} across ISVs (e.g. {', '.join(over[:5])})"
            )

    def provisional(self, *, job_id: str, isv: str) -> list[str]:
        """Merchants charged for ``(job_id, isv)`` whom no receipt has settled yet."""
        return sorted(self._read().get("provisional", {}).get(f"{job_id}\n{isv}", {}))

    # -- updates --------------------------------------------------------------------------
    def settle(
        self,
        *,
        job_id: str,
        budget: DPBudget,
        isv: str,
        used: Sequence[str],
        unused: Sequence[str],
    ) -> tuple[list[str], list[str]]:
        """Apply one node receipt: keep the used merchants' charges, refund the unused.

        Parameters
        ----------
        job_id, isv : str
            The job and the node whose verified receipt this is.
        budget : DPBudget
            The job's budget (its ε is what a used, uncharged merchant is charged).
        used, unused : Sequence[str]
            The receipt's manifest split by its ``unused_entries``.

        Returns
        -------
        tuple[list[str], list[str]]
            Merchants refunded and merchants charged by this receipt (sorted).
        """
        tag = f"{job_id}\n{isv}"
        refunded, charged = [], []
        with self._locked() as state:
            pending = state.setdefault("provisional", {}).setdefault(tag, {})
            merchants = state["merchants"]
            for mid in sorted(set(used)):
                if mid in pending:
                    del pending[mid]  # confirmed: the charge stands
                    continue
                m = merchants.setdefault(mid, {"epsilon": 0.0, "charges": []})
                if tag not in m["charges"]:
                    m["epsilon"] = float(m["epsilon"]) + budget.epsilon
                    m["charges"].append(tag)
                    charged.append(mid)
            for mid in sorted(set(unused) - set(used)):
                amount = pending.pop(mid, None)
                if amount is None:
                    continue  # confirmed by an earlier receipt of the job, or never charged
                m = merchants[mid]
                m["epsilon"] = max(0.0, float(m["epsilon"]) - float(amount))
                m["charges"].remove(tag)
                refunded.append(mid)
            if not pending:
                del state["provisional"][tag]
        return refunded, charged

    def charge(
        self, *, job_id: str, budget: DPBudget, isv: str, merchant_ids: Sequence[str]
    ) -> list[str]:
        """Charge the job's ε to each merchant of one ISV's manifest, once per (job, ISV).

        Merchants the charge would push past their lifetime ε are not charged. The
        charges are provisional until :meth:`settle` applies the node's receipt.

        Returns
        -------
        list[str]
            The merchants left out (over budget); the others may be trained on.
        """
        with self._locked() as state:
            new, over = _charges(state, job_id, budget, {isv: merchant_ids})
            tag = f"{job_id}\n{isv}"
            pending = state.setdefault("provisional", {}).setdefault(tag, {})
            for mid in new:
                m = state["merchants"].setdefault(mid, {"epsilon": 0.0, "charges": []})
                m["epsilon"] = float(m["epsilon"]) + budget.epsilon
                m["charges"].append(tag)
                pending[mid] = budget.epsilon  # until a receipt says whether it was used
            if not pending:
                del state["provisional"][tag]
        return sorted(over)


def split_by_receipt(
    manifest_ids: Sequence[str], unused_entries: str
) -> tuple[list[str], list[str]]:
    """A manifest's merchant ids (in manifest order) split into used and unused by a receipt.

    Raises
    ------
    ValueError
        ``unused_entries`` is malformed or names a position outside the manifest.
    """
    from .receipts import parse_entry_bitmap

    skip = set(parse_entry_bitmap(unused_entries, len(manifest_ids)))
    used = [m for i, m in enumerate(manifest_ids) if i not in skip]
    return used, [manifest_ids[i] for i in sorted(skip)]


def _charges(
    state: dict[str, Any], job_id: str, budget: DPBudget, cohorts: Mapping[str, Sequence[str]]
) -> tuple[dict[str, int], set[str]]:
    """New charges per merchant (count of (job, ISV) not yet charged) and who would overrun."""
    merchants = state["merchants"]
    new: dict[str, int] = {}
    for isv, ids in cohorts.items():
        tag = f"{job_id}\n{isv}"
        for mid in set(ids):
            m = merchants.get(mid)
            if m is None or tag not in m["charges"]:
                new[mid] = new.get(mid, 0) + 1
    over = {
        mid
        for mid, k in new.items()
        if float(merchants.get(mid, {}).get("epsilon", 0.0)) + k * budget.epsilon
        > budget.lifetime_epsilon + _EPS_SLACK
    }
    return {m: k for m, k in new.items() if m not in over}, over
