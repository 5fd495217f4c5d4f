"""A C2SP tlog-witness (https://c2sp.org/tlog-witness): pure logic over a state folder.

The witness trusts a fixed set of logs (origin → the log's verifier key) and
keeps, per origin, the latest checkpoint it cosigned. ``add-checkpoint``
requests (built by :func:`add_checkpoint_body`) are answered exactly as the
spec says; HTTP itself lives in ``gateway.witness``, which maps a
:class:`WitnessReply` to a response one to one.

=======  ======================  ==============================================
status   code                    when
=======  ======================  ==============================================
200      ``OK``                  consistent extension (or the same checkpoint):
                                 body = cosignature line(s)
400      ``BAD_REQUEST``         body unreadable, too large, old > size, proof
                                 given from size 0
403      ``BAD_SIGNATURE``       no signature by the trusted log key verifies
404      ``UNKNOWN_ORIGIN``      the witness does not follow this log
409      ``OLD_SIZE_MISMATCH``   old size is not the witness's latest size;
                                 body = ``<latest size>\\n``, type ``text/x.tlog.size``
409      ``FORK``                same size as the latest cosigned, other root;
                                 body = ``<latest size>\\n``
422      ``INCONSISTENT``        the consistency proof does not verify from the
                                 witness's own root at old size
=======  ======================  ==============================================

``FORK`` and ``INCONSISTENT`` refusals are written to ``evidence/`` as JSON
holding the checkpoint the witness cosigned and the log-signed checkpoint it
was offered. For a fork both notes verify under the log's key with the same
size and different roots: anyone can check that proof of a split view without
trusting the witness.

State is ``state.json`` in the folder, replaced atomically (temporary file,
fsync, rename, fsync of the folder) while an exclusive ``flock`` on
``state.lock`` is held across read, check and write, so two requests can never
roll the stored size back (the race the spec warns about).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._bounded import BoundedInputError, decode_utf8
from ._checkpoint import parse_checkpoint_body
from ._cosignature import Cosigner, cosign, cosigner_key_id, split_note
from ._errors import NoteError, VerificationError
from ._hasher import EMPTY_ROOT, HASH_SIZE
from ._note import NoteVerifier, verify_note
from ._verify import verify_consistency

__all__ = [
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "SIZE_CONTENT_TYPE",
    "Witness",
    "WitnessReply",
    "WitnessView",
    "add_checkpoint_body",
    "parse_add_checkpoint",
]

MAX_REQUEST_BYTES = 64 * 1024
"""Largest add-checkpoint body accepted (63 proof lines and a note fit many times over)."""
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
EVIDENCE_DIR = "evidence"


@dataclass(frozen=True, slots=True)
class WitnessReply:
    """The witness's answer: HTTP status, reason code, body and its content type."""

    status: int
    code: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @property
    def ok(self) -> bool:
        """True for a cosignature."""
        return self.status == 200


@dataclass(frozen=True, slots=True)
class WitnessView:
    """The latest checkpoint the witness cosigned for one origin."""

    origin: str
    size: int
    root: bytes
    note: str
    cosigned_at: int


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """An add-checkpoint request body: ``old N``, proof lines, a blank line, the note."""
    if old_size < 0 or len(proof) > MAX_PROOF_LINES:
        raise ValueError("old_size must be >= 0 and the proof at most 63 hashes")
    lines = [f"old {old_size}\n"] + [base64.b64encode(h).decode() + "\n" for h in proof]
    return ("".join(lines) + "\n" + note).encode()


