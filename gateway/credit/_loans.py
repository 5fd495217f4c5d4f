"""Loan events from the lending system: strict parsing and an idempotent, all-or-nothing import.

A row (JSON Lines object or CSV record) has these fields:

===========  =========================================================================
``key``      idempotency key, 1–128 of ``[A-Za-z0-9_.:/@#+-]``
``loan_id``  the loan (same alphabet)
``merchant`` the merchant; required on a loan's first row, must match afterwards
``kind``     ``drawdown``, ``repayment``, ``write_off``, ``line_change`` or ``recovery``
``date``     ``YYYY-MM-DD``, the value date
``amount``   integer fen ≥ 0 (``line_change``: the new line; others > 0)
``currency`` ISO 4217, the policy's currency
``rate_bp``  annual rate in basis points; optional, default the policy's
===========  =========================================================================

:func:`import_events` parses the whole input first; the first bad row refuses the
whole file with its 1-based line number. A key seen before with the same row is
skipped; with another row the file is refused (``CONFLICTING_REPEAT``). Rows dated
in a closed period are refused (``PERIOD_CLOSED``), so a closed month never changes.
A new loan binds to its merchant's latest line decision (``UNKNOWN_MERCHANT``
without one). A repayment or write-off that would take a loan below zero (the file's
rows in date order, after everything imported before; a repayment pays interest accrued
in closed periods first, a write-off takes principal only) refuses the file
(``NEGATIVE_BALANCE``). A ``recovery`` is cash collected on a loan after a write-off:
it moves no principal, and in the same date-order replay it must follow a write-off of
that loan (``NOT_WRITTEN_OFF``) and stay within what was written off — the principal of
every write-off up to its date plus the interest receivable written off at closed month
ends — less the loan's earlier recoveries (``RECOVERY_EXCEEDS_WRITE_OFF``). The interest
a write-off takes is known once its month closes, so a recovery of written-off interest
comes in a later month. Accepted rows go in with one multi-row ``INSERT`` per batch and one
``credit.loans.imported`` ledger entry (file digest, rows, added, digest of the
added events) in the caller's transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import json.scanner
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import ledger

from ._bulk import among, copy_rows
from ._errors import ImportRefused
from ._lines import decision_terms
from ._models import AccrualRow, ImportRow, LoanEventRow, LoanRow, PeriodCloseRow
from ._period import Period

__all__ = [
    "EVENT_KINDS",
    "IMPORT_ENTRY",
    "LoanEvent",
    "ImportSummary",
    "parse_events",
    "import_events",
    "event_digest",
    "import_bytes",
    "events_as_jsonl",
]

EVENT_KINDS = ("drawdown", "repayment", "write_off", "line_change", "recovery")
IMPORT_ENTRY = "credit.loans.imported"
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@#+\-]{0,127}")
_FIELDS = ("key", "loan_id", "merchant", "kind", "date", "amount", "currency", "rate_bp")
_REQUIRED = ("key", "loan_id", "kind", "date", "amount", "currency")
_MAX_AMOUNT = 2**53 - 1
_CURRENCIES: set[str] = set()
_FIELDSET = frozenset(_FIELDS)
_KINDSET = frozenset(EVENT_KINDS)
_IDENT_MATCH = _IDENT.fullmatch
_ISO: dict[date, str] = {}
"""``date → ISO text``: a file holds few distinct days; the digest and the insert need it."""


def _iso(day: date) -> str:
    text = _ISO.get(day)
    if text is None:
        text = _ISO[day] = day.isoformat()
    return text


class LoanEvent(NamedTuple):
    """One parsed event row; ``line`` is where it was read (1-based).

    A named tuple, immutable like a frozen dataclass and four times cheaper to make: an
    import builds one per row.
    """

    key: str
    loan_id: str
    merchant: str | None
    kind: str
    day: date
    amount: int
    currency: str
    rate_bp: int | None
    line: int = 0

    def body(self) -> dict[str, Any]:
        """The row as canonical JSON values (what the digest covers)."""
        return {
            "key": self.key,
            "loan_id": self.loan_id,
            "merchant": self.merchant,
            "kind": self.kind,
            "date": self.day.isoformat(),
            "amount": self.amount,
            "currency": self.currency,
            "rate_bp": self.rate_bp,
        }


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What one import did."""

    import_id: str
    rows: int
    added: int
    repeated: int
    new_loans: int
    already_imported: bool


