"""Streamed cohort manifests: a signed header, then chunks that each verify on their own.

A whole manifest (:mod:`consent._manifest`) is one JWS line and every entry
line after it, so the gateway holds each node's whole list while it signs and
sends it, and the node holds it while it verifies: 10 ISVs × 10⁶ merchants
came to ≈ 15 GiB in one round. The streamed form signs the same Merkle root
and sends the entries in chunks, each of which the node checks against the
signed root the moment it arrives, so neither side ever needs the whole list.

Wire format
-----------
The **header** is a JWS (EdDSA, ``typ`` :data:`consent.MANIFEST_TYPE`) whose
payload is the RFC 8785 JSON of the whole-manifest header with ``v`` = 3 and
one more field, ``chunk_size`` (a power of two, at most
:data:`MAX_CHUNK_SIZE`). ``count`` and ``root`` mean what they mean in version
2: the number of entries, and the RFC 9162 Merkle root over their canonical
lines sorted by merchant id (each line a leaf; :mod:`consent._entries`). A
streamed manifest and a whole one over the same entries have the same root,
so receipts and lineage name the same value either way.

**Chunk** ``i`` (of ``C = ceil(count / chunk_size)``) carries entries
``[i·chunk_size, min((i+1)·chunk_size, count))``::

    {"index":i,"manifest":"<hex SHA-256 of the header's JWS payload>","proof":["<hex>",…]}
    <entry line>
    <entry line>
    …

(first line RFC 8785 JSON, then one entry line per row, ``\\n`` between lines,
none at the end). Because the chunk size is a power of two and chunks start at
multiples of it, every chunk's entries form one node of the RFC 9162 tree (the
last one too: the tree's right border), and the tree above those nodes is the
RFC 9162 tree over the ``C`` chunk hashes. ``proof`` is therefore an ordinary
RFC 9162 inclusion proof of "leaf" ``i`` in a tree of size ``C`` whose leaf
hash is the chunk's subtree hash, checked with
:func:`ledger.root_from_inclusion_proof`.

What the node checks
--------------------
:func:`open_stream` verifies the header exactly as a whole manifest's
(signature, type, form, addressee, validity window with the clock-skew
allowance) and refuses a round already superseded. :meth:`StreamVerifier.accept`
takes chunks strictly in index order and refuses, before any entry is
returned: a chunk that names another manifest (``CHUNK_FOREIGN``), one that is
not the next (``CHUNK_ORDER``: reordered, duplicated or beyond the last), one
whose entry count, subtree hash or proof does not lead to the signed root
(``ROOT_MISMATCH``: a tampered chunk), and entries that are malformed, out of
order across chunks or outside their consent window (``ENTRY_INVALID``). The
first refusal poisons the stream: nothing after it is accepted.
:meth:`StreamVerifier.finish` refuses a stream with chunks missing
(``CHUNK_MISSING``) and only then records the manifest in the replay guard.
A caller must not act on any entry before ``finish`` returns.

The gateway side (:func:`stream_manifest`) reads the cohort once, in order,
encoding and hashing one chunk at a time; it keeps the chunk hashes (32 bytes
per ``chunk_size`` entries) and spools the encoded lines to an unlinked
temporary file, from which :meth:`ManifestStream.chunk` re-reads a chunk when
it is sent.
"""

from ._stream_build import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, ManifestStream, stream_manifest
from ._stream_verify import StreamVerifier, open_stream, verify_stream

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ManifestStream",
    "StreamVerifier",
    "open_stream",
    "stream_manifest",
    "verify_stream",
]
