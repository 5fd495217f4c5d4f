"""Cohort-manifest entries: one canonical line per entry, encoded and parsed in bulk.

An entry's line is the RFC 8785 canonical JSON of a positional array::

    ["<merchant_id>","<consent_id>","<artefact_hash>","<consent_start>",
     "<consent_expiry>","<data_from>","<data_to>",<label>,<data_life_days>]

(one line, no whitespace). Ids match :data:`consent.ID_PATTERN`, the hash is 64
lowercase hex digits, times are ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), dates
``YYYY-MM-DD``, ``label`` an integer within ±(2**53 - 1) or ``null`` and
``data_life_days`` (how long data derived from the use may be kept) an integer
in [0, 2**53 - 1] or ``null``. None of these characters is ever escaped by
JSON, so a format string produces exactly the RFC 8785 bytes (a test pins this
against ``rfc8785``), and one regular expression is the whole grammar: a line
matches it exactly when it is the canonical form of some entry, so parsing is
strict (one entry has exactly one byte form). Positions instead of key names
make the line 180 bytes rather than 290, which is what parsing and hashing
10^5 of them cost.

:func:`entry_line` is the definition of an entry's bytes and of a well-formed
entry. The bulk paths produce or read the same bytes for 10^5 entries without
a Python loop per field: each field becomes a column, each column is checked
with one C-level pass (``map``/``all``/``set``, numpy tables, one regular
expression), and whenever a column check fails the entries are walked again
one by one, and that walk words the refusal. The bulk paths therefore accept
exactly what the walks accept, with the same bytes and values (property tests
pin both), and never word a refusal themselves.
"""

from __future__ import annotations

from ._entries_encode import encode_entries
from ._entries_parse import parse_entries
from ._entry_line import ManifestEntry, entry_line, leaf_hashes, merkle_root

__all__ = [
    "ManifestEntry",
    "entry_line",
    "merkle_root",
    "leaf_hashes",
    "encode_entries",
    "parse_entries",
]