def event_digest(event: LoanEvent) -> str:
    """SHA-256 (hex) of the event's fields joined by U+001F (no field can hold that byte).

    Order: key, loan, merchant (empty if none), kind, date, amount, currency, rate_bp
    (empty if none).
    """
    day = _ISO.get(event.day) or _iso(event.day)
    parts = (
        event.key,
        event.loan_id,
        event.merchant or "",
        event.kind,
        day,
        str(event.amount),
        event.currency,
        "" if event.rate_bp is None else str(event.rate_bp),
    )
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _bad(line: int, message: str) -> ImportRefused:
    return ImportRefused(f"line {line}: {message}", code="BAD_ROW", line=line)


def _int(value: Any, line: int, name: str) -> int:
    if isinstance(value, bool):
        raise _bad(line, f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,16}", value.strip()):
        return int(value)
    raise _bad(line, f"{name} must be an integer number of fen, got {value!r}")


def _event(
    doc: Mapping[str, Any],
    line: int,
    days: dict[str, date] | None = None,
    ids: set[str] | None = None,
) -> LoanEvent:
    """One row checked; ``days`` memoises parsed dates (a file holds few distinct days) and
    ``ids`` the loan and merchant ids already found valid."""
    if ids is None:
        ids = set()
    if type(doc) is not dict and not isinstance(doc, Mapping):
        raise _bad(line, "a row must be a JSON object")
    if not doc.keys() <= _FIELDSET:
        extra = set(doc) - _FIELDSET
        raise _bad(line, f"unknown field(s) {', '.join(sorted(extra))}")
    get: Callable[[str], Any] = doc.get  # values are unchecked JSON: Any until checked below
    values = key, loan, kind, raw_day, amount, currency = (
        get("key"),
        get("loan_id"),
        get("kind"),
        get("date"),
        get("amount"),
        get("currency"),
    )
    if None in values or "" in values:  # one C-level scan; the loop only names the field
        for name, value in zip(_REQUIRED, values, strict=True):
            if value is None or value == "":
                raise _bad(line, f"missing {name}")
    if type(key) is not str or not _IDENT_MATCH(key):
        raise _bad(line, f"invalid key {key!r}")
    # A loan's id (and its merchant's) repeats on each of its rows: checked once per file.
    if type(loan) is not str or (loan not in ids and not _IDENT_MATCH(loan)):
        raise _bad(line, f"invalid loan_id {loan!r}")
    ids.add(loan)
    merchant = get("merchant") or None
    if merchant is not None:
        if type(merchant) is not str or (merchant not in ids and not _IDENT_MATCH(merchant)):
            raise _bad(line, f"invalid merchant {merchant!r}")
        ids.add(merchant)
    if kind not in _KINDSET:
        raise _bad(line, f"kind must be one of {', '.join(EVENT_KINDS)}, got {kind!r}")
    day = days.get(raw_day) if days is not None and type(raw_day) is str else None
    if day is None:
        try:
            day = date.fromisoformat(str(raw_day))
        except ValueError:
            raise _bad(line, f"date must be YYYY-MM-DD, got {raw_day!r}") from None
        if days is not None and type(raw_day) is str:
            days[raw_day] = day
    if type(amount) is not int:
        amount = _int(amount, line, "amount")
    if not (0 <= amount <= _MAX_AMOUNT) or (amount == 0 and kind != "line_change"):
        raise _bad(
            line, f"amount must be {'≥' if kind == 'line_change' else '>'} 0 fen, got {amount}"
        )
    if currency not in _CURRENCIES:
        try:
            ledger.Money.zero(currency)
        except (ledger.MoneyError, TypeError):
            raise _bad(line, f"unknown currency {currency!r}") from None
        _CURRENCIES.add(currency)
    rate = get("rate_bp")
    rate_bp = None if rate is None or rate == "" else _int(rate, line, "rate_bp")
    if rate_bp is not None and not 0 <= rate_bp <= 100_000:
        raise _bad(line, f"rate_bp must be in 0..100000, got {rate_bp}")
    return LoanEvent(key, loan, merchant, kind, day, amount, str(currency), rate_bp, line)


