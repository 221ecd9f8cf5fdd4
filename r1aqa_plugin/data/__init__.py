"""AQA datasets as verl parquet: the row contract, the builder registry and the built-in builders.

Importing this package registers ``avqa``, ``mmau-test-mini``, ``mmau-test-mini-v1`` and ``synthetic-aqa``;
it imports numpy but not torch, verl or pyarrow (those load only when a file is written or read).
"""

from r1aqa_plugin.data import avqa, mmau, synthetic  # noqa: F401  (registers the built-in datasets)
from r1aqa_plugin.data.records import (
    BuildError,
    BuildReport,
    RecordError,
    make_record,
    read_parquet,
    validate_record,
    write_parquet,
)
from r1aqa_plugin.data.registry import DATASETS, build_dataset, get_dataset, register_dataset

__all__ = [
    "DATASETS",
    "BuildError",
    "BuildReport",
    "RecordError",
    "build_dataset",
    "get_dataset",
    "make_record",
    "read_parquet",
    "register_dataset",
    "validate_record",
    "write_parquet",
]
