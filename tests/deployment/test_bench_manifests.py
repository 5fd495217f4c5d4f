"""A tiny run of ``bench.manifests``: whole and streamed agree, and match the stored digest."""

from __future__ import annotations

import pytest

from bench import manifests as bench


def test_bench_smoke_run_matches_stored_digests(capsys: pytest.CaptureFixture[str]) -> None:
    """Two ISVs × 3,000 merchants, every scope and path: exit 0, a full table."""
    code = bench.main(["--isvs", "2", "--merchants", "3000", "--limit-gib", "0"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("| streamed |") == 4 and out.count("| whole |") == 4
    assert "error" not in out.split("| scope |")[1]


def test_wrong_digest_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A result that differs from the stored digest is a correctness failure: exit 1."""
    monkeypatch.setitem(bench.EXPECTED_DIGESTS, (2, 3000, "gateway"), "0" * 64)

    assert bench.main(["--isvs", "2", "--merchants", "3000", "--scopes", "gateway"]) == 1
