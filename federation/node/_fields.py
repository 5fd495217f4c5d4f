"""The job's extra fields against the node's own declarations: one check before any row is read.

A job that uses fields beyond the core ERP schema names them in its run config
(``extra-fields``, :func:`federation.schema.fields_to_json`). The node trusts
only its own column mapping: an optional schema field (``net_profit``,
``cash_flow``) needs no declaration, but every other extra field whose consent
category the manifest covers must be declared in the node's mapping with
exactly the job's unit, integer-ness, sign rule and category. Otherwise the
node refuses the request with ``FIELD_MISMATCH`` (a different declaration) or
``FIELD_NOT_DECLARED`` (none), before training, sketching or scoring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..schema import ERP_OPTIONAL_FIELDS, FieldSpec

__all__ = ["field_problem"]


def field_problem(
    job_extras: Sequence[FieldSpec],
    node_declared: Mapping[str, FieldSpec],
    categories: Iterable[str],
) -> tuple[str, dict[str, int]] | None:
    """Why the node refuses the job's extra fields (rule and counts), or ``None``.

    Parameters
    ----------
    job_extras : Sequence[FieldSpec]
        The extra fields the job's run config names (untrusted).
    node_declared : Mapping[str, FieldSpec]
        The node mapping's ``[declared.<name>]`` fields (the node's own config).
    categories : Iterable[str]
        The verified manifest's consented categories: only extras they cover are read.
    """
    wanted = set(categories)
    used = [f for f in job_extras if f.category in wanted and f not in ERP_OPTIONAL_FIELDS]
    undeclared = [f for f in used if f.name not in node_declared]
    differing = [f for f in used if f.name in node_declared
                 and node_declared[f.name].declaration() != f.declaration()]
    if differing:
        return "FIELD_MISMATCH", {"fields": len(differing)}
    if undeclared:
        return "FIELD_NOT_DECLARED", {"fields": len(undeclared)}
    return None

