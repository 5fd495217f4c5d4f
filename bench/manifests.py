"""Manifest memory benchmark (issue 11 §3 Scale): whole signed manifests vs streamed chunks.

Run ``python -m bench.manifests`` (default 10 ISVs × 10⁶ merchants each; several
minutes on 2 cores; ``--isvs``/``--merchants`` to change, ``--old-merchants`` to run
the whole-manifest peer at a smaller size when the full one does not fit).

Each row runs in a fresh Python process and reports that process's peak RSS
(``getrusage`` ``ru_maxrss``) and wall time. Four scopes, each for both paths:

* **gateway**: build and sign one manifest per ISV for a round and hold what the
  round holds until the replies are in. Whole (peer): the cohort list of
  :class:`consent.ManifestEntry` per ISV (what the cohort check returns), then
  :func:`consent.build_manifest` + :func:`consent.sign_manifest`, the signed bytes
  of every ISV held. Streamed: :func:`consent.stream_manifest` reading each cohort
  once from a generator over compact columns, holding per ISV only the chunk
  hashes and an unlinked spool file.
* **node**: one ISV's node verifying its manifest. Whole: :func:`consent.verify_manifest`
  (the verified manifest with every entry is what the handlers get). Streamed:
  :func:`consent.open_stream` + ``accept`` per chunk + ``finish``, keeping the
  accepted merchant ids as one numpy bytes array (what row selection needs).
* **one machine**: the gateway and every node in one process, as the simulation
  runtime runs them (all nodes' cohorts held at once; the streamed path sends chunk
  ``i`` of every node in turn).
* **spool**: one node loading its finished stream from its
  spool for the handlers, as every data message does. Whole (peer): the spool parsed
  into :class:`consent.ManifestEntry` objects at once (:func:`consent._entries.parse_entries`,
  what the node did before). Streamed: :func:`consent.parse_entry_table`, the same
  checks a batch at a time into an :class:`consent.EntryTable`; then one pass over
  the entries (what ``load_cohort`` does) on both paths.

Every run folds each ISV's verified ``(root, count, first id, last id)`` into a
digest; the whole and streamed runs of one size must give the same digest (the same
Merkle root), so a fast wrong run fails. Sizes beyond what a peer can run are
refused by an address-space limit (``--limit-gib``) rather than by the OOM killer,
and reported as such.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent import (
    DEFAULT_CLOCK_SKEW,
    ManifestEntry,
    ManifestReplayGuard,
    build_manifest,
    open_stream,
    parse_entry_table,
    sign_manifest,
    stream_manifest,
    verify_manifest,
)
from consent._entries import encode_entries, parse_entries

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
START, EXPIRY = NOW - timedelta(days=30), NOW + timedelta(days=300)
FROM, TO = date(2025, 1, 1), date(2025, 12, 31)
_POOL = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4096)]
GIB = 1024**3

EXPECTED_DIGESTS: dict[tuple[int, int, str], str] = {
    (2, 3000, "gateway"): "e3535ee3374966990b2eeb0a049ea9fd359ebc1b95f9d9f2cc3d26defad62c94",
    (2, 3000, "node"): "4927d84d47bf0e912cf1e56eda9817e20c952bee1489cf04cc3bb807ad2d1fb7",
    (2, 3000, "machine"): "e3535ee3374966990b2eeb0a049ea9fd359ebc1b95f9d9f2cc3d26defad62c94",
    (2, 3000, "spool"): "15ff97199acc151dbade3e4178d5025bfb67ab7b4d31c15693f45e15178deb9a",
}
"""Stored digests of the smoke size (ISVs, merchants, scope): fixed inputs, fixed roots."""


def cohort(isv: int, n: int) -> Iterator[ManifestEntry]:
    """ISV ``isv``'s ``n`` consented merchants in id order, made on the fly (no list held)."""
    for i in range(n):
        yield ManifestEntry(
            merchant_id=f"isv{isv:02d}-m{i:08d}",
            consent_id=f"c-{isv:02d}-{i:08d}",
            artefact_hash=_POOL[i % 4096],
            consent_start=START,
            consent_expiry=EXPIRY,
            data_from=FROM,
            data_to=TO,
            label=i % 2,
            data_life_days=365,
        )


