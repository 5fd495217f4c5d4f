"""``fedgate consent …``: grant, activate, reject, pause, resume, revoke, show, check, list, expire.

Thin: each command parses its options, calls ``consent`` inside one database
transaction, and prints JSON. Refusals print ``error[CODE]: …`` on stderr and
exit non-zero with nothing stored; ``check`` exits 0 when allowed and 2 when
denied (the decision is printed either way). Only ``grant`` creates the
consent-manager key on first use; ``check`` reads it and fails with
``KEY_NOT_FOUND`` when there is none, so a read never writes a file.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import consent
import ledger

from ..keys import load_or_create_key, load_public_key
from ._common import fail, session, settings

app = typer.Typer(no_args_is_help=True)

MAX_TERMS_BYTES = 64 * 1024
"""Largest --terms file: signed terms are a few hundred bytes."""

DENIED_EXIT = 2
CM_KEY_NAME = "consent-manager"
DEFAULT_USES = 30
"""Default uses per day: a 10-round training job (11 uses), its scoring (1) and a rerun."""


def _cm_key() -> Ed25519PrivateKey:
    """The consent manager's signing key, created on first use (``grant`` only)."""
    return load_or_create_key(settings().resolved_key_dir, CM_KEY_NAME)


def _cm_public_key() -> Ed25519PublicKey:
    """The consent manager's public key, read without creating anything."""
    path = settings().resolved_key_dir / f"{CM_KEY_NAME}.pem"
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        fail("KEY_NOT_FOUND", f"no consent-manager key at {path}; grant a consent first")
    except (OSError, ValueError, TypeError) as exc:
        fail("KEY_INVALID", f"cannot read the consent-manager key {path}: {exc}")
    if not isinstance(loaded, Ed25519PrivateKey):
        fail("KEY_INVALID", f"{path} is not an Ed25519 private key")
    return loaded.public_key()


def _merchant_approval(
    signature_file: Path | None, key_file: Path | None
) -> tuple[str | None, Ed25519PublicKey | None]:
    """The merchant's detached approval JWS and public key, both or neither."""
    if (signature_file is None) != (key_file is None):
        fail("SIGNATURE_INVALID", "give both --merchant-signature and --merchant-key, or neither")
    if signature_file is None or key_file is None:
        return None, None
    try:
        signature = signature_file.read_text("ascii").strip()
        key = load_public_key(key_file.read_bytes())
    except OSError as exc:
        fail("FILE_NOT_FOUND", f"cannot read the merchant's approval: {exc}")
    except (ValueError, UnicodeDecodeError) as exc:
        fail("SIGNATURE_INVALID", f"merchant approval or key unreadable: {exc}")
    return signature, key


_SignatureOption = Annotated[
    Path | None,
    typer.Option(
        "--merchant-signature",
        help="File with the merchant's detached approval JWS over the terms.",
    ),
]
_MerchantKeyOption = Annotated[
    Path | None,
    typer.Option("--merchant-key", help="The merchant's Ed25519 public key (PEM file)."),
]


