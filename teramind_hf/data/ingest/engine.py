"""`teramind ingest`: real data -> a gene store (`teramind_hf.data.store` layout), in bounded memory.

Every source is read as a stream of transcript batches (pyarrow record batches, pandas CSV chunks, dask
partitions, row blocks of an `.h5ad`), in two passes:

1. **scan**: every check runs and the canvas, panel and section count are fixed before anything is written
   (missing/NaN coordinates, unknown columns, negative coordinates, a grid so large that binning would need
   more than `max_store_bytes`);
2. **bin**: each batch's transcripts become (bin, count) pairs; pairs of many batches are summed in a buffer
   of at most `buffer_bins` entries and flushed chunk by chunk (read-add-write) into the store's `genes`.

What is held at once is one batch (`batch_rows` rows) plus the pair buffer, whatever the size of the input:
`IngestReport.max_batch_rows` and `max_pending_bins` are the reader's own accounting of that. The store is
written under a temporary name and renamed when complete, so an interrupted ingest leaves no half store.

Pixel (0, 0) of the store is the corner of the canvas; `origin_um` records where it lies, as (y, x), in the
source's micron coordinate system (named `coordinate_system`), so outputs can be placed back on the input.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from ...constants import DEFAULT_SECTION_SPACING_UM
from ...output_guard import check_output_location, check_replaceable, remove_output
from ..panel import GenePanel
from ..volume import panel_for_transcripts
from .accumulate import DEFAULT_BUFFER_BINS, BinAccumulator
from .checks import ORIGINS, _check_common, check_coordinates, check_grid, check_sections  # noqa: F401  (re-exported)

DEFAULT_BATCH_ROWS = 500_000
DEFAULT_MAX_STORE_BYTES = 2**40  # dense float32 genes larger than 1 TiB are refused (raise it for whole brains)
DEFAULT_PAD_TO = 256  # canvases are padded (zero counts, black images) to whole tiles of the embedded model
# measured (benchmarks/ingest_memory.py): what the imports take, and the bytes held per batch row / pending pair
BASELINE_BYTES = 160 * 2**20
BYTES_PER_BATCH_ROW = 400
BYTES_PER_PENDING_BIN = 64


def sizes_for_memory(memory_bytes: int) -> tuple[int, int]:
    """(batch_rows, buffer_bins) keeping peak RSS under `memory_bytes`: a third of what the imports leave goes
    to a batch, two thirds to the (bin, count) buffer."""
    free = memory_bytes - BASELINE_BYTES
    if free < 16 * 2**20:
        raise ValueError(
            f"memory budget {memory_bytes / 2**20:.0f} MB leaves too little above the ~{BASELINE_BYTES / 2**20:.0f} MB "
            "the libraries take: give at least 200 MB"
        )
    return max(1000, free // 3 // BYTES_PER_BATCH_ROW), max(1000, free * 2 // 3 // BYTES_PER_PENDING_BIN)


@dataclass
class Batch:
    """Transcripts of one batch in canvas-independent pixels: rows (y), cols (x), section, gene [, count]."""

    rows: np.ndarray
    cols: np.ndarray
    sections: np.ndarray
    genes: pd.Series
    counts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class IngestReport:
    """What `ingest_*` wrote (counts are transcripts, or summed counts for binned inputs)."""

    store: str
    source: str
    shape: tuple[int, int, int, int]  # (G, Z, Hb, Wb)
    gene_bin: int
    um_per_px: float
    rows_read: int
    rows_binned: int
    rows_dropped: int  # outside the canvas (MERSCOPE mosaics) or of dropped genes
    batches: int
    max_batch_rows: int
    max_pending_bins: int
    flushes: int
    images: bool

    def summary(self) -> str:
        g, z, hb, wb = self.shape
        return (
            f"{self.source}: {self.rows_read:,} rows in {self.batches} batch(es) of <= {self.max_batch_rows:,} -> "
            f"{self.store} (genes {g} x {z} sections x {hb} x {wb} bins of {self.gene_bin} px at {self.um_per_px} "
            f"um/px, {self.rows_binned:,} binned, {self.rows_dropped:,} dropped, images {'yes' if self.images else 'no'})"
        )


@dataclass
class _Scan:
    """What the first pass learns: extent in px, sections, genes, rows."""

    rows: int = 0
    row_min: float = np.inf
    row_max: float = -np.inf
    col_min: float = np.inf
    col_max: float = -np.inf
    section_max: int = -1
    genes: set = field(default_factory=set)

    def update(self, batch: Batch) -> None:
        self.rows += len(batch)
        if len(batch):
            self.row_min, self.row_max = min(self.row_min, batch.rows.min()), max(self.row_max, batch.rows.max())
            self.col_min, self.col_max = min(self.col_min, batch.cols.min()), max(self.col_max, batch.cols.max())
            self.section_max = max(self.section_max, int(batch.sections.max()))
            self.genes.update(pd.unique(batch.genes.astype(str)))


def _scan_meets_canvas(scan: _Scan, canvas) -> bool:
    """Whether the transcripts' bounding box reaches into the canvas (else binning would drop every one)."""
    rows = scan.row_max >= canvas.origin_row and scan.row_min < canvas.origin_row + canvas.height
    cols = scan.col_max >= canvas.origin_col and scan.col_min < canvas.origin_col + canvas.width
    return bool(rows and cols)