def _header(isv: int) -> dict[str, Any]:
    return {
        "job_id": "bench-job",
        "round": 1,
        "data_provider": f"isv{isv:02d}",
        "data_consumer": "lender",
        "purpose": "model_training",
        "categories": ["margins", "turnover"],
        "issued_at": NOW,
        "ttl": timedelta(minutes=15),
    }


def _verify_args(isv: int) -> dict[str, Any]:
    return {
        "data_provider": f"isv{isv:02d}",
        "now": NOW + timedelta(seconds=1),
        "replay_guard": ManifestReplayGuard(),
    }


def _fold(digest: Any, root: str, count: int, first: str, last: str) -> None:
    digest.update(f"{root} {count} {first} {last}\n".encode())


# --- one measurement (runs in a child process) -----------------------------------------


_LOAD_SECONDS: list[float] = []


def _spool(n: int, columns: bool) -> str:
    """Write ISV 0's verified entry lines, then load them as the node's handlers get them."""
    from pathlib import Path

    path = Path(f"/tmp/bench-manifests-{os.getpid()}.lines")
    with path.open("wb") as fh:
        batch: list[ManifestEntry] = []
        for i, entry in enumerate(cohort(0, n)):
            batch.append(entry)
            if len(batch) == 65_536 or i == n - 1:
                fh.write((b"\n" if fh.tell() else b"") + b"\n".join(encode_entries(batch)))
                batch = []
    _reset_peak()
    started = time.perf_counter()
    now = NOW + timedelta(seconds=1)
    entries = (
        parse_entry_table(path, n, now, DEFAULT_CLOCK_SKEW)
        if columns
        else parse_entries(path.read_bytes(), n, now, DEFAULT_CLOCK_SKEW)
    )
    path.unlink()
    digest = hashlib.sha256()
    first = last = ""
    labelled = 0
    for e in entries:  # what load_cohort reads of every entry
        first, last = first or e.merchant_id, e.merchant_id
        labelled += e.label is not None and e.consent_start <= now < e.consent_expiry
    _fold(digest, f"labelled {labelled}", len(entries), first, last)
    _LOAD_SECONDS.append(time.perf_counter() - started)  # the spool's writing is not the node's
    return digest.hexdigest()


def _whole(scope: str, isvs: int, n: int, key: Ed25519PrivateKey) -> str:
    if scope == "spool":
        return _spool(n, columns=False)
    digest = hashlib.sha256()
    signed: list[bytes] = []
    if scope in ("gateway", "machine"):
        for isv in range(isvs):
            entries = list(cohort(isv, n))  # what the cohort check hands the round
            manifest = build_manifest(**_header(isv), entries=entries)
            signed.append(sign_manifest(manifest, key))
            del entries, manifest
        if scope == "gateway":
            for isv, token in enumerate(signed):
                _fold(digest, _root_of(token), n, f"isv{isv:02d}-m{0:08d}", _last(isv, n))
            return digest.hexdigest()
    else:  # node: its token arrives (bytes on the wire), built outside the measurement
        signed.append(_token_for_node(n, key))
    held = []
    for isv, token in enumerate(signed):
        manifest = verify_manifest(token, gateway_key=key.public_key(), **_verify_args(isv))
        held.append(manifest)  # every node's cohort is in use during the round
        ids = [manifest.entries[0].merchant_id, manifest.entries[-1].merchant_id] if n else ["", ""]
        _fold(digest, manifest.root, len(manifest.entries), *ids)
    return digest.hexdigest()


