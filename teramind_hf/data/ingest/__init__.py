"""`teramind ingest`: MERSCOPE runs, transcript tables, SpatialData points and `.h5ad` bins -> a gene store.

See `engine` for the two-pass, bounded-memory scheme every source shares.
"""

from .engine import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_BUFFER_BINS,
    DEFAULT_MAX_STORE_BYTES,
    Batch,
    BinAccumulator,
    IngestReport,
    ingest_batches,
)
from .merscope import ingest_merscope, merscope_runs
from .scverse import ingest_anndata, ingest_spatialdata, is_spatialdata_store
from .table import ingest_table, table_batches

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_BUFFER_BINS",
    "DEFAULT_MAX_STORE_BYTES",
    "Batch",
    "BinAccumulator",
    "IngestReport",
    "ingest_anndata",
    "ingest_batches",
    "ingest_merscope",
    "ingest_spatialdata",
    "ingest_table",
    "is_spatialdata_store",
    "merscope_runs",
    "table_batches",
]