def _echo(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _time(value: str | None, name: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail("MALFORMED", f"--{name} is not an ISO 8601 time: {value!r}")
    if parsed.tzinfo is None:
        fail("MALFORMED", f"--{name} needs a UTC offset (e.g. 2026-06-01T00:00:00Z)")
    return parsed


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail("MALFORMED", f"--{name} is not a date (YYYY-MM-DD): {value!r}")


def _receipts(receipts: Any) -> list[dict[str, Any]]:
    return [r.to_json() for r in receipts]


@app.command()
def grant(
    terms_file: Annotated[
        Path | None, typer.Option("--terms", help="JSON file with the terms (overrides options).")
    ] = None,
    consent_id: Annotated[str | None, typer.Option(help="Default: a new c-<uuid>.")] = None,
    merchant: Annotated[str | None, typer.Option(help="Merchant id.")] = None,
    provider: Annotated[str | None, typer.Option(help="Data provider (ISV) id.")] = None,
    consumer: Annotated[str | None, typer.Option(help="Data consumer (lender) id.")] = None,
    purpose: Annotated[list[str] | None, typer.Option(help="Purpose code; repeat.")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Data category; repeat.")] = None,
    data_from: Annotated[str | None, typer.Option(help="First day of data (YYYY-MM-DD).")] = None,
    data_to: Annotated[str | None, typer.Option(help="Last day of data (YYYY-MM-DD).")] = None,
    uses: Annotated[
        int,
        typer.Option(help="Uses allowed per period; one use is one ISV node's round of one "
                     "job (a training job of R rounds takes R + 1, a scoring job 1)."),
    ] = DEFAULT_USES,
    per: Annotated[str, typer.Option(help="Period: hour, day, month or year.")] = "day",
    data_life_days: Annotated[int, typer.Option(help="Days derived data may be kept.")] = 90,
    start: Annotated[
        str | None, typer.Option(help="Consent start (ISO 8601, with offset).")
    ] = None,
    expiry: Annotated[
        str | None, typer.Option(help="Consent expiry (ISO 8601, with offset).")
    ] = None,
    supersedes: Annotated[str | None, typer.Option(help="Consent id these terms replace.")] = None,
    version: Annotated[int | None, typer.Option(help="Artefact version (default 1).")] = None,
    pending: Annotated[
        bool, typer.Option(help="Leave PENDING (no merchant approval yet).")
    ] = False,
    merchant_signature: _SignatureOption = None,
    merchant_key: _MerchantKeyOption = None,
) -> None:
    """Sign and record a consent from a terms file or from options."""
    signature, signer = _merchant_approval(merchant_signature, merchant_key)
    now = datetime.now(UTC)
    raw: Any
    if terms_file is not None:
        try:
            raw = ledger.loads_bounded(
                terms_file.read_bytes(), what=f"--terms {terms_file}", max_bytes=MAX_TERMS_BYTES
            )
        except OSError as exc:
            fail("FILE_NOT_FOUND", f"cannot read {terms_file}: {exc}")
        except ledger.BoundedInputError as exc:  # not UTF-8, not JSON, too deep or too large
            fail("MALFORMED_JSON", str(exc))
    else:
        raw = {
            "consent_id": consent_id or f"c-{uuid.uuid4().hex}",
            "merchant_id": merchant,
            "data_provider": provider,
            "data_consumer": consumer,
            "purposes": purpose or [],
            "categories": category or [],
            "data_from": data_from,
            "data_to": data_to,
            "frequency": {"uses": uses, "per": per},
            "data_life_days": data_life_days,
            "consent_start": start or now.isoformat(),
            "consent_expiry": expiry,
        }
        if supersedes is not None:
            raw["supersedes"] = supersedes
            raw["version"] = version or 2
        elif version is not None:
            raw["version"] = version
        missing = [k for k in ("merchant_id", "data_provider", "data_consumer") if not raw[k]]
        missing += [k for k in ("data_from", "data_to", "consent_expiry") if raw[k] is None]
        if missing:
            fail("MALFORMED", f"missing options for {', '.join(missing)}")
    try:
        terms = consent.parse_terms(raw, now=now)
        with session() as s:
            result = consent.grant(
                s,
                terms,
                key=_cm_key(),
                at=now,
                activate=not pending,
                merchant_signature=signature,
                merchant_key=signer,
                notice=settings().receipt_notice,
            )
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    _echo(
        {
            "consent_id": terms.consent_id,
            "artefact_hash": result.signed.hash,
            "status": result.receipt.status,
            "receipts": _receipts(result.receipts),
        }
    )


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines: terms + merchant approval per line.")],
) -> None:
    """Import many consents at once, all or nothing, every merchant approval verified.

    Each line is ``{"terms": {...}, "merchant_signature": JWS, "merchant_key": PEM}``
    (terms as for ``grant --terms``, with ``created_at``). One bad line refuses the
    whole file and nothing is stored.
    """
    try:
        handle = file.open("rb")
    except OSError as exc:
        fail("FILE_NOT_FOUND", f"cannot read {file}: {exc}")
    started = datetime.now(UTC)
    try:
        with handle, session() as s:
            result = consent.import_consents(s, handle, key=_cm_key())
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    seconds = (datetime.now(UTC) - started).total_seconds()
    _echo({"imported": result.count, "ledger_seq": [result.first_seq, result.last_seq],
           "seconds": round(seconds, 3)})


def _transition(name: str, consent_id: str, **kw: Any) -> None:
    try:
        with session() as s:
            receipt = getattr(consent, name)(
                s, consent_id, notice=settings().receipt_notice, **kw
            )
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    _echo(receipt.to_json())


@app.command()
def activate(
    consent_id: str,
    merchant_signature: _SignatureOption = None,
    merchant_key: _MerchantKeyOption = None,
) -> None:
    """PENDING → ACTIVE: the merchant approved (optionally with its signed approval)."""
    signature, signer = _merchant_approval(merchant_signature, merchant_key)
    _transition("activate", consent_id, merchant_signature=signature, merchant_key=signer)


@app.command()
def reject(
    consent_id: str, reason: Annotated[str, typer.Option(help="Why (recorded).")] = ""
) -> None:
    """PENDING → REJECTED: the merchant declined."""
    _transition("reject", consent_id, reason=reason)


@app.command()
def pause(
    consent_id: str, reason: Annotated[str, typer.Option(help="Why (recorded).")] = ""
) -> None:
    """ACTIVE → PAUSED: every check denies until resumed."""
    _transition("pause", consent_id, reason=reason)


@app.command()
def resume(consent_id: str) -> None:
    """PAUSED → ACTIVE."""
    _transition("resume", consent_id)


@app.command()
def revoke(
    consent_id: str, reason: Annotated[str, typer.Option(help="Why (recorded).")] = ""
) -> None:
    """Revoke for good; effective for every check from now on."""
    _transition("revoke", consent_id, reason=reason)


@app.command()
def expire() -> None:
    """Record ``consent.expired`` for every live consent past its expiry."""
    try:
        with session() as s:
            receipts = consent.expire_due(s, notice=settings().receipt_notice)
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    _echo(_receipts(receipts))


@app.command()
def show(consent_id: str) -> None:
    """Terms, current state and event history of one consent."""
    try:
        with session() as s:
            view = consent.get_consent(s, consent_id)
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    state = view.state
    _echo(
        {
            "artefact_hash": view.signed.hash,
            "terms": view.signed.artefact.body(),
            "state": {
                "status": state.status.value,
                "version": state.version,
                "use_count": state.use_count,
                "last_used_at": state.last_used_at,
                "updated_at": state.updated_at,
            },
            "events": [
                {"version": e.version, "kind": e.kind, "at": e.at, "detail": dict(e.detail)}
                for e in view.events
            ],
        }
    )


@app.command("list")
def list_(
    merchant: Annotated[str | None, typer.Option(help="Only this merchant.")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this data provider.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status, e.g. ACTIVE.")] = None,
) -> None:
    """Consents, oldest first, one JSON object each."""
    wanted = None
    if status is not None:
        try:
            wanted = consent.Status(status.upper())
        except ValueError:
            fail("MALFORMED", f"unknown status {status!r}")
    try:
        with session() as s:
            rows = consent.list_consents(
                s, merchant_id=merchant, data_provider=provider, status=wanted
            )
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    _echo(
        [
            {
                "consent_id": signed.artefact.consent_id,
                "merchant_id": signed.artefact.merchant_id,
                "data_provider": signed.artefact.data_provider,
                "data_consumer": signed.artefact.data_consumer,
                "purposes": list(signed.artefact.purposes),
                "status": state.status.value,
                "consent_expiry": signed.artefact.consent_expiry,
            }
            for signed, state in rows
        ]
    )


@app.command()
def check(
    merchant: Annotated[str, typer.Option(help="Merchant id.")],
    provider: Annotated[str, typer.Option(help="Data provider (ISV) id.")],
    consumer: Annotated[str, typer.Option(help="Data consumer (lender) id.")],
    purpose: Annotated[str, typer.Option(help="Purpose code.")],
    category: Annotated[list[str], typer.Option(help="Data category; repeat.")],
    at: Annotated[str | None, typer.Option(help="Time of use (default now).")] = None,
    data_from: Annotated[str | None, typer.Option(help="First day read.")] = None,
    data_to: Annotated[str | None, typer.Option(help="Last day read.")] = None,
) -> None:
    """Would this use be allowed? Prints the decision; exit 0 allowed, 2 denied."""
    if purpose not in consent.PURPOSES:
        fail(
            "UNKNOWN_PURPOSE", f"unknown purpose {purpose!r}; known: {', '.join(consent.PURPOSES)}"
        )
    unknown = sorted(set(category) - set(consent.CATEGORIES))
    if unknown:
        fail(
            "UNKNOWN_CATEGORY",
            f"unknown categories {unknown}; known: {', '.join(consent.CATEGORIES)}",
        )
    data_range = None
    if (data_from is None) != (data_to is None):
        fail("MALFORMED", "give both --data-from and --data-to, or neither")
    if data_from is not None and data_to is not None:
        data_range = (_date(data_from, "data-from"), _date(data_to, "data-to"))
    try:
        with session() as s:
            use = consent.Use(
                merchant_id=merchant,
                data_provider=provider,
                data_consumer=consumer,
                purpose=purpose,
                categories=category,
                at=_time(at, "at"),
                data_range=data_range,
            )
            decision = consent.check(s, use, consent_manager_key=_cm_public_key())
    except consent.ConsentError as exc:
        fail(exc.code, str(exc))
    _echo(
        {
            "allowed": decision.allowed,
            "code": decision.code,
            "consent_id": decision.consent_id,
            "artefact_hash": decision.artefact_hash,
            "reason": decision.reason,
        }
    )
    if not decision.allowed:
        raise typer.Exit(DENIED_EXIT)