def _streamed(scope: str, isvs: int, n: int, key: Ed25519PrivateKey) -> str:
    if scope == "spool":
        return _spool(n, columns=True)
    digest = hashlib.sha256()
    count = isvs if scope != "node" else 1
    streams = [
        stream_manifest(**_header(isv), entries=cohort(isv, n), key=key) for isv in range(count)
    ]
    if scope == "gateway":
        for isv, s in enumerate(streams):
            _fold(digest, s.root, s.count, f"isv{isv:02d}-m{0:08d}", _last(isv, n))
        return digest.hexdigest()
    if scope == "node":
        # The node's process holds only what arrives; measure it apart from the builder.
        return _node_streamed(streams[0], key, digest)
    verifiers = [
        open_stream(s.header, gateway_key=key.public_key(), **_verify_args(isv))
        for isv, s in enumerate(streams)
    ]
    kept: list[list[np.ndarray]] = [[] for _ in streams]
    for index in range(max(s.chunks for s in streams)):  # chunk i of every node in turn
        for isv, (s, v) in enumerate(zip(streams, verifiers, strict=True)):
            if index < s.chunks:
                entries = v.accept(s.chunk(index))
                kept[isv].append(np.array([e.merchant_id for e in entries], dtype=np.bytes_))
    for isv, v in enumerate(verifiers):
        manifest = v.finish()
        ids = np.concatenate(kept[isv]) if kept[isv] else np.empty(0, np.bytes_)
        kept[isv] = [ids]
        _fold(digest, manifest.root, int(ids.size), _text(ids, 0), _text(ids, -1))
    return digest.hexdigest()


def _node_streamed(stream: Any, key: Ed25519PrivateKey, digest: Any) -> str:
    # Chunks to a file first (what arrives over the network), then the node verifies
    # them after the builder is gone, so its peak is the node's alone.
    path = f"/tmp/bench-manifests-{os.getpid()}.chunks"
    header = stream.header
    with open(path, "wb") as fh:
        for chunk in stream:
            fh.write(len(chunk).to_bytes(8, "big") + chunk)
    stream.close()
    del stream
    _reset_peak()
    verifier = open_stream(header, gateway_key=key.public_key(), **_verify_args(0))
    kept: list[np.ndarray] = []
    with open(path, "rb") as fh:
        while size := fh.read(8):
            entries = verifier.accept(fh.read(int.from_bytes(size, "big")))
            kept.append(np.array([e.merchant_id for e in entries], dtype=np.bytes_))
    os.unlink(path)
    manifest = verifier.finish()
    ids = np.concatenate(kept) if kept else np.empty(0, np.bytes_)
    _fold(digest, manifest.root, int(ids.size), _text(ids, 0), _text(ids, -1))
    return digest.hexdigest()


def _token_for_node(n: int, key: Ed25519PrivateKey) -> bytes:
    """Build the node's whole manifest in a grandchild, so the builder's peak is not counted."""
    code = (
        "import sys;from bench.manifests import _header,build_manifest,cohort,sign_manifest;"
        "from cryptography.hazmat.primitives "
        "import serialization as s;k=s.load_pem_private_key(sys.stdin.buffer.read(),None);"
        f"m=build_manifest(**_header(0),entries=list(cohort(0,{n})));"
        "sys.stdout.buffer.write(sign_manifest(m,k))"
    )
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return subprocess.run(
        [sys.executable, "-c", code], input=pem, capture_output=True, check=True
    ).stdout