def parse_events(data: bytes, *, fmt: str) -> list[LoanEvent]:
    """Parse a whole JSON Lines (``jsonl``) or CSV (``csv``, with a header) input.

    Raises :class:`ImportRefused` (``BAD_ROW`` with the line, or ``BAD_FILE``).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportRefused(f"input is not UTF-8: {exc}", code="BAD_FILE") from exc
    events: list[LoanEvent] = []
    days: dict[str, date] = {}
    ids: set[str] = set()
    if fmt == "jsonl":
        # The C scanner on the whole line (what json.loads runs after two Python-level
        # wrappers); anything it does not take whole goes through json.loads for the
        # same result or the same error.
        scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
        loads = json.loads
        for n, raw in enumerate(text.splitlines(), start=1):
            try:
                doc, end = scan(raw, 0)
                if end != len(raw):
                    raise StopIteration
            except (StopIteration, json.JSONDecodeError):
                try:
                    doc = loads(raw)
                except json.JSONDecodeError as exc:
                    if not raw.strip():
                        continue
                    raise _bad(n, f"not JSON: {exc.msg}") from None
            events.append(_event(doc, n, days, ids))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [f for f in _REQUIRED if f not in header]
        if missing:
            raise ImportRefused(f"CSV header lacks {', '.join(missing)}", code="BAD_FILE", line=1)
        for row in reader:
            if None in row:
                raise _bad(reader.line_num, "more values than header fields")
            events.append(
                _event({k: v for k, v in row.items() if v != ""}, reader.line_num, days, ids)
            )
    else:
        raise ImportRefused(f"unknown format {fmt!r}: jsonl or csv", code="BAD_FILE")
    return events


def _existing(session: Session, loans: Sequence[str]) -> dict[str, str]:
    """Keys and digests already stored for these loans (one query).

    A key stored under another loan is not found here; the insert then hits the
    primary key and the import is refused as a conflicting repeat all the same.
    """
    if not loans:
        return {}
    rows = session.execute(
        select(LoanEventRow.key, LoanEventRow.digest).where(
            among(session, LoanEventRow.loan_id, loans)
        )
    )
    return {k: d for k, d in rows}


def _loans(session: Session, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    if not ids:
        return {}
    rows = session.execute(
        select(LoanRow.loan_id, LoanRow.merchant_id, LoanRow.currency).where(
            among(session, LoanRow.loan_id, ids)
        )
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def _positions(
    session: Session, ids: Sequence[str], open_from: date | None
) -> tuple[dict[str, list[int]], list[tuple[date, int, str, str, int]]]:
    """Each loan's ``[principal, interest due, recoverable, written off?]`` at the end of
    the last closed period, and its stored events in open periods as
    ``(day, -1, loan, kind, amount)``.

    Principal is Σdrawdowns − Σrepayments − Σwrite-offs of closed periods + the interest
    their repayments paid instead of principal; interest due is what closed periods
    accrued and repayments have not yet paid nor a write-off taken (see
    gateway.credit._accrual). Recoverable is Σwrite-offs + Σinterest written off −
    Σrecoveries; the flag is 1 once the loan had a write-off.
    """
    out: dict[str, list[int]] = {}
    later: list[tuple[date, int, str, str, int]] = []
    if not ids:
        return out, later
    rows = session.execute(
        select(
            LoanEventRow.loan_id, LoanEventRow.kind, LoanEventRow.day, LoanEventRow.amount
        ).where(among(session, LoanEventRow.loan_id, ids), LoanEventRow.kind != "line_change")
    )
    for loan, kind, day, amount in rows:
        if open_from is None or day >= open_from:
            later.append((day, -1, loan, kind, int(amount)))
            continue
        pos = out.setdefault(loan, [0, 0, 0, 0])
        if kind == "recovery":
            pos[2] -= int(amount)
            continue
        pos[0] += int(amount) if kind == "drawdown" else -int(amount)
        if kind == "write_off":
            pos[2] += int(amount)
            pos[3] = 1
    accrued = session.execute(
        select(
            AccrualRow.loan_id,
            func.sum(AccrualRow.interest),
            func.sum(AccrualRow.interest_paid),
            func.sum(AccrualRow.interest_written_off),
        )
        .where(among(session, AccrualRow.loan_id, ids))
        .group_by(AccrualRow.loan_id)
    )
    for loan, interest, paid, written_off in accrued:
        pos = out.setdefault(loan, [0, 0, 0, 0])
        pos[0] += int(paid)
        pos[1] += int(interest) - int(paid) - int(written_off)
        pos[2] += int(written_off)
    return out, later


def import_events(
    session: Session,
    events: Sequence[LoanEvent],
    *,
    source: str,
    file_digest: str,
    default_rate_bp: int,
    currency: str,
    at: datetime | None = None,
) -> ImportSummary:
    """Import parsed events idempotently, all or nothing, in the caller's transaction.

    Parameters
    ----------
    session : Session
    events : Sequence[LoanEvent]
        From :func:`parse_events`.
    source : str
        A name for the input (file name), recorded.
    file_digest : str
        SHA-256 hex of the input bytes: the import id; the same file again is a no-op.
    default_rate_bp : int
        Rate of a new loan whose first row names none (the policy's).
    currency : str
        The book's currency; rows in another are refused.

    Raises
    ------
    ImportRefused
        ``BAD_ROW``, ``CONFLICTING_REPEAT``, ``UNKNOWN_MERCHANT``, ``PERIOD_CLOSED``,
        ``NEGATIVE_BALANCE``, ``NOT_WRITTEN_OFF``, ``RECOVERY_EXCEEDS_WRITE_OFF``; nothing is
        written.
    """
    now = at or datetime.now(UTC)
    if session.get(ImportRow, file_digest) is not None:
        return ImportSummary(file_digest, len(events), 0, len(events), 0, True)
    digests: dict[str, tuple[str, LoanEvent]] = {}
    for ev in events:
        if ev.currency != currency:
            raise _bad(ev.line, f"currency {ev.currency} is not the book's {currency}")
        d = event_digest(ev)
        seen = digests.get(ev.key)
        if seen is not None and seen[0] != d:
            raise ImportRefused(
                f"line {ev.line}: key {ev.key!r} repeats line {seen[1].line} with another row",
                code="CONFLICTING_REPEAT",
                line=ev.line,
            )
        digests.setdefault(ev.key, (d, ev))
    old = _existing(session, sorted({ev.loan_id for _, ev in digests.values()}))
    new: list[tuple[str, LoanEvent]] = []
    for key, (d, ev) in digests.items():
        if key in old:
            if old[key] != d:
                raise ImportRefused(
                    f"line {ev.line}: key {key!r} was imported before with another row",
                    code="CONFLICTING_REPEAT",
                    line=ev.line,
                )
            continue
        new.append((d, ev))
    last_closed = session.execute(select(func.max(PeriodCloseRow.period))).scalar_one_or_none()
    if last_closed is not None:
        for _, ev in new:
            if f"{ev.day:%Y-%m}" <= last_closed:
                raise ImportRefused(
                    f"line {ev.line}: {ev.day} lies in a closed period (closed to {last_closed})",
                    code="PERIOD_CLOSED",
                    line=ev.line,
                )
    loan_ids = sorted({ev.loan_id for _, ev in new})
    known = _loans(session, loan_ids)
    first: dict[str, LoanEvent] = {}
    # ``new`` is in file order, and the sort is stable: date order, then line order.
    in_date_order = sorted(new, key=lambda x: x[1].day)
    for _, ev in in_date_order:
        head = first.setdefault(ev.loan_id, ev)
        if ev.merchant is None:
            continue
        stored_loan = known.get(ev.loan_id)
        owner = stored_loan[0] if stored_loan is not None else head.merchant
        if owner is not None and ev.merchant != owner:
            raise _bad(ev.line, f"loan {ev.loan_id} belongs to {owner}, not {ev.merchant}")
    fresh = [lid for lid in loan_ids if lid not in known]
    for lid in fresh:
        if first[lid].merchant is None:
            raise _bad(first[lid].line, f"new loan {lid} needs a merchant")
    decisions = decision_terms(session, sorted({first[lid].merchant or "" for lid in fresh}))
    loan_rows: list[dict[str, Any]] = []
    for lid in fresh:
        ev = first[lid]
        dec = decisions.get(ev.merchant or "")
        if dec is None:
            raise ImportRefused(
                f"line {ev.line}: merchant {ev.merchant} has no line decision",
                code="UNKNOWN_MERCHANT",
                line=ev.line,
            )
        loan_rows.append(
            {
                "loan_id": lid,
                "merchant_id": ev.merchant,
                "currency": currency,
                "rate_bp": ev.rate_bp if ev.rate_bp is not None else default_rate_bp,
                "decision_id": dec[0],
                "line_f": dec[1],
                "line_with": dec[2],
                "line_limit": dec[2],
                "frozen": False,
                "attribution": dec[3],
                "opened_on": ev.day,
            }
        )
    # Replay the open periods' stored and new rows in date order on each loan's position
    # at the last close, as the month closes will: a repayment pays due interest first, a
    # write-off takes principal only; no step may take the principal below zero. A
    # recovery moves no principal: it needs an earlier write-off and room under what was
    # written off (principal, and interest at closed month ends) less earlier recoveries.
    open_from = Period(last_closed).next.first if last_closed is not None else None
    position, replay = _positions(session, [lid for lid in loan_ids if lid in known], open_from)
    stored = bool(replay)
    replay += [(ev.day, ev.line, ev.loan_id, ev.kind, ev.amount) for _, ev in in_date_order]
    if stored:  # the new rows alone are in date order already
        replay.sort(key=lambda r: (r[0], r[1]))
    limits = {ev.loan_id: ev.amount for _, ev in in_date_order if ev.kind == "line_change"}
    for lid in loan_ids:  # one list per loan up front, not one per row
        if lid not in position:
            position[lid] = [0, 0, 0, 0]

    def blame(i: int, loan: str) -> int:
        """The loan's latest new row so far (a stored row never errs), else its first."""
        return next(
            (r[1] for r in reversed(replay[: i + 1]) if r[2] == loan and r[1] >= 0),
            0,
        ) or min(ev.line for _, ev in new if ev.loan_id == loan)

    for i, (day, _line, loan, kind, amount) in enumerate(replay):
        if kind == "line_change":
            continue
        pos = position[loan]
        if kind == "drawdown":
            pos[0] += amount
            continue
        if kind == "recovery":
            if not pos[3]:
                line_no = blame(i, loan)
                raise ImportRefused(
                    f"line {line_no}: loan {loan} has no write-off on or before {day}: "
                    "a recovery is cash collected on written-off money",
                    code="NOT_WRITTEN_OFF",
                    line=line_no,
                )
            pos[2] -= amount
            if pos[2] < 0:
                line_no = blame(i, loan)
                raise ImportRefused(
                    f"line {line_no}: recoveries of loan {loan} to {day} exceed what was written "
                    f"off by {-pos[2]} fen (principal written off, plus interest written off at "
                    "closed month ends, less earlier recoveries)",
                    code="RECOVERY_EXCEEDS_WRITE_OFF",
                    line=line_no,
                )
            continue
        if kind == "write_off":
            pos[2] += amount
            pos[3] = 1
        to_interest = min(amount, pos[1]) if kind == "repayment" else 0
        pos[1] -= to_interest
        pos[0] -= amount - to_interest
        if pos[0] < 0:
            line_no = blame(i, loan)
            raise ImportRefused(
                f"line {line_no}: loan {loan} would owe {pos[0]} fen on {day} (repaid or written "
                "off more than the principal and, for a repayment, the interest accrued to "
                "the last closed period)",
                code="NEGATIVE_BALANCE",
                line=line_no,
            )
    added = sorted(d for d, _ in new)
    events_digest = hashlib.sha256("\n".join(added).encode("ascii")).hexdigest()
    savepoint = session.begin_nested()  # a refusal below leaves nothing, even if the caller commits
    try:
        entry = ledger.append_entry(
            session,
            IMPORT_ENTRY,
            {
                "import_id": file_digest,
                "source": source[-255:],
                "rows": len(events),
                "added": len(new),
                "events_sha256": events_digest,
                "new_loans": len(fresh),
            },
            at=now,
        )
        copy_rows(
            session,
            "credit_loans",
            (
                "loan_id",
                "merchant_id",
                "currency",
                "rate_bp",
                "decision_id",
                "line_f",
                "line_with",
                "line_limit",
                "frozen",
                "attribution",
                "opened_on",
            ),
            [
                (
                    r["loan_id"],
                    r["merchant_id"],
                    r["currency"],
                    r["rate_bp"],
                    r["decision_id"],
                    r["line_f"],
                    r["line_with"],
                    r["line_limit"],
                    r["frozen"],
                    json.dumps(r["attribution"]),
                    r["opened_on"],
                )
                for r in loan_rows
            ],
        )
        new.sort(key=lambda x: x[1].key)  # B-tree appends in key order
        copy_rows(
            session,
            "credit_loan_events",
            ("key", "loan_id", "kind", "day", "amount", "digest", "import_id"),
            # Days as ISO text, as SQLAlchemy stores them in SQLite and COPY reads them.
            [
                (
                    ev.key,
                    ev.loan_id,
                    ev.kind,
                    _ISO.get(ev.day) or _iso(ev.day),
                    ev.amount,
                    d,
                    file_digest,
                )
                for d, ev in new
            ],
        )
        for lid, limit in limits.items():
            session.execute(update(LoanRow).where(LoanRow.loan_id == lid).values(line_limit=limit))
        session.add(
            ImportRow(
                import_id=file_digest,
                source=source[-255:],
                rows=len(events),
                added=len(new),
                events_digest=events_digest,
                imported_at=now,
                log_seq=entry.seq,
            )
        )
        session.flush()
    except IntegrityError as exc:
        savepoint.rollback()
        raise ImportRefused(
            "a key of this file was imported before under another loan (conflicting repeat)",
            code="CONFLICTING_REPEAT",
        ) from exc
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    savepoint.commit()
    return ImportSummary(
        file_digest, len(events), len(new), len(events) - len(new), len(fresh), False
    )


def import_bytes(
    session: Session, data: bytes, *, fmt: str, source: str, default_rate_bp: int, currency: str
) -> ImportSummary:
    """:func:`parse_events` then :func:`import_events`; the import id is the bytes' SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    if session.get(ImportRow, digest) is not None:
        return ImportSummary(digest, 0, 0, 0, 0, True)
    events = parse_events(data, fmt=fmt)
    return import_events(
        session,
        events,
        source=source,
        file_digest=digest,
        default_rate_bp=default_rate_bp,
        currency=currency,
    )


def events_as_jsonl(events: Iterable[Mapping[str, Any]]) -> bytes:
    """Event rows as JSON Lines bytes (what the simulator writes for ``fedgate loans import``)."""
    return b"".join(json.dumps(dict(e), separators=(",", ":")).encode() + b"\n" for e in events)
