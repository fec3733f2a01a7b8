"""Transcript tables (CSV or Parquet) -> gene store, batch by batch (pyarrow record batches / pandas chunks)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from .engine import DEFAULT_BATCH_ROWS, Batch, Canvas, IngestReport, check_coordinates, check_sections, ingest_batches

TABLE_COLUMNS = ("x", "y", "z", "gene")


def _table_reader(path: Path, columns: list[str], batch_rows: int) -> Callable[[], Iterator[pd.DataFrame]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        def parquet() -> Iterator[pd.DataFrame]:
            # pre_buffer (pyarrow's default) would hold every row group's column chunks of the file in memory
            with _named_errors(path), pq.ParquetFile(path, memory_map=False, pre_buffer=False) as file:
                for record_batch in file.iter_batches(batch_size=batch_rows, columns=columns):
                    yield record_batch.to_pandas()

        return parquet
    if suffix in (".csv", ".tsv", ".txt", ".gz"):
        sep = "\t" if ".tsv" in path.suffixes else ","

        def csv() -> Iterator[pd.DataFrame]:
            with _named_errors(path), pd.read_csv(path, sep=sep, usecols=columns, chunksize=batch_rows) as reader:
                yield from reader

        return csv
    raise ValueError(f"{path}: unsupported table format {suffix!r} (expected .csv, .tsv or .parquet)")


@contextmanager
def _named_errors(path: Path):
    """A table pandas/pyarrow cannot parse (quoting, encoding, truncation) gets an error naming the file."""
    try:
        yield
    except (ValueError, UnicodeDecodeError, OSError, EOFError) as err:  # ParserError, ArrowInvalid are ValueErrors
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: not a readable table ({type(err).__name__}: {err})") from err


def table_header(path: Path) -> list[str]:
    with _named_errors(path):
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        sep = "\t" if ".tsv" in path.suffixes else ","
        return list(pd.read_csv(path, sep=sep, nrows=0).columns)


def resolve_columns(
    found: Sequence[str], columns: dict[str, str] | None, source: str, defaults: dict[str, str] | None = None,
    require_z: bool = True,
) -> dict[str, str]:
    """Map our names (x, y, z, gene [, count]) to the file's; ValueError naming the expected ones.

    Without `require_z`, a missing z column (not asked for in `columns`) means every row is in section 0.
    """
    mapping = {name: name for name in TABLE_COLUMNS}
    mapping.update(defaults or {})
    mapping.update(columns or {})
    unknown_keys = sorted(set(mapping) - {*TABLE_COLUMNS, "count"})
    if unknown_keys:
        raise ValueError(f"columns: unknown key(s) {unknown_keys}; expected some of {[*TABLE_COLUMNS, 'count']}")
    if not require_z and mapping["z"] not in found and "z" not in (columns or {}):
        del mapping["z"]
    if "count" in found and "count" not in mapping:
        mapping["count"] = "count"
    missing = {k: v for k, v in mapping.items() if v not in found}
    if missing:
        expected = ", ".join(f"{k}={v!r}" for k, v in mapping.items())
        raise ValueError(
            f"{source}: missing column(s) {sorted(missing.values())}; expected columns {expected} "
            f"(map others with columns={{'x': 'global_x', ...}} / --column x=global_x), found {list(found)}"
        )
    return mapping


def table_batches(
    path: str | Path, *, columns: dict[str, str] | None = None, units: str = "px", um_per_px: float | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Callable[[], Iterator[Batch]]:
    """A factory of `Batch` streams over a CSV/Parquet transcripts table (checked on the way)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: transcripts table not found")
    if units not in ("px", "um"):
        raise ValueError(f"units must be 'px' or 'um', got {units!r}")
    if units == "um" and not um_per_px:
        raise ValueError(f"{path}: units='um' needs um_per_px (microns per image pixel)")
    source = str(path)
    mapping = resolve_columns(table_header(path), columns, source)
    read = _table_reader(path, list(dict.fromkeys(mapping.values())), batch_rows)
    scale = 1.0 / um_per_px if units == "um" else 1.0

    def batches() -> Iterator[Batch]:
        for frame in read():
            yield frame_to_batch(frame, mapping, scale, source)

    return batches


def frame_to_batch(frame: pd.DataFrame, mapping: dict, scale: float, source: str) -> Batch:
    """Check one chunk of a table and convert its coordinates to pixels (`scale` px per coordinate unit)."""
    genes = frame[mapping["gene"]]
    if genes.isna().any():
        raise ValueError(f"{source}: column {mapping['gene']!r} has {int(genes.isna().sum())} missing values")
    counts = None
    if "count" in mapping:
        counts = check_coordinates(frame[mapping["count"]].to_numpy(), mapping["count"], source)
        if (counts < 0).any():
            raise ValueError(f"{source}: column {mapping['count']!r} has negative counts (expected counts >= 0)")
    return Batch(
        rows=check_coordinates(frame[mapping["y"]].to_numpy(), mapping["y"], source) * scale,
        cols=check_coordinates(frame[mapping["x"]].to_numpy(), mapping["x"], source) * scale,
        sections=check_sections(frame[mapping["z"]].to_numpy(), mapping["z"], source),
        genes=genes.astype(str),
        counts=counts,
    )


def ingest_table(
    path: str | Path,
    out: str | Path,
    *,
    um_per_px: float,
    units: str = "px",
    columns: dict[str, str] | None = None,
    images: str | Path | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    **kwargs,
) -> IngestReport:
    """A CSV/Parquet transcripts table (x, y, z = section, gene [, count]) -> gene store `out`, in chunks.

    `images` (a (2, Z, H, W) uint8 TIFF/.npy, DAPI then PolyT) fixes the canvas to its (H, W) (cropped to whole
    bins) and is stored as `images`. Other keyword arguments go to :func:`ingest_batches`.
    """
    batches = table_batches(path, columns=columns, units=units, um_per_px=um_per_px, batch_rows=batch_rows)
    write_images, canvas = None, None
    if images is not None:
        from ..readers.table import load_images

        stack = load_images(images)
        gene_bin = kwargs.get("gene_bin", 16)
        canvas = Canvas(0, 0, stack.shape[2] // gene_bin * gene_bin, stack.shape[3] // gene_bin * gene_bin, stack.shape[1])

        def write_images(group, canvas: Canvas) -> None:
            h, w = stack.shape[2] // gene_bin * gene_bin, stack.shape[3] // gene_bin * gene_bin
            group["images"][:, :, :h, :w] = stack[:, :, :h, :w]

    provenance = {"format": "table", "inputs": [str(path)], "units": units, "columns": columns or {}}
    return ingest_batches(
        batches, out, source=str(path), um_per_px=um_per_px, canvas=canvas, images=write_images,
        provenance=provenance, batch_rows=batch_rows, inputs={"table": path, "--images": images}, **kwargs,
    )
