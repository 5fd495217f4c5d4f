"""ISV-side data access: column mappings, connectors (CSV, Parquet, SQL table) and validation."""

from ._connectors import Connector, CsvConnector, ParquetConnector, SqlTableConnector
from ._mapping import ColumnMapping, load_mapping
from ._validate import check_columns, coerce_and_validate

__all__ = [
    "ColumnMapping",
    "load_mapping",
    "Connector",
    "CsvConnector",
    "ParquetConnector",
    "SqlTableConnector",
    "check_columns",
    "coerce_and_validate",
]