def _bad(message: str) -> WitnessReply:
    return WitnessReply(400, "BAD_REQUEST", (message + "\n").encode())


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """Parse a request into ``(old size, proof hashes, note)`` with every cap applied.

    Raises
    ------
    ValueError
        With a sentence saying what is wrong (the caller answers 400).
    """
    text = decode_utf8(body, what="add-checkpoint body", max_bytes=MAX_REQUEST_BYTES)
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no blank line between the proof and the checkpoint")
    lines = head.split("\n")
    old_line = lines[0]
    digits = old_line[4:]
    if (
        not old_line.startswith("old ")
        or not digits.isascii()
        or not digits.isdigit()
        or (digits != "0" and digits[0] == "0")
        or len(digits) > 19
    ):
        raise ValueError(f"bad old size line {old_line[:40]!r}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            digest = base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"proof line {line[:60]!r} is not base64") from exc
        if len(digest) != HASH_SIZE:
            raise ValueError(f"proof line is {len(digest)} bytes, not {HASH_SIZE}")
        proof.append(digest)
    return int(digits), proof, note


def _size_reply(code: str, status: int, size: int) -> WitnessReply:
    return WitnessReply(status, code, f"{size}\n".encode(), SIZE_CONTENT_TYPE)


class Witness:
    """A tlog witness over one state folder.

    Parameters
    ----------
    state_dir : Path
        Folder for ``state.json``, ``state.lock`` and ``evidence/`` (created 0700).
    name : str
        The witness's key name (a schema-less URL such as ``isv-acme.example/witness``).
    key : Ed25519PrivateKey
        The witness's own cosigning key.
    logs : Mapping[str, NoteVerifier]
        Origin → the log's verifier key; the only logs this witness follows.
    clock : Callable[[], float], default time.time
        POSIX time source for cosignature timestamps.
    """

    def __init__(
        self,
        state_dir: Path,
        name: str,
        key: Ed25519PrivateKey,
        logs: Mapping[str, NoteVerifier],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cosign("x\n1\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n", name, key, 0)  # checks name
        self.state_dir = Path(state_dir)
        self.name = name
        self._key = key
        self._logs = dict(logs)
        self._clock = clock
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def cosigner(self) -> Cosigner:
        """This witness's public identity (its vkey is what verifiers configure)."""
        pub = self._key.public_key()
        return Cosigner(self.name, cosigner_key_id(self.name, pub), pub)

    # -- state ------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with (self.state_dir / LOCK_FILE).open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._read()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return {"origins": {}}
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return state

    def _write_json(self, path: Path, value: Mapping[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(value, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def origins(self) -> list[str]:
        """Origins with a cosigned checkpoint, sorted."""
        return sorted(self._read()["origins"])

    def latest(self, origin: str) -> WitnessView | None:
        """The checkpoint this witness last cosigned for ``origin``, if any."""
        entry = self._read()["origins"].get(origin)
        if entry is None:
            return None
        return WitnessView(
            origin, entry["size"], base64.b64decode(entry["root"]), entry["note"], entry["at"]
        )

    def evidence(self) -> list[dict[str, Any]]:
        """Every refusal recorded as evidence (forks, failed proofs), oldest first."""
        folder = self.state_dir / EVIDENCE_DIR
        if not folder.is_dir():
            return []
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        return [json.loads(p.read_text(encoding="utf-8")) for p in files]

    def _record(
        self, kind: str, known: Mapping[str, Any], note: str, old: int, proof: list[bytes]
    ) -> None:
        folder = self.state_dir / EVIDENCE_DIR
        folder.mkdir(exist_ok=True, mode=0o700)
        digest = hashlib.sha256(note.encode()).hexdigest()[:16]
        record = {
            "kind": kind,
            "known": known["note"],
            "offered": note,
            "old_size": old,
            "proof": [base64.b64encode(h).decode() for h in proof],
            "recorded_at": int(self._clock()),
        }
        self._write_json(folder / f"{kind.lower()}-{known['size']}-{digest}.json", record)

    # -- the protocol -----------------------------------------------------------------

    def add_checkpoint(self, request: bytes) -> WitnessReply:
        """Answer one add-checkpoint request (see the module docstring for every reply)."""
        try:
            old, proof, note = parse_add_checkpoint(request)
            body, _ = split_note(note)
            origin, size, root = parse_checkpoint_body(body)
        except BoundedInputError as exc:
            return _bad(str(exc))
        except (ValueError, NoteError) as exc:
            return _bad(f"malformed request: {exc}")
        log_key = self._logs.get(origin)
        if log_key is None:
            return WitnessReply(404, "UNKNOWN_ORIGIN", f"unknown origin {origin!r}\n".encode())
        try:
            verify_note(note, log_key)
        except NoteError as exc:
            if exc.code == "MALFORMED_NOTE":
                return _bad(f"malformed checkpoint note: {exc}")
            return WitnessReply(403, "BAD_SIGNATURE", f"{exc}\n".encode())
        if old > size:
            return _bad(f"old size {old} is larger than the checkpoint size {size}")
        if old == 0 and proof:
            return _bad("the proof must be empty from size 0")
        with self._locked() as state:
            known = state["origins"].get(origin)
            known_size = known["size"] if known else 0
            if old != known_size:
                return _size_reply("OLD_SIZE_MISMATCH", 409, known_size)
            if known is not None:
                known_root = base64.b64decode(known["root"])
                if size == old and root != known_root:
                    self._record("FORK", known, note, old, proof)
                    return _size_reply("FORK", 409, known_size)
                if size > old and old > 0:
                    try:
                        verify_consistency(old, size, proof, known_root, root)
                    except VerificationError as exc:
                        self._record("INCONSISTENT", known, note, old, proof)
                        return WitnessReply(422, "INCONSISTENT", f"{exc}\n".encode())
            timestamp = int(self._clock())
            line = cosign(body, self.name, self._key, timestamp)
            state["origins"][origin] = {
                "size": size,
                "root": base64.b64encode(root).decode(),
                "note": note,
                "at": timestamp,
            }
            self._write_json(self.state_dir / STATE_FILE, state)
        return WitnessReply(200, "OK", line.encode())
