"""Every check of `teramind generate` / :func:`generate_to_zarr` that can run before the output is touched.

A run must not fail halfway (after hours, with a half-written output) on input it could have checked up front, and a
refused run must leave an earlier output as it was. These are pure functions of the arguments, the pipeline's
config and the gene source; each raises ``ValueError`` / ``FileExistsError`` / ``PermissionError`` naming the
argument or file and what was expected (the CLI prints that one line, no traceback):

* :func:`check_generate_arguments`: numbers (steps, batch size, memory limit, physical scale, seed);
* :func:`check_steps_against_schedule`: no more denoising steps than the training schedule has timesteps;
* :func:`check_region`: the region and sections against the gene data;
* :func:`check_gene_values`: the gene counts the run reads, streamed block by block (bounded memory): dtype, NaN,
  inf, negative values, with the first bad position;
* :func:`check_output_path`, :func:`check_report_location`: where the output and the JSON report go.

:func:`teramind_hf.pipelines.sampling_run.prepare_sampling` (the one preparation of a run, in memory or streamed)
runs the argument, schedule and region checks, the tile geometry (``TileGrid``) and the panel alignment;
:func:`preflight_generate` adds what only a streamed run needs (output path, gene scan) before the output is opened;
the CLI calls the argument and path checks before it even loads the model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..output_guard import probe_writable

# a block of the gene scan holds at most this many bytes (as read + as float64 for the checks)
DEFAULT_SCAN_BLOCK_BYTES = 64 * 2**20
SEED_RANGE = (0, 2**63 - 1)


# ---------------------------------------------------------------------------------------------- arguments
def check_generate_arguments(
    *,
    num_inference_steps: int | None = None,
    batch_size: int = 1,
    memory_limit_bytes: float = 0,
    um_per_px: float | None = None,
    section_spacing_um: float | None = None,
    seed: Any = 0,
    min_gene_overlap: float = 0.5,
    threads: int = 0,
) -> None:
    """Numbers of a run: whole and positive where they count things, finite and positive where they measure
    (``num_inference_steps=None``: the pipeline's default)."""
    for name, value in (("num_inference_steps", num_inference_steps), ("batch_size", batch_size)):
        if name == "num_inference_steps" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} (--{name.replace('num_inference_', '').replace('_', '-')}) must be a whole number >= 1, got {value!r}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"--threads must be a whole number >= 0 (0: torch's default), got {threads!r}")
    if not (isinstance(memory_limit_bytes, (int, float)) and math.isfinite(memory_limit_bytes) and memory_limit_bytes >= 0):
        raise ValueError(f"memory_limit_bytes (--memory-limit-mb) must be a finite number >= 0, got {memory_limit_bytes!r} bytes")
    for name, value in (("um_per_px", um_per_px), ("section_spacing_um", section_spacing_um)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a finite number > 0, got {value!r}")
    if not (isinstance(min_gene_overlap, (int, float)) and 0 <= min_gene_overlap <= 1):
        raise ValueError(f"min_gene_overlap must be a fraction in [0, 1], got {min_gene_overlap!r}")
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            raise ValueError(f"seed (--seed) must be in [0, 2**63 - 1], got {seed}")


def check_steps_against_schedule(num_inference_steps: int, scheduler) -> None:
    """DDIM and friends pick ``num_inference_steps`` of the training timesteps: there cannot be more."""
    total = getattr(scheduler, "config", {}).get("num_train_timesteps")
    if total is not None and num_inference_steps > total:
        raise ValueError(
            f"num_inference_steps (--steps) = {num_inference_steps} exceeds the {total} timesteps of the model's "
            f"training schedule; use at most {total} (15 is the official setting)"
        )


# ---------------------------------------------------------------------------------------------- gene values
def scan_block_shape(shape: tuple[int, ...], chunks: Any, block_bytes: int, width: int) -> tuple[int, int, int]:
    """``(genes, rows, cols)`` of one scan block of one section, holding at most ``block_bytes`` as float64 for
    any array shape and chunk shape: whole chunks (zarr ``chunks`` ``(G, 1, rows, cols)``) when one fits, else a
    part of a chunk; genes are split only when one bin of all genes does not fit. ``width``: bins scanned in x."""
    budget = max(block_bytes // 8, 1)  # float64 values per block
    genes = min(int(shape[0]), budget)
    unit_rows = unit_cols = 1
    if isinstance(chunks, tuple) and len(chunks) == 4 and genes * chunks[2] * chunks[3] <= budget:
        unit_rows, unit_cols = int(chunks[2]), int(chunks[3])  # whole chunks: each chunk decoded once
    cols = min(width, max(budget // (genes * unit_rows) // unit_cols, 1) * unit_cols)
    rows = max(budget // (genes * cols) // unit_rows, 1) * unit_rows
    return genes, rows, max(cols, 1)


def check_gene_values(
    source,
    bins_y: tuple[int, int] | None = None,
    bins_x: tuple[int, int] | None = None,
    sections: tuple[int, int] | None = None,
    block_bytes: int = DEFAULT_SCAN_BLOCK_BYTES,
    progress_bar: bool = False,
) -> None:
    """Stream the counts a run reads, block by block, and refuse a non-numeric dtype, NaN, inf or negative values,
    naming the source and the first bad position (gene, section, bin). Memory is bounded by ``block_bytes`` whatever
    the array's chunk shape (:func:`scan_block_shape`)."""
    genes = source.genes
    shape = tuple(int(n) for n in genes.shape)
    dtype = np.dtype(getattr(genes, "dtype", np.float32))
    if dtype.kind not in "uif":
        raise ValueError(f"genes in {source.location}: dtype {dtype} is not a number type; expected integer or float transcript counts")
    if dtype.kind == "u":  # nothing to find in unsigned integers
        return
    num_genes, z, hb, wb = shape
    y0, y1 = bins_y or (0, hb)
    x0, x1 = bins_x or (0, wb)
    s0, s1 = sections or (0, z)
    step_g, rows, cols = scan_block_shape(shape, getattr(genes, "chunks", None), block_bytes, max(x1 - x0, 1))
    count = (s1 - s0) * len(range(0, num_genes, step_g)) * len(range(y0, y1, rows)) * len(range(x0, x1, cols))
    blocks = (
        (s, g, r, c)
        for s in range(s0, s1) for r in range(y0, y1, rows) for c in range(x0, x1, cols) for g in range(0, num_genes, step_g)
    )
    from tqdm.auto import tqdm

    names = source.gene_names
    for s, g0, r, c in tqdm(blocks, total=count, desc="checking gene counts", unit="block", disable=not progress_bar or count < 2):
        block = np.asarray(genes[g0 : g0 + step_g, s : s + 1, r : min(r + rows, y1), c : min(c + cols, x1)])
        bad = ~np.isfinite(block) if dtype.kind == "f" else np.zeros(block.shape, dtype=bool)
        kind = "NaN/inf"
        if not bad.any():
            bad, kind = block < 0, "negative"
            if not bad.any():
                continue
        g, _, y, x = (int(v) for v in np.argwhere(bad)[0])
        value = block[g, 0, y, x].item()
        g += g0
        gene = f"{names[g]!r} (index {g})" if names is not None and g < len(names) else f"index {g}"
        raise ValueError(
            f"genes in {source.location}: {int(bad.sum())} {kind} value(s) in section {s}, first at gene {gene}, "
            f"bin y={r + y}, x={c + x} ({value!r}); expected finite transcript counts >= 0"
        )


# ---------------------------------------------------------------------------------------------- paths
def _is_local_location(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def check_output_path(out: str | Path, argument: str = "--out", kind: str = "an OME-Zarr folder") -> None:
    """The output is a folder: an existing file there is never replaced, --overwrite or not."""
    out = str(out)
    if not _is_local_location(out):
        return
    path = Path(out.removeprefix("file://"))
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{argument} {out} is an existing file, not {kind}: remove it or choose another {argument}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"{argument} {out}: {parent} is a file, so no folder can be created below it")
            break


def check_report_location(report_json: str | None) -> None:
    """``--report-json`` must be a file path whose folder exists and can be written (checked before the run)."""
    if not report_json:
        return
    path = Path(report_json)
    if path.is_dir():
        raise IsADirectoryError(f"--report-json {report_json} is a folder; expected a file path such as report.json")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--report-json {report_json}: folder {path.parent} does not exist")
    if path.exists():  # replaced in place: the file itself must be writable, its folder need not be
        if not os.access(path, os.W_OK):
            raise PermissionError(f"--report-json {report_json}: the existing file is not writable")
        return
    probe_writable(path.parent, f"--report-json {report_json}")


# ---------------------------------------------------------------------------------------------- region
def check_region(
    shape: tuple[int, int, int, int], gene_bin: int, tile_size: int, region: tuple[int, int, int, int] | None,
    slices: tuple[int, int] | None, location: str = "the gene data",
) -> tuple[int, int, int, int, int, int]:
    """``(y0, x0, h, w, start, stop)``: the requested region (image px, whole tiles) and sections, checked against
    the gene data's ``(G, Z, Hb, Wb)`` shape; defaults: everything."""
    _, sections, bins_h, bins_w = shape
    full_h, full_w = bins_h * gene_bin, bins_w * gene_bin
    y0, x0, h, w = region if region is not None else (0, 0, full_h, full_w)
    if h <= 0 or w <= 0 or y0 < 0 or x0 < 0 or y0 + h > full_h or x0 + w > full_w:
        raise ValueError(
            f"region y0,x0,h,w = {y0},{x0},{h},{w} px lies outside the gene data ({full_h} x {full_w} px = "
            f"{bins_h} x {bins_w} bins of {gene_bin} px in {location})"
        )
    if region is None and (full_h % tile_size or full_w % tile_size):
        raise ValueError(f"the gene data ({location}) is {full_h} x {full_w} px, not a whole number of {tile_size}-px tiles: "
                         "pad it to whole tiles or pass a region of whole tiles")
    for name, value in (("y0", y0), ("x0", x0), ("h", h), ("w", w)):
        if value % tile_size:
            raise ValueError(f"region {name}={value} px must be a multiple of the tile size ({tile_size} px)")
    start, stop = slices if slices is not None else (0, sections)
    if not 0 <= start < stop <= sections:
        raise ValueError(f"slices {start},{stop} must satisfy 0 <= start < stop <= {sections} (sections in the gene data)")
    return y0, x0, h, w, start, stop


# ---------------------------------------------------------------------------------------------- all
def preflight_generate(source, out: str, plan, progress_bar: bool = False) -> None:
    """The checks of a streamed run that its sampling plan (``TeraMindPipeline.prepare_sampling``, which checks the
    arguments, geometry, region and panel) leaves: the output path, and every gene count the run reads, streamed.

    The gene scan covers the bins of the computed region and every section its gene windows read (a z chunk is
    conditioned on neighbouring sections too).
    """
    from ..sampling.grid import gene_window_range

    check_output_path(out)
    grid, b = plan.tile_grid, plan.tile_grid.gene_bin
    y0, x0, h, w = plan.computed
    lo = gene_window_range(grid.chunk_starts[0], grid.num_slices, grid.gene_slices)[0]
    hi = gene_window_range(grid.chunk_starts[-1], grid.num_slices, grid.gene_slices)[1]
    check_gene_values(
        source, (y0 // b, (y0 + h) // b), (x0 // b, (x0 + w) // b), (max(lo, 0), min(hi, source.num_sections)),
        progress_bar=progress_bar,
    )


def resolve_origin_um(source, origin_um, origin_unknown: bool, required: bool = False) -> tuple[float, float] | None:
    """The micron origin (y, x) of the source's pixel (0, 0): given, else the store's; None when the caller says it
    is unknown. Never a silent zero: an unknown origin not declared so is an error with ``required`` (the CLI),
    else a warning (the Python API, where arrays rarely carry one)."""
    from ..data.store import check_origin_um

    if origin_um is not None and origin_unknown:
        raise ValueError("origin_um (--origin-um) and origin_unknown (--origin-unknown) exclude each other")
    if origin_um is not None:
        return check_origin_um(origin_um, "origin_um (--origin-um)")
    if source.attrs.get("origin_um") is not None:
        return check_origin_um(source.attrs["origin_um"], f"{source.location}: attribute 'origin_um'")
    if required and not origin_unknown:
        raise ValueError(
            f"{source.location}: the gene source records no micron origin (no 'origin_um' attribute, which `teramind "
            f"ingest` writes); pass --origin-um Y,X (micrometres of its pixel (0, 0)) to place the output, or "
            f"--origin-unknown to place it in the source's pixel frame with origin_um null in its run record"
        )
    if not origin_unknown:
        import warnings

        warnings.warn(
            f"{source.location}: the gene source records no micron origin (no 'origin_um' attribute, which `teramind "
            f"ingest` writes): the output is placed in its pixel frame and its run record says origin_um null; pass "
            f"--origin-um Y,X (origin_um=(y, x), micrometres of its pixel (0, 0)), or --origin-unknown "
            f"(origin_unknown=True) to silence this",
            UserWarning, stacklevel=3,
        )
    return None
