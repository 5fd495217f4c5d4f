"""Hypothesis state machine over the stored lifecycle, on both databases."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import ConsentDenied, ConsentReceipt, InvalidConsentRequest, Status
from ledger._models import LogEntryRow

from .factories import CM_KEY, CONSUMER, PROVIDER, T0, make_terms

_ids = itertools.count()
LIMIT = 3  # uses per day in the machine's consents
WINDOW = timedelta(days=120)
LIVE = (Status.PENDING, Status.ACTIVE, Status.PAUSED)


def _iso(at: datetime) -> str:
    return at.isoformat()


def test_lifecycle_state_machine(sessions: sessionmaker[Session]) -> None:
    """Random lifecycles match a model of the rules; each step's ledger entries match receipts."""

    class Lifecycle(RuleBasedStateMachine):
        """One merchant per run, its consent chain modelled as (status, window, clock, uses)."""

        def __init__(self) -> None:
            super().__init__()
            n = next(_ids)
            self.merchant = f"sm-m-{n}"
            self.prefix = f"sm-{n}"
            self.version = 0
            self.grants = 0
            self.cid = ""
            self.status = Status.PENDING
            self.now = T0
            self.start = T0
            self.expiry = T0
            self.created = T0
            self.uses: dict[date, int] = {}
            # Earlier chains' last consents (ended): evaluate() may still cite one.
            self.ended: list[tuple[int, datetime, str, Status, datetime, datetime]] = []
            self.entries = self._ledger_size()

        # -- helpers ---------------------------------------------------------------
        def _ledger_size(self) -> int:
            with sessions() as s:
                return int(s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one())

        def _new_entries(self) -> list[tuple[int, str]]:
            with sessions() as s:
                rows = s.execute(
                    select(LogEntryRow.seq, LogEntryRow.kind)
                    .order_by(LogEntryRow.seq)
                    .offset(self.entries)
                ).all()
            return [(seq, kind) for seq, kind in rows]

        def _recorded(self, receipts: list[ConsentReceipt]) -> None:
            """The step wrote exactly one ledger entry per receipt, and they match."""
            new = self._new_entries()
            assert new == [(r.ledger_seq, r.transition) for r in receipts], (new, receipts)
            self.entries += len(new)

        def _refused(self) -> None:
            """A refused step wrote nothing."""
            assert self._new_entries() == []

        def _live(self) -> bool:
            return self.status in LIVE and self.now < self.expiry

        def _terms(self, start: datetime, **changes: Any) -> consent.ConsentArtefact:
            self.version = changes.get("version", 1)
            self.grants += 1
            # Zero-padded so that a later grant also has the higher id (evaluate's tie-break).
            self.cid = f"{self.prefix}-g{self.grants:03d}"
            self.start, self.expiry = start, start + WINDOW
            self.created = self.now
            self.uses = {}
            return make_terms(
                self.cid,
                self.merchant,
                frequency={"uses": LIMIT, "per": "day"},
                consent_start=_iso(start),
                consent_expiry=_iso(start + WINDOW),
                created_at=_iso(self.now),
                **changes,
            )

        def _transition(self, name: str, allowed: bool, after: Status, **kw: Any) -> None:
            try:
                with sessions() as s, s.begin():
                    receipt = getattr(consent, name)(s, self.cid, at=self.now, **kw)
            except InvalidConsentRequest as exc:  # TransitionRefused is one
                assert not allowed, f"{name} refused from {self.status} at {self.now}: {exc}"
                self._refused()
                return
            assert allowed, f"{name} accepted from {self.status} at {self.now}"
            assert receipt.status == after.value
            self._recorded([receipt])
            self.status = after

        # -- rules -----------------------------------------------------------------
        @initialize(pending=st.booleans(), start_in_hours=st.sampled_from([0, 0, 0, 5, 30]))
        def grant(self, pending: bool, start_in_hours: int) -> None:
            self._grant(pending, start_in_hours)

        @precondition(lambda self: not self._live())
        @rule(pending=st.booleans(), start_in_hours=st.sampled_from([0, 0, 5]))
        def grant_again(self, pending: bool, start_in_hours: int) -> None:
            # The merchant consents afresh once the last consent has ended.
            self._grant(pending, start_in_hours)

        def _grant(self, pending: bool, start_in_hours: int) -> None:
            if self.cid:
                head = (self.version, self.created, self.cid, self.status, self.start, self.expiry)
                self.ended.append(head)
            terms = self._terms(self.now + timedelta(hours=start_in_hours))
            with sessions() as s, s.begin():
                result = consent.grant(s, terms, key=CM_KEY, at=self.now, activate=not pending)
            self._recorded(list(result.receipts))
            self.status = Status.PENDING if pending else Status.ACTIVE
            assert result.receipt.status == self.status.value

        @rule()
        def activate(self) -> None:
            ok = self._live() and self.status is Status.PENDING
            self._transition("activate", ok, Status.ACTIVE)

        @rule()
        def reject(self) -> None:
            ok = self._live() and self.status is Status.PENDING
            self._transition("reject", ok, Status.REJECTED, reason="declined")

        @rule()
        def pause(self) -> None:
            self._transition("pause", self._live() and self.status is Status.ACTIVE, Status.PAUSED)

        @rule()
        def resume(self) -> None:
            self._transition("resume", self._live() and self.status is Status.PAUSED, Status.ACTIVE)

        @rule()
        def revoke(self) -> None:
            self._transition("revoke", self._live(), Status.REVOKED)

        @rule()
        def supersede(self) -> None:
            ok = self._live()
            old = (self.version, self.grants, self.cid, self.start, self.expiry, self.uses)
            terms = self._terms(self.now, version=old[0] + 1, supersedes=old[2])
            try:
                with sessions() as s, s.begin():
                    result = consent.grant(s, terms, key=CM_KEY, at=self.now)
            except InvalidConsentRequest as exc:
                assert not ok and exc.code == "SUPERSEDE_INVALID", exc
                self._refused()
                self.version, self.grants, self.cid, self.start, self.expiry, self.uses = old
                return
            assert ok, f"superseded a {self.status} consent at {self.now}"
            assert [r.transition for r in result.receipts] == [
                "consent.superseded",
                "consent.granted",
                "consent.activated",
            ]
            self._recorded(list(result.receipts))
            self.status = Status.ACTIVE

        @rule()
        def use(self) -> None:
            day = self.now.date()
            ok = (
                self.status is Status.ACTIVE
                and self.start <= self.now < self.expiry
                and self.uses.get(day, 0) < LIMIT
            )
            try:
                with sessions() as s, s.begin():
                    receipt = consent.record_use(
                        s,
                        self.cid,
                        purpose="model_training",
                        categories=["margins"],
                        at=self.now,
                        consent_manager_key=CM_KEY.public_key(),
                    )
            except ConsentDenied:
                assert not ok
                self._refused()
                return
            assert ok
            self._recorded([receipt])
            self.uses[day] = self.uses.get(day, 0) + 1

        @rule()
        def use_in_a_round(self) -> None:
            # A round's batch counts the use whatever the status (the data was used).
            with sessions() as s, s.begin():
                entry = consent.count_round_uses(s, [self.cid], at=self.now, job_id="job-sm")
            assert entry is not None and self._new_entries() == [(entry.seq, "consent.uses")]
            self.entries += 1
            day = self.now.date()
            self.uses[day] = self.uses.get(day, 0) + 1

        @rule(minutes=st.sampled_from([1, 30, 60 * 7, 60 * 26, 60 * 24 * 40, 60 * 24 * 130]))
        def advance(self, minutes: int) -> None:
            self.now += timedelta(minutes=minutes)

        @rule()
        def sweep(self) -> None:
            with sessions() as s, s.begin():
                receipts = consent.expire_due(s, at=self.now)
            mine = [r for r in receipts if r.consent_id == self.cid]
            due = self.status in LIVE and self.now >= self.expiry
            assert bool(mine) == due
            self._recorded(receipts)
            if due:
                self.status = Status.EXPIRED

        # -- what every check must say -------------------------------------------
        @invariant()
        def check_agrees_with_model(self) -> None:
            if not self.cid:
                return
            with sessions() as s:
                use = consent.Use(
                    merchant_id=self.merchant,
                    data_provider=PROVIDER,
                    data_consumer=CONSUMER,
                    purpose="model_training",
                    categories=["margins"],
                    at=self.now,
                )
                decision = consent.check(s, use, consent_manager_key=CM_KEY.public_key())
            expected = self._code(self.status, self.start, self.expiry, self.uses)
            if expected is not None:
                # Nothing allows: evaluate() reports the most relevant consent's denial
                # (highest version, then newest, then highest id), over every chain.
                current = (self.version, self.created, self.cid, self.status, self.start)
                heads = [*self.ended, (*current, self.expiry)]
                _, _, _, status, start, expiry = max(heads, key=lambda h: h[:3])
                expected = self._code(status, start, expiry, self.uses)
            assert decision.code == expected, (decision, self.status, self.now)
            if expected is None:
                assert decision.consent_id == self.cid

        def _code(
            self, status: Status, start: datetime, expiry: datetime, uses: dict[date, int]
        ) -> str | None:
            """The deny code of one consent at ``self.now`` (None: it allows the use)."""
            if status is Status.REVOKED:
                return "REVOKED"
            if status in (Status.PENDING, Status.REJECTED):
                return "NO_CONSENT"
            if status is Status.EXPIRED or self.now >= expiry:
                return "EXPIRED"
            if self.now < start:
                return "NOT_YET_VALID"
            if status is Status.PAUSED:
                return "PAUSED"
            if uses.get(self.now.date(), 0) >= LIMIT:
                return "FREQUENCY_EXCEEDED"
            return None

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
