"""Cohort manifests: build, sign, verify, and every way a node refuses one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import OKPKey

from consent import (
    DEFAULT_CLOCK_SKEW,
    MAX_MANIFEST_TTL,
    CohortManifest,
    ConsentIntegrityError,
    InvalidConsentRequest,
    ManifestEntry,
    ManifestRejected,
    ManifestReplayGuard,
    build_manifest,
    sign_manifest,
    verify_manifest,
)
from consent._manifest import _REGISTRY, MANIFEST_TYPE, entry_line, merkle_root
from ledger import EMPTY_ROOT, canonical_json, hash_children, hash_leaf

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()


def _entry(i: int, **changes: Any) -> ManifestEntry:
    entry = ManifestEntry(
        merchant_id=f"m{i:04d}",
        consent_id=f"c-{i:04d}",
        artefact_hash=hashlib.sha256(str(i).encode()).hexdigest(),
        consent_start=NOW - timedelta(days=30),
        consent_expiry=NOW + timedelta(days=300),
        data_from=date(2025, 1, 1),
        data_to=date(2025, 12, 31),
        label=i % 2 if i % 3 else None,
        data_life_days=30 if i % 2 else None,
    )
    return dataclasses.replace(entry, **changes)


def _manifest(n: int = 5, **changes: Any) -> CohortManifest:
    args: dict[str, Any] = {
        "job_id": "job-1",
        "round": 1,
        "data_provider": "isv-a",
        "data_consumer": "lender-1",
        "purpose": "model_training",
        "categories": ["turnover", "margins"],
        "entries": [_entry(i) for i in reversed(range(n))],
        "issued_at": NOW,
        "ttl": timedelta(minutes=10),
    }
    args.update(changes)
    return build_manifest(**args)


def _verify(token: bytes, **changes: Any) -> CohortManifest:
    args: dict[str, Any] = {
        "gateway_key": KEY.public_key(),
        "data_provider": "isv-a",
        "now": NOW + timedelta(seconds=5),
        "replay_guard": ManifestReplayGuard(),
    }
    args.update(changes)
    return verify_manifest(token, **args)


def _craft(header: dict[str, Any], lines: list[bytes], typ: str = MANIFEST_TYPE) -> bytes:
    """Sign any header and lines with the real gateway key (a buggy or hostile issuer)."""
    token = jws.serialize_compact(
        {"alg": "EdDSA", "typ": typ},
        canonical_json(header),
        OKPKey.import_key(KEY),
        registry=_REGISTRY,
    ).encode()
    return b"\n".join([token, *lines])


def _header_of(token: bytes) -> dict[str, Any]:
    obj = jws.extract_compact(token.split(b"\n")[0])
    header: dict[str, Any] = json.loads(obj.payload)
    return header


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH by the recursive definition."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def test_round_trip_returns_the_built_manifest() -> None:
    """A signed manifest verifies on the node and yields exactly what was built."""
    manifest = _manifest(7)

    verified = _verify(sign_manifest(manifest, KEY))

    assert verified == manifest
    assert [e.merchant_id for e in verified.entries] == sorted(f"m{i:04d}" for i in range(7))
    assert verified.categories == ("margins", "turnover")


def test_empty_cohort_round_trips() -> None:
    """A manifest with no entries is valid and carries the empty-tree root."""
    manifest = _manifest(0)

    verified = _verify(sign_manifest(manifest, KEY))

    assert verified.entries == ()
    assert verified.root == EMPTY_ROOT.hex()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_root_is_rfc9162_over_canonical_entries(n: int) -> None:
    """The root equals the recursive RFC 9162 MTH over RFC 8785 entry bytes (ledger's hasher)."""
    manifest = _manifest(n)

    leaves = [
        hash_leaf(
            rfc8785.dumps(
                [
                    e.merchant_id,
                    e.consent_id,
                    e.artefact_hash,
                    e.consent_start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    e.consent_expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    e.data_from.isoformat(),
                    e.data_to.isoformat(),
                    e.label,
                    e.data_life_days,
                ]
            )
        )
        for e in manifest.entries
    ]

    assert manifest.root == _reference_root(leaves).hex()
    assert merkle_root(leaves) == _reference_root(leaves)


def test_build_refuses_duplicate_merchant() -> None:
    """Two entries for one merchant are refused at build time with ENTRY_INVALID."""
    with pytest.raises(InvalidConsentRequest) as info:
        _manifest(entries=[_entry(1), _entry(1, consent_id="c-other")])

    assert info.value.code == "ENTRY_INVALID"


@pytest.mark.parametrize(
    "change",
    [
        {"merchant_id": 'bad"id'},
        {"artefact_hash": "ABC"},
        {"consent_start": datetime(2026, 1, 1)},
        {"data_from": datetime(2025, 1, 1, tzinfo=UTC)},
        {"data_to": date(2024, 1, 1)},
        {"label": True},
        {"label": 2**60},
        {"consent_expiry": NOW - timedelta(days=31)},
        {"consent_start": NOW + timedelta(hours=1)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_build_refuses_bad_entry(change: dict[str, Any]) -> None:
    """Malformed entries, or consents not in force at issue time, are refused at build time."""
    with pytest.raises(InvalidConsentRequest) as info:
        _manifest(entries=[_entry(1, **change)])

    assert info.value.code == "ENTRY_INVALID"


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "marketing"},
        {"categories": ["secret_sauce"]},
        {"categories": []},
        {"round": -1},
        {"job_id": "job 1"},
        {"ttl": timedelta(days=2)},
        {"ttl": timedelta(0)},
        {"issued_at": datetime(2026, 1, 1)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_build_refuses_bad_header(change: dict[str, Any]) -> None:
    """Bad job ids, rounds, purposes, categories or validity are refused with MALFORMED."""
    with pytest.raises(InvalidConsentRequest) as info:
        _manifest(**change)

    assert info.value.code == "MALFORMED"


def test_sign_refuses_root_not_matching_entries() -> None:
    """A hand-altered manifest whose root no longer matches its entries is never signed."""
    manifest = dataclasses.replace(_manifest(3), entries=_manifest(2).entries)

    with pytest.raises(InvalidConsentRequest) as info:
        sign_manifest(manifest, KEY)

    assert info.value.code == "ROOT_MISMATCH"


def _flip(token: bytes, index: int) -> bytes:
    data = bytearray(token)
    data[index] = ord("A") if data[index] != ord("A") else ord("B")
    return bytes(data)


def _bad_tokens() -> list[tuple[str, str, Any]]:
    """(case, expected code, function of a good token) for verify-time corruptions."""
    return [
        ("wrong_key", "SIGNATURE_INVALID", None),
        ("flipped_header_byte", "SIGNATURE_INVALID", lambda t: _flip(t, 5)),
        ("flipped_payload_byte", "SIGNATURE_INVALID", lambda t: _flip(t, t.index(b".") + 20)),
        ("truncated_signature", "SIGNATURE_INVALID", lambda t: t.split(b"\n")[0][:-10]),
        ("no_signature", "SIGNATURE_INVALID", lambda t: t.split(b"\n")[0].rsplit(b".", 1)[0]),
        ("garbage", "SIGNATURE_INVALID", lambda t: b"not a manifest"),
        ("dropped_last_entry", "ROOT_MISMATCH", lambda t: t.rsplit(b"\n", 1)[0]),
        ("trailing_newline", "ROOT_MISMATCH", lambda t: t + b"\n"),
        ("tampered_label", "ROOT_MISMATCH", lambda t: t.replace(b",1,30]", b",0,30]", 1)),
        ("tampered_life", "ROOT_MISMATCH", lambda t: t.replace(b",30]", b",3000]", 1)),
        ("swapped_entries", "ROOT_MISMATCH", lambda t: _swap_last_two(t)),
    ]


def _swap_last_two(token: bytes) -> bytes:
    parts = token.split(b"\n")
    parts[-1], parts[-2] = parts[-2], parts[-1]
    return b"\n".join(parts)


@pytest.mark.parametrize(("case", "code", "mutate"), _bad_tokens(), ids=lambda v: str(v))
def test_corrupted_token_is_refused(case: str, code: str, mutate: Any) -> None:
    """Forged, truncated or tampered tokens are refused with their code and not recorded."""
    token = sign_manifest(_manifest(5), KEY)
    guard = ManifestReplayGuard()
    key = Ed25519PrivateKey.generate().public_key() if case == "wrong_key" else KEY.public_key()
    bad = token if mutate is None else mutate(token)

    with pytest.raises(ManifestRejected) as info:
        _verify(bad, gateway_key=key, replay_guard=guard)

    assert info.value.code == code
    assert len(guard) == 0


def test_wrong_provider_is_refused() -> None:
    """A manifest addressed to another ISV is refused with WRONG_PROVIDER."""
    token = sign_manifest(_manifest(2), KEY)

    with pytest.raises(ManifestRejected) as info:
        _verify(token, data_provider="isv-b")

    assert info.value.code == "WRONG_PROVIDER"


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (timedelta(minutes=10) + DEFAULT_CLOCK_SKEW + timedelta(microseconds=1), "EXPIRED"),
        (timedelta(minutes=10) + DEFAULT_CLOCK_SKEW, None),
        (-DEFAULT_CLOCK_SKEW, None),
        (-DEFAULT_CLOCK_SKEW - timedelta(microseconds=1), "NOT_YET_VALID"),
    ],
    ids=["stale", "stale_within_skew", "early_within_skew", "early"],
)
def test_validity_window_with_skew(offset: timedelta, code: str | None) -> None:
    """The node accepts within the stated skew of [issued_at, valid_until] and refuses outside."""
    token = sign_manifest(_manifest(2), KEY)
    now = NOW + offset

    if code is None:
        assert _verify(token, now=now).job_id == "job-1"
    else:
        with pytest.raises(ManifestRejected) as info:
            _verify(token, now=now)
        assert info.value.code == code


def test_entry_expired_on_node_clock_is_refused() -> None:
    """An entry whose consent ended before the node's now is refused, skew notwithstanding."""
    lines = [_line(1), _line(2, consent_expiry=NOW + timedelta(minutes=1))]
    token = _craft(_good_header(lines), lines)  # a buggy gateway: build would leave it out

    with pytest.raises(ManifestRejected) as info:
        _verify(token, now=NOW + timedelta(minutes=1))

    assert info.value.code == "ENTRY_INVALID"


@pytest.mark.parametrize(
    ("expiry", "valid_until"),
    [
        (NOW + timedelta(minutes=1), NOW + timedelta(minutes=1)),
        (NOW + timedelta(minutes=10), NOW + timedelta(minutes=10)),
        (NOW + timedelta(minutes=11), NOW + timedelta(minutes=10)),
    ],
    ids=["lapses_mid_round", "lapses_at_ttl", "outlives_ttl"],
)
def test_manifest_never_outlives_a_consent_it_lists(
    expiry: datetime, valid_until: datetime
) -> None:
    """valid_until is the earlier of issued_at + ttl and the first consent expiry; all kept."""
    entries = [_entry(1), _entry(2, consent_expiry=expiry), _entry(3)]

    manifest = _manifest(entries=entries)
    token = sign_manifest(manifest, KEY)
    last_moment = _verify(token, now=manifest.valid_until - timedelta(microseconds=1))

    assert manifest.valid_until == valid_until
    assert [e.merchant_id for e in manifest.entries] == ["m0001", "m0002", "m0003"]
    assert last_moment == manifest


def test_lapsed_consent_makes_the_clamped_manifest_unusable() -> None:
    """Past its first consent's expiry a manifest is refused: that consent gets no skew."""
    manifest = _manifest(entries=[_entry(1), _entry(2, consent_expiry=NOW + timedelta(minutes=1))])
    token = sign_manifest(manifest, KEY)

    with pytest.raises(ManifestRejected) as lapsed:
        _verify(token, now=manifest.valid_until)
    with pytest.raises(ManifestRejected) as expired:
        _verify(token, now=manifest.valid_until + DEFAULT_CLOCK_SKEW + timedelta(microseconds=1))

    assert (lapsed.value.code, expired.value.code) == ("ENTRY_INVALID", "EXPIRED")


def test_signed_validity_window_over_max_ttl_is_refused() -> None:
    """A header whose window exceeds MAX_MANIFEST_TTL is MALFORMED even if signed."""
    header = _good_header([], valid_until="2026-11-29T12:00:00.000001Z")  # 24 h + 1 µs

    with pytest.raises(ManifestRejected) as info:
        _verify(_craft(header, []))

    assert info.value.code == "MALFORMED"


def test_sign_refuses_hand_built_manifest_over_max_ttl() -> None:
    """A manifest altered to outlive MAX_MANIFEST_TTL is never signed."""
    manifest = _manifest(2)
    stretched = dataclasses.replace(
        manifest, valid_until=manifest.issued_at + MAX_MANIFEST_TTL + timedelta(seconds=1)
    )

    with pytest.raises(InvalidConsentRequest) as info:
        sign_manifest(stretched, KEY)

    assert info.value.code == "MALFORMED"


def test_replay_with_other_content_is_refused_same_content_accepted() -> None:
    """Same job+round again: identical bytes re-deliver, different content is REPLAYED."""
    guard = ManifestReplayGuard()
    first = sign_manifest(_manifest(3), KEY)
    other = sign_manifest(_manifest(4), KEY)
    _verify(first, replay_guard=guard)

    again = _verify(first, replay_guard=guard)
    with pytest.raises(ManifestRejected) as info:
        _verify(other, replay_guard=guard)

    assert again.round == 1
    assert info.value.code == "REPLAYED"
    assert _verify(sign_manifest(_manifest(4, round=2), KEY), replay_guard=guard).round == 2


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "credit_scoring"},
        {"categories": ["margins"]},
        {"data_consumer": "lender-2"},
        {"ttl": timedelta(minutes=11)},
        {"issued_at": NOW + timedelta(seconds=1)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_same_entries_with_other_header_is_replayed(change: dict[str, Any]) -> None:
    """Same job, round and entries (so the same root) but another signed header: REPLAYED."""
    guard = ManifestReplayGuard()
    first, second = _manifest(3), _manifest(3, **change)
    _verify(sign_manifest(first, KEY), replay_guard=guard)

    with pytest.raises(ManifestRejected) as info:
        _verify(sign_manifest(second, KEY), replay_guard=guard)

    assert second.root == first.root
    assert info.value.code == "REPLAYED"


def test_round_below_the_highest_accepted_is_stale() -> None:
    """Round 1 after round 2 is STALE_ROUND even inside its window; a new job starts afresh."""
    guard = ManifestReplayGuard()
    round1, round2 = sign_manifest(_manifest(3), KEY), sign_manifest(_manifest(3, round=2), KEY)
    _verify(round1, replay_guard=guard)
    _verify(round2, replay_guard=guard)

    with pytest.raises(ManifestRejected) as info:
        _verify(round1, replay_guard=guard)
    other_job = _verify(sign_manifest(_manifest(3, job_id="job-2"), KEY), replay_guard=guard)

    assert info.value.code == "STALE_ROUND"
    assert guard.highest_round("job-1") == 2
    assert other_job.round == 1


def test_replay_guard_persists_across_restarts(tmp_path: Path) -> None:
    """A file-backed guard remembers accepted rounds after the node restarts."""
    path = tmp_path / "node" / "manifests.jsonl"
    _verify(sign_manifest(_manifest(3, round=2), KEY), replay_guard=ManifestReplayGuard(path))

    restarted = ManifestReplayGuard(path)
    with pytest.raises(ManifestRejected) as replayed:
        _verify(sign_manifest(_manifest(4, round=2), KEY), replay_guard=restarted)
    with pytest.raises(ManifestRejected) as stale:
        _verify(sign_manifest(_manifest(4), KEY), replay_guard=restarted)

    assert (replayed.value.code, stale.value.code) == ("REPLAYED", "STALE_ROUND")
    assert len(restarted) == 1


def test_guards_sharing_a_file_see_each_others_rounds(tmp_path: Path) -> None:
    """Two processes' guards on one file: what one accepts, the other refuses to go back on."""
    path = tmp_path / "manifests.jsonl"
    worker_a, worker_b = ManifestReplayGuard(path), ManifestReplayGuard(path)
    _verify(sign_manifest(_manifest(3, round=2), KEY), replay_guard=worker_a)

    with pytest.raises(ManifestRejected) as info:
        _verify(sign_manifest(_manifest(3), KEY), replay_guard=worker_b)

    assert info.value.code == "STALE_ROUND"
    assert path.read_text().count("\n") == 1


def test_replay_guard_reads_legacy_lines(tmp_path: Path) -> None:
    """A pre-digest ``[job, round, root]`` line still counts: its round and older are refused."""
    path = tmp_path / "manifests.jsonl"
    path.write_text(json.dumps(["job-1", 2, "ab" * 32]) + "\n")
    guard = ManifestReplayGuard(path)

    codes = []
    for round_ in (1, 2):
        with pytest.raises(ManifestRejected) as info:
            _verify(sign_manifest(_manifest(3, round=round_), KEY), replay_guard=guard)
        codes.append(info.value.code)

    assert codes == ["STALE_ROUND", "REPLAYED"]
    assert _verify(sign_manifest(_manifest(3, round=3), KEY), replay_guard=guard).round == 3


@pytest.mark.parametrize(
    "line",
    ['{"job_id": "job-1", "round": 1}', '["job-1", "1", "ab"]', "not json", '{"x": 1}'],
)
def test_corrupt_replay_guard_file_is_an_integrity_error(tmp_path: Path, line: str) -> None:
    """A line the guard did not write stops the node rather than being skipped."""
    path = tmp_path / "manifests.jsonl"
    path.write_text(line + "\n")

    with pytest.raises(ConsentIntegrityError):
        ManifestReplayGuard(path)


def _good_header(lines: list[bytes], **changes: Any) -> dict[str, Any]:
    header = _header_of(sign_manifest(_manifest(0), KEY))
    header.update(count=len(lines), root=merkle_root([hash_leaf(x) for x in lines]).hex())
    header.update(changes)
    return header


def _line(i: int, **changes: Any) -> bytes:
    return entry_line(_entry(i, **changes))


@pytest.mark.parametrize(
    ("case", "lines"),
    [
        ("duplicate_merchant", [_line(1), _line(1, consent_id="c-x")]),
        ("unsorted", [_line(2), _line(1)]),
        ("whitespace", [_line(1).replace(b",", b", ", 1)]),
        ("keyed_object_v1", [rfc8785.dumps({"merchant_id": "m0001", "label": 1})]),
        ("escaped_id", [_line(1).replace(b'"m0001"', b'"m\\u0030001"')]),
        ("month_13", [_line(1).replace(b"2025-12-31", b"2025-13-31")]),
        ("to_before_from", [_line(1).replace(b"2025-12-31", b"2024-12-31")]),
        ("non_ascii", [_line(1).replace(b"m0001", "m\u00e9".encode())]),
        ("empty_line", [_line(1), b""]),
        ("float_label", [_line(1).replace(b",1,30]", b",1.0,30]")]),
        ("negative_life", [_line(1).replace(b",30]", b",-30]")]),
        ("zero_padded_life", [_line(1).replace(b",30]", b",030]")]),
        ("extra_field", [_line(1).replace(b",30]", b",30,1]")]),
        ("missing_field", [_line(1).replace(b",1,30]", b",1]")]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_signed_but_malformed_entry_is_refused(case: str, lines: list[bytes]) -> None:
    """Entries that are signed and root-consistent but not well formed are ENTRY_INVALID."""
    token = _craft(_good_header(lines), lines)

    with pytest.raises(ManifestRejected) as info:
        _verify(token)

    assert info.value.code == "ENTRY_INVALID", case


@pytest.mark.parametrize(
    "change",
    [
        {"v": 1},
        {"purpose": "marketing"},
        {"categories": ["turnover", "margins"]},
        {"round": -1},
        {"issued_at": "2026-11-28T12:00:00Z"},
        {"valid_until": "2026-11-28T11:00:00.000000Z"},
        {"root": "XYZ"},
        {"extra": 1},
        {"valid_until": "2026-11-29T12:00:01.000000Z"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_signed_but_malformed_header_is_refused(change: dict[str, Any]) -> None:
    """A header with a bad field, even signed by the gateway key, is MALFORMED."""
    token = _craft(_good_header([], **change), [])

    with pytest.raises(ManifestRejected) as info:
        _verify(token)

    assert info.value.code == "MALFORMED"


def test_other_token_type_is_refused() -> None:
    """A JWS of another type (a consent artefact, say) signed by the same key is MALFORMED."""
    token = _craft(_good_header([]), [], typ="fedgate-consent+jws")

    with pytest.raises(ManifestRejected) as info:
        _verify(token)

    assert info.value.code == "MALFORMED"