def _reset_peak() -> None:
    """Linux: reset the process's peak RSS so the node's verification is measured alone."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """Peak RSS in bytes: VmHWM (resettable) where Linux has it, else ru_maxrss."""
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _text(ids: np.ndarray, at: int) -> str:
    return ids[at].decode() if ids.size else ""


def _last(isv: int, n: int) -> str:
    return f"isv{isv:02d}-m{n - 1:08d}" if n else ""


def _root_of(token: bytes) -> str:
    import base64

    payload = token.split(b"\n", 1)[0].split(b".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))["root"])


def _child(path: str, scope: str, isvs: int, n: int, limit_gib: float) -> None:
    if limit_gib > 0:
        cap = int(limit_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    key = Ed25519PrivateKey.generate()
    run = _whole if path == "whole" else _streamed
    t0 = time.perf_counter()
    try:
        digest = run(scope, isvs, n, key)
    except MemoryError:
        print(json.dumps({"error": f"MemoryError under a {limit_gib:g} GiB address-space cap"}))
        return
    seconds = _LOAD_SECONDS[-1] if _LOAD_SECONDS else time.perf_counter() - t0
    print(json.dumps({"peak": _peak_rss(), "seconds": seconds, "digest": digest}))


# --- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One measured row: scope, path, size, peak RSS (GiB), seconds, digest or error."""

    scope: str
    path: str
    isvs: int
    merchants: int
    peak_gib: float | None
    seconds: float | None
    digest: str
    error: str = ""


def _measure(path: str, scope: str, isvs: int, n: int, limit_gib: float) -> Row:
    out = subprocess.run(
        [sys.executable, "-m", "bench.manifests", "--child", path, scope,
         "--isvs", str(isvs), "--merchants", str(n), "--limit-gib", str(limit_gib)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        got = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        got = {"error": f"exit {out.returncode}: {out.stderr.strip()[-300:]}"}
    shown = 1 if scope in ("node", "spool") else isvs  # a node verifies its own ISV's manifest only
    if "error" in got:
        return Row(scope, path, shown, n, None, None, "", got["error"])
    return Row(scope, path, shown, n, got["peak"] / GIB, got["seconds"], got["digest"])


def main(argv: list[str] | None = None) -> int:
    """Run the rows and print the table; exit 1 when whole and streamed digests differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isvs", type=int, default=10)
    parser.add_argument("--merchants", type=int, default=1_000_000, help="per ISV")
    parser.add_argument("--old-merchants", type=int, default=None,
                        help="per ISV for the whole-manifest peer (default: --merchants)")
    parser.add_argument("--scopes", default="gateway,node,machine,spool")
    parser.add_argument("--limit-gib", type=float, default=14.0,
                        help="address-space cap per child (0: none)")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "SCOPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)  # fmt: skip
    if args.child:
        _child(args.child[0], args.child[1], args.isvs, args.merchants, args.limit_gib)
        return 0
    old_n = args.old_merchants or args.merchants
    rows: list[Row] = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    for scope in args.scopes.split(","):
        for path, n in (("whole", old_n), ("streamed", args.merchants)):
            if old_n != args.merchants and path == "streamed":
                rows.append(_measure(path, scope, args.isvs, old_n, args.limit_gib))
                print(rows[-1], flush=True)
            rows.append(_measure(path, scope, args.isvs, n, args.limit_gib))
            print(rows[-1], flush=True)
    print(f"load average after: {os.getloadavg()}")
    print()
    print("| scope | path | ISVs × merchants | peak RSS (GiB) | s | vs whole, same size |")
    print("|---|---|---|---:|---:|---:|")
    bad = False
    for row in rows:
        peer = next(
            (r for r in rows if r.scope == row.scope and r.path == "whole"
             and r.merchants == row.merchants and r.peak_gib),
            None,
        )  # fmt: skip
        if peer and row.digest and peer.digest != row.digest:
            bad = True
        stored = EXPECTED_DIGESTS.get((args.isvs, row.merchants, row.scope))
        if stored is not None and row.digest != stored:
            bad = True
        ratio = f"{row.peak_gib / peer.peak_gib:.2f}×" if peer and row.peak_gib else "—"
        peak = f"{row.peak_gib:.2f}" if row.peak_gib is not None else row.error
        secs = f"{row.seconds:.1f}" if row.seconds is not None else "—"
        print(f"| {row.scope} | {row.path} | {row.isvs} × {row.merchants:,} | {peak} | {secs} "
              f"| {ratio} |")  # fmt: skip
    if bad:
        print("DIGEST MISMATCH: whole and streamed manifests disagree, or differ from the "
              "stored digest", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
