"""ISV-side data access: column mappings, connectors (CSV, Parquet, SQL table) and validation."""

from ._connectors import (
    CONNECTORS,
    Connector,
    CsvConnector,
    ParquetConnector,
    RowSelection,
    SqlTableConnector,
    make_connector,
)
from ._mapping import ColumnMapping, load_mapping
from ._validate import check_columns, coerce_and_validate, coerce_frame

__all__ = [
    "ColumnMapping",
    "load_mapping",
    "Connector",
    "CsvConnector",
    "ParquetConnector",
    "SqlTableConnector",
    "CONNECTORS",
    "RowSelection",
    "make_connector",
    "check_columns",
    "coerce_frame",
    "coerce_and_validate",
]
