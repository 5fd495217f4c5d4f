"""`loans import`: idempotent, all or nothing, clear errors with line numbers (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway import credit
from gateway.credit._models import LoanEventRow, LoanRow

from .._entries import entries_of_kind
from ._helpers import decide, event, import_rows, merchant, setup_book


def _state(s: Session) -> tuple[int, int, int]:
    return (
        s.execute(select(func.count()).select_from(LoanEventRow)).scalar_one(),
        s.execute(select(func.count()).select_from(LoanRow)).scalar_one(),
        len(entries_of_kind(s, credit.IMPORT_ENTRY)),
    )


@pytest.fixture
def decided(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Two merchants with lines."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        decide(
            s,
            v,
            pol,
            [merchant("m1", 600_000_00, 0.06, 0.03), merchant("m2", 600_000_00, 0.06, None)],
        )
    return sessions


ROWS = [
    event("e1", "L1", "drawdown", "2026-07-01", 1_000_000, merchant="m1"),
    event("e2", "L1", "repayment", "2026-07-11", 400_000),
    event("e3", "L2", "drawdown", "2026-07-05", 500_000, merchant="m2", rate_bp=1500),
]


def test_import_then_repeat_is_a_no_op(decided: sessionmaker[Session]) -> None:
    """The same file twice, and the same rows in another file, add nothing the second time."""
    with decided() as s, s.begin():
        first = import_rows(s, ROWS)
        again = import_rows(s, ROWS)
        reordered = import_rows(s, list(reversed(ROWS)))
        state = _state(s)
        l2 = s.get(LoanRow, "L2")

    assert (first.added, first.new_loans) == (3, 2)
    assert again.already_imported
    assert (reordered.added, reordered.repeated, reordered.already_imported) == (0, 3, False)
    assert state == (3, 2, 2)
    assert l2 is not None and l2.rate_bp == 1500 and l2.line_f == l2.line_with == 15_000_000


def test_csv_import_matches_jsonl(decided: sessionmaker[Session]) -> None:
    """A CSV with a header imports the same events; the JSONL of the same rows is then a repeat."""
    csv_text = (
        "key,loan_id,merchant,kind,date,amount,currency,rate_bp\n"
        "e1,L1,m1,drawdown,2026-07-01,1000000,CNY,\n"
        "e2,L1,,repayment,2026-07-11,400000,CNY,\n"
        "e3,L2,m2,drawdown,2026-07-05,500000,CNY,1500\n"
    )
    with decided() as s, s.begin():
        r = credit.import_bytes(
            s, csv_text.encode(), fmt="csv", source="x.csv", default_rate_bp=1800, currency="CNY"
        )
        again = import_rows(s, ROWS)

    assert r.added == 3
    assert (again.added, again.repeated) == (0, 3)


def test_conflicting_repeat_is_refused(decided: sessionmaker[Session]) -> None:
    """A known key with another amount refuses the whole file, naming the line."""
    with decided() as s, s.begin():
        import_rows(s, ROWS)
    before = None
    with decided() as s, s.begin():
        before = _state(s)
    bad = [event("e9", "L1", "drawdown", "2026-07-20", 5), {**ROWS[1], "amount": 400_001}]

    with decided() as s, s.begin(), pytest.raises(credit.ImportRefused) as err:
        import_rows(s, bad)
    with decided() as s, s.begin():
        after = _state(s)

    assert (err.value.code, err.value.line) == ("CONFLICTING_REPEAT", 2)
    assert after == before


@pytest.mark.parametrize(
    ("line", "text", "code", "bad_line"),
    [
        (
            2,
            '{"key":"b","loan_id":"L1","kind":"drawdown","date":"2026-13-01","amount":5,'
            '"currency":"CNY"}',
            "BAD_ROW",
            2,
        ),
        (3, "not json", "BAD_ROW", 3),
        (
            2,
            '{"key":"b","loan_id":"L1","kind":"gift","date":"2026-07-02","amount":5,'
            '"currency":"CNY"}',
            "BAD_ROW",
            2,
        ),
        (
            2,
            '{"key":"b","loan_id":"L1","kind":"drawdown","date":"2026-07-02","amount":1.5,'
            '"currency":"CNY"}',
            "BAD_ROW",
            2,
        ),
        (
            2,
            '{"key":"b","loan_id":"L1","kind":"drawdown","date":"2026-07-02","amount":5,'
            '"currency":"USD"}',
            "BAD_ROW",
            2,
        ),
        (
            2,
            '{"key":"b","loan_id":"L9","kind":"drawdown","date":"2026-07-02","amount":5,'
            '"currency":"CNY","merchant":"ghost"}',
            "UNKNOWN_MERCHANT",
            2,
        ),
        (
            2,
            '{"key":"b","loan_id":"L1","kind":"repayment","date":"2026-07-02",'
            '"amount":99999999,"currency":"CNY"}',
            "NEGATIVE_BALANCE",
            2,
        ),
        # Ids that are not strings (unhashable ones too) and a bad id after good rows.
        (
            2,
            '{"key":"b","loan_id":["L1"],"kind":"drawdown","date":"2026-07-02","amount":5,'
            '"currency":"CNY"}',
            "BAD_ROW",
            2,
        ),
        (
            3,
            '{"key":"b","loan_id":"L1","kind":"drawdown","date":"2026-07-02","amount":5,'
            '"currency":"CNY","merchant":{"m":1}}',
            "BAD_ROW",
            3,
        ),
        (
            3,
            '{"key":"b","loan_id":"L 1","kind":"drawdown","date":"2026-07-02","amount":5,'
            '"currency":"CNY"}',
            "BAD_ROW",
            3,
        ),
        # Trailing text after the object: not one JSON value.
        (
            2,
            '{"key":"b","loan_id":"L1","kind":"drawdown","date":"2026-07-02","amount":5,'
            '"currency":"CNY"} {}',
            "BAD_ROW",
            2,
        ),
    ],
)
def test_bad_row_refuses_the_whole_file(
    decided: sessionmaker[Session], line: int, text: str, code: str, bad_line: int
) -> None:
    """A bad row anywhere keeps nothing of the file and reports its line number."""
    lines = [
        credit.events_as_jsonl([ROWS[0]]).decode().strip(),
        credit.events_as_jsonl([ROWS[2]]).decode().strip(),
    ]
    lines.insert(line - 1, text)
    with decided() as s, s.begin(), pytest.raises(credit.ImportRefused) as err:
        credit.import_bytes(
            s,
            ("\n".join(lines) + "\n").encode(),
            fmt="jsonl",
            source="x",
            default_rate_bp=1800,
            currency="CNY",
        )
    with decided() as s, s.begin():
        state = _state(s)

    assert (err.value.code, err.value.line) == (code, bad_line)
    assert state == (0, 0, 0)


def test_events_in_a_closed_period_are_refused(decided: sessionmaker[Session]) -> None:
    """Once July is closed, a row dated in July is refused; August is accepted."""
    with decided() as s, s.begin():
        import_rows(s, ROWS)
        credit.close_period(s, credit.parse_period("2026-07"), currency="CNY", policy_version=1)
        with pytest.raises(credit.ImportRefused) as err:
            import_rows(s, [event("late", "L1", "repayment", "2026-07-30", 1)])
        ok = import_rows(s, [event("aug", "L1", "repayment", "2026-08-02", 1)])

    assert err.value.code == "PERIOD_CLOSED"
    assert ok.added == 1


def test_key_reused_under_another_loan_is_refused(decided: sessionmaker[Session]) -> None:
    """A known key sent again under a different loan is a conflicting repeat; nothing is kept."""
    with decided() as s, s.begin():
        import_rows(s, ROWS)
    with decided() as s, s.begin(), pytest.raises(credit.ImportRefused) as err:
        import_rows(
            s,
            [
                event("e1", "L2", "drawdown", "2026-07-02", 7, merchant="m2"),
                event("e7", "L2", "drawdown", "2026-07-03", 7),
            ],
        )
    with decided() as s, s.begin():
        state = _state(s)

    assert err.value.code == "CONFLICTING_REPEAT"
    assert state == (3, 2, 1)
