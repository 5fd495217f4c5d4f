"""Hypothesis state machine over the stored lifecycle, on both databases."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import ConsentDenied, Status, TransitionRefused

from .factories import CM_KEY, CONSUMER, PROVIDER, T0, make_terms

_ids = itertools.count()
LIMIT = 3  # uses per day in the machine's consent


def test_lifecycle_state_machine(sessions: sessionmaker[Session]) -> None:
    """Random pause/resume/revoke/use/clock/sweep sequences match a simple model of the rules."""

    class Lifecycle(RuleBasedStateMachine):
        """One consent per run; the model is (status, clock, uses today)."""

        def __init__(self) -> None:
            super().__init__()
            n = next(_ids)
            self.cid, self.merchant = f"sm-{n}", f"sm-m-{n}"
            terms = make_terms(self.cid, self.merchant, frequency={"uses": LIMIT, "per": "day"})
            self.expiry = terms.consent_expiry
            self.now = T0
            self.status = Status.ACTIVE
            self.uses: dict[object, int] = {}
            with sessions() as s, s.begin():
                consent.grant(s, terms, key=CM_KEY, at=self.now)

        def _live(self) -> bool:
            return self.status in (Status.ACTIVE, Status.PAUSED) and self.now < self.expiry

        def _transition(self, name: str, allowed: bool, after: Status) -> None:
            try:
                with sessions() as s, s.begin():
                    receipt = getattr(consent, name)(s, self.cid, at=self.now)
            except TransitionRefused:
                assert not allowed, f"{name} refused from {self.status} at {self.now}"
                return
            assert allowed, f"{name} accepted from {self.status} at {self.now}"
            assert receipt.status == after.value
            self.status = after

        @rule()
        def pause(self) -> None:
            self._transition("pause", self._live() and self.status is Status.ACTIVE, Status.PAUSED)

        @rule()
        def resume(self) -> None:
            self._transition("resume", self._live() and self.status is Status.PAUSED, Status.ACTIVE)

        @rule()
        def revoke(self) -> None:
            self._transition("revoke", self._live(), Status.REVOKED)

        @rule(hours=st.integers(min_value=1, max_value=1500))
        def advance(self, hours: int) -> None:
            self.now += timedelta(hours=hours)

        @rule()
        def sweep(self) -> None:
            with sessions() as s, s.begin():
                receipts = consent.expire_due(s, at=self.now)
            mine = [r for r in receipts if r.consent_id == self.cid]
            due = self.status in (Status.ACTIVE, Status.PAUSED) and self.now >= self.expiry
            assert bool(mine) == due
            if due:
                self.status = Status.EXPIRED

        @rule()
        def use(self) -> None:
            day = self.now.date()
            ok = (
                self.status is Status.ACTIVE
                and self.now < self.expiry
                and self.uses.get(day, 0) < LIMIT
            )
            try:
                with sessions() as s, s.begin():
                    consent.record_use(
                        s,
                        self.cid,
                        purpose="model_training",
                        categories=["margins"],
                        at=self.now,
                        consent_manager_key=CM_KEY.public_key(),
                    )
            except ConsentDenied:
                assert not ok
                return
            assert ok
            self.uses[day] = self.uses.get(day, 0) + 1

        @invariant()
        def check_agrees_with_model(self) -> None:
            with sessions() as s:
                decision = consent.check(
                    s,
                    merchant_id=self.merchant,
                    data_provider=PROVIDER,
                    data_consumer=CONSUMER,
                    purpose="model_training",
                    categories=["margins"],
                    at=self.now,
                    consent_manager_key=CM_KEY.public_key(),
                )
            expected: str | None
            if self.status is Status.REVOKED:
                expected = "REVOKED"
            elif self.status is Status.EXPIRED or self.now >= self.expiry:
                expected = "EXPIRED"
            elif self.status is Status.PAUSED:
                expected = "PAUSED"
            elif self.uses.get(self.now.date(), 0) >= LIMIT:
                expected = "FREQUENCY_EXCEEDED"
            else:
                expected = None
            assert decision.code == expected, (decision, self.status, self.now)

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=12,
            stateful_step_count=12,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
