"""Write the signed-note interoperability vectors into ``tests/testdata/signed_note/``.

Run ``python -m tests.ledger.make_note_vectors`` from the repository root. The
base case is the known-answer example of the Go reference implementation,
golang.org/x/mod/sumdb/note (``note_test.go``, ``TestSign`` and
``TestOpen``): the PeterNeumann key, its text and the exact note Go signs.
Ed25519 is deterministic, so the other cases, each one mutation of that note,
are byte-for-byte reproducible. Each file carries a description and the
``NoteError`` code a verifier must raise (``null`` when the note must verify).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "testdata" / "signed_note"

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_NOTE = f"{GO_TEXT}\n\u2014 PeterNeumann {GO_SIGNATURE}\n"
SOURCE = "golang.org/x/mod/sumdb/note note_test.go (TestSign, TestOpen)"


def _flip_last_signature_bit(note: str) -> str:
    raw = bytearray(base64.b64decode(GO_SIGNATURE))
    raw[-1] ^= 0x01
    return note.replace(GO_SIGNATURE, base64.b64encode(bytes(raw)).decode())


def _case(description: str, note: str, expected_error: str | None) -> dict[str, Any]:
    return {
        "description": description,
        "source": SOURCE,
        "vkey": GO_VKEY,
        "skey": GO_SKEY,
        "text": GO_TEXT,
        "note": note,
        "expected_error": expected_error,
    }


def cases() -> dict[str, dict[str, Any]]:
    """Every vector by file stem."""
    return {
        "go_known_answer": _case(
            "The Go reference note: verifies, and signing its text with skey reproduces it.",
            GO_NOTE,
            None,
        ),
        "flipped_signature_bit": _case(
            "The last bit of the Ed25519 signature flipped.",
            _flip_last_signature_bit(GO_NOTE),
            "BAD_SIGNATURE",
        ),
        "edited_text": _case(
            "One word of the signed text changed, signature kept.",
            GO_NOTE.replace("answer", "Answer"),
            "BAD_SIGNATURE",
        ),
        "other_key_name": _case(
            "The signature line names another key, so no signature is by the trusted key.",
            GO_NOTE.replace("\u2014 PeterNeumann ", "\u2014 EnochRoot "),
            "UNVERIFIED_NOTE",
        ),
        "missing_blank_line": _case(
            "The blank line between text and signatures removed.",
            GO_NOTE.replace("is.\n\n", "is.\n"),
            "MALFORMED_NOTE",
        ),
        "co_signed_by_unknown_key": _case(
            "An extra signature by an unknown key follows; the trusted one still verifies.",
            GO_NOTE + "\u2014 witness.example AAAAAAB0ZXN0\n",
            None,
        ),
    }


def main() -> None:
    """Write every case to ``OUT`` as indented, key-sorted JSON."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, case in cases().items():
        text = json.dumps(case, indent=2, sort_keys=True, ensure_ascii=False)
        (OUT / f"{name}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