# ----------------------------------------------------------------------------------------------- the engine
@dataclass
class Canvas:
    """Where the store's pixel grid lies: origin (px, in the source's pixel frame), size, sections."""

    origin_row: int
    origin_col: int
    height: int
    width: int
    num_slices: int


def canvas_from_scan(
    scan: _Scan, gene_bin: int, origin: str, source: str, num_slices: int | None = None
) -> Canvas:
    """The canvas covering every transcript; `origin` "zero" keeps pixel 0 at coordinate 0 (negative
    coordinates are refused), "extent" starts it at the bounding box, rounded down to a whole bin."""
    if scan.rows == 0:
        raise ValueError(f"{source}: no transcripts")
    if origin == "zero":
        if scan.row_min < 0 or scan.col_min < 0:
            column, value = ("y", scan.row_min) if scan.row_min < 0 else ("x", scan.col_min)
            raise ValueError(
                f"{source}: column {column!r} has negative pixel coordinates (min {value:.6g} px); "
                "pass origin='extent' (--origin extent) to start the canvas at the data's bounding box"
            )
        r0 = c0 = 0
    else:
        r0 = int(np.floor(scan.row_min / gene_bin)) * gene_bin
        c0 = int(np.floor(scan.col_min / gene_bin)) * gene_bin
    height = (int(np.floor(scan.row_max - r0)) // gene_bin + 1) * gene_bin
    width = (int(np.floor(scan.col_max - c0)) // gene_bin + 1) * gene_bin
    z = scan.section_max + 1
    if num_slices is not None:
        if num_slices < z:
            raise ValueError(f"{source}: transcripts in section z={z - 1} but num_slices={num_slices}")
        z = num_slices
    return Canvas(r0, c0, height, width, z)


def _bin_batches(
    batches: Iterable[Batch], accumulator: BinAccumulator, canvas: Canvas, panel: GenePanel, gene_bin: int,
    source: str, drop_unknown: bool, progress,
) -> tuple[int, int, int, int]:
    """Pass 2: returns (rows read, rows binned, batches, largest batch)."""
    read = binned = count = largest = 0
    for batch in batches:
        _, gene_index = panel_for_transcripts(batch.genes, panel, source, drop_unknown)
        rb = np.floor((batch.rows - canvas.origin_row) / gene_bin).astype(np.int64)
        cb = np.floor((batch.cols - canvas.origin_col) / gene_bin).astype(np.int64)
        z = batch.sections.astype(np.int64)
        keep = (
            (rb >= 0) & (rb < canvas.height // gene_bin) & (cb >= 0) & (cb < canvas.width // gene_bin)
            & (z >= 0) & (z < canvas.num_slices) & (gene_index >= 0)
        )
        counts = None if batch.counts is None else batch.counts[keep]
        binned += accumulator.add(rb[keep], cb[keep], z[keep], gene_index[keep], counts)
        read, count, largest = read + len(batch), count + 1, max(largest, len(batch))
        progress.update(len(batch))
    accumulator.flush()
    return read, binned, count, largest


class StoreWriter:
    """Writes a store under a temporary sibling name and renames it into place when complete."""

    def __init__(self, path: str | Path, overwrite: bool, inputs: Mapping[str, Any] | None = None):
        self.path = Path(path)
        check_output_location(self.path, inputs or {}, "--out")
        if self.path.exists() or self.path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
            check_replaceable(self.path, ["gene_store"], "--out")  # only a store `teramind ingest` wrote
        if not self.path.parent.exists():
            raise FileNotFoundError(f"{self.path.parent}: output folder does not exist")
        if not os.access(self.path.parent, os.W_OK):
            raise PermissionError(f"{self.path.parent}: output folder is not writable")
        self.partial = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        return self.partial

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        if self.path.exists():
            try:
                check_replaceable(self.path, ["gene_store"], "--out")  # again: it may have changed during the scan
            except OSError:
                shutil.rmtree(self.partial, ignore_errors=True)
                raise
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
            os.replace(self.partial, self.path)
            try:
                remove_output(old, ["gene_store"], "--out")
            except OSError:  # the new store is in place; a leftover hidden copy of the old one loses nothing
                pass
        else:
            os.replace(self.partial, self.path)


def ingest_batches(
    batches: Callable[[], Iterable[Batch]],
    out: str | Path,
    *,
    source: str,
    um_per_px: float,
    gene_bin: int = 16,
    panel: GenePanel | None = None,
    drop_unknown: bool = False,
    origin: str = "zero",
    canvas: Canvas | None = None,
    num_slices: int | None = None,
    section_spacing_um: float = DEFAULT_SECTION_SPACING_UM,
    coordinate_system: str = "global",
    origin_um: tuple[float, float] | None = None,
    images: Callable[[object, Canvas], None] | None = None,
    provenance: dict | None = None,
    buffer_bins: int = DEFAULT_BUFFER_BINS,
    max_store_bytes: int = DEFAULT_MAX_STORE_BYTES,
    overwrite: bool = False,
    progress_bar: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    chunk: int = 256,
    pad_to: int = DEFAULT_PAD_TO,
    inputs: Mapping[str, Any] | None = None,
) -> IngestReport:
    """The engine under every `ingest_*`: scan `batches()`, check, then bin a second `batches()` into `out`.

    `canvas` (MERSCOPE: the mosaics) fixes the grid instead of the scan's extent; `images(group, canvas)`
    writes the `images` array of the new store; `origin_um` defaults to the canvas origin times `um_per_px`.
    `inputs` (``{"label": path or paths}``, default: the provenance's ``inputs``) are what the store must not be,
    contain or lie inside (`teramind_hf.output_guard`). The canvas is padded to a multiple of `pad_to` px (`teramind generate` works on whole tiles); the data's own
    extent is the `data_shape_px` attribute.
    """
    from tqdm.auto import tqdm

    from ..store import create_training_store

    _check_common(gene_bin, um_per_px, batch_rows, buffer_bins, origin)
    if inputs is None:
        inputs = {"input": (provenance or {}).get("inputs")}
    writer = StoreWriter(out, overwrite, inputs)  # output checks before the (long) scan
    if not (np.isfinite(section_spacing_um) and section_spacing_um > 0):
        raise ValueError(f"section_spacing_um (--section-spacing-um) must be a positive number, got {section_spacing_um}")
    if um_per_px is None:
        raise ValueError(f"{source}: um_per_px is required (microns per image pixel; --um-per-px)")
    if chunk % gene_bin:
        chunk = max(gene_bin, chunk // gene_bin * gene_bin)
    scan = _Scan()
    with tqdm(desc=f"scan {Path(source).name}", unit=" rows", disable=not progress_bar) as bar:
        for batch in batches():
            scan.update(batch)
            bar.update(len(batch))
    if canvas is None:
        # the size check runs on the extent before the canvas (and anything else) is made
        _extent_check(scan, gene_bin, len(panel) if panel is not None else len(scan.genes), max_store_bytes, source)
        canvas = canvas_from_scan(scan, gene_bin, origin, source, num_slices)
    elif scan.section_max >= canvas.num_slices:
        raise ValueError(f"z mismatch: {source} has transcripts in section z={scan.section_max} but Z={canvas.num_slices}")
    if scan.rows and not _scan_meets_canvas(scan, canvas):
        raise ValueError(
            f"{source}: no transcript falls inside the {canvas.height} x {canvas.width} px image canvas (transcripts span "
            f"rows {scan.row_min:.6g}..{scan.row_max:.6g}, columns {scan.col_min:.6g}..{scan.col_max:.6g} px); the "
            "store would hold no counts: check the micron-to-pixel transform or the coordinate units"
        )
    if pad_to < 1 or pad_to % gene_bin:
        raise ValueError(f"pad_to must be a positive multiple of gene_bin={gene_bin}, got {pad_to}")
    data_shape = [canvas.height, canvas.width]
    canvas = replace(canvas, height=-(-canvas.height // pad_to) * pad_to, width=-(-canvas.width // pad_to) * pad_to)
    # the data's genes, sorted, or `panel` (unknown genes refused here, before the store exists)
    panel, _ = panel_for_transcripts(pd.Series(sorted(scan.genes), dtype=object), panel, source, drop_unknown)
    shape = (len(panel), canvas.num_slices, canvas.height // gene_bin, canvas.width // gene_bin)
    check_grid(shape, max_store_bytes, source, f"a canvas of {canvas.height} x {canvas.width} px")
    if origin_um is None:
        origin_um = (canvas.origin_row * um_per_px, canvas.origin_col * um_per_px)
    attrs = {
        "section_spacing_um": float(section_spacing_um),
        "coordinate_system": coordinate_system,
        "origin_um": [float(v) for v in origin_um],
        "data_shape_px": data_shape,
        "ingest": {"source": source, **(provenance or {})},
    }
    with writer as partial:
        group = create_training_store(
            partial, panel, canvas.num_slices, canvas.height, canvas.width, gene_bin=gene_bin,
            um_per_px=float(um_per_px), chunk=chunk, images=images is not None, attrs=attrs,
        )
        accumulator = BinAccumulator(group["genes"], buffer_bins)
        with tqdm(total=scan.rows, desc=f"bin {Path(source).name}", unit=" rows", disable=not progress_bar) as bar:
            read, binned, count, largest = _bin_batches(
                batches(), accumulator, canvas, panel, gene_bin, source, drop_unknown, bar
            )
        if images is not None:
            images(group, canvas)
        group.attrs["complete"] = True
    return IngestReport(
        store=str(out), source=source, shape=shape, gene_bin=gene_bin, um_per_px=float(um_per_px), rows_read=read,
        rows_binned=binned, rows_dropped=read - binned, batches=count, max_batch_rows=largest,
        max_pending_bins=accumulator.max_pending, flushes=accumulator.flushes, images=images is not None,
    )


def _extent_check(scan: _Scan, gene_bin: int, num_genes: int, max_store_bytes: int, source: str) -> None:
    """Name the coordinate column whose extent makes the grid too large (before any canvas is made)."""
    if scan.rows == 0:
        return
    span_y = max(scan.row_max, 0) - min(scan.row_min, 0)
    span_x = max(scan.col_max, 0) - min(scan.col_min, 0)
    shape = (num_genes, scan.section_max + 1, int(span_y // gene_bin) + 1, int(span_x // gene_bin) + 1)
    column, value = ("y", scan.row_max if abs(scan.row_max) >= abs(scan.row_min) else scan.row_min)
    if span_x > span_y:
        column, value = ("x", scan.col_max if abs(scan.col_max) >= abs(scan.col_min) else scan.col_min)
    check_grid(shape, max_store_bytes, source, f"column {column!r} reaching {value:.6g} px")
