"""Witnesses over HTTP: the C2SP tlog-witness service and the log's client for it.

The witness logic (state, consistency checks, cosigning, fork evidence) is
pure code in :mod:`ledger`; this package only gives it a folder on disk
(:mod:`._folder`), an HTTP face (:mod:`._app`) and the client the log uses to
collect cosignatures (:mod:`._client`).
"""

from __future__ import annotations

from ._app import make_app
from ._client import Refusal, WitnessEndpoint, WitnessOutcome, collect_cosignatures, parse_endpoint
from ._folder import WitnessFolderError, init_witness, open_witness, trust_log
from ._serve import serve_in_thread

__all__ = [
    "Refusal",
    "WitnessEndpoint",
    "WitnessFolderError",
    "WitnessOutcome",
    "collect_cosignatures",
    "init_witness",
    "make_app",
    "open_witness",
    "parse_endpoint",
    "serve_in_thread",
    "trust_log",
]
