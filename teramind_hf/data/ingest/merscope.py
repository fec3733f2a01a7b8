"""MERSCOPE runs (one per section, in order) -> gene store with DAPI/PolyT, transcripts read in CSV chunks.

The layout and conventions are those of `teramind_hf.data.readers.merscope` (max projection or one plane,
uint16 -> uint8 rescale, each run at its own mosaic origin, canvas = the largest mosaic cropped to whole bins,
transcripts outside it dropped); only the transcripts are streamed. Each section's mosaics are read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd

from ..readers.merscope import (
    MERSCOPE_COLUMNS,
    TRANSCRIPTS_FILE,
    TRANSFORM_FILE,
    _mosaic_planes,
    read_micron_to_pixel,
    read_section_image,
)
from ..volume import check_gene_bin
from .engine import DEFAULT_BATCH_ROWS, Batch, Canvas, IngestReport, check_coordinates, ingest_batches


def is_merscope_run(path: str | Path) -> bool:
    return (Path(path) / TRANSCRIPTS_FILE).is_file()


def merscope_runs(location: str | Path) -> list[Path]:
    """A run folder itself, or a folder whose sub-folders (sorted by name) are runs, one per section. A sub-folder
    that looks like a run (it has the run's ``images/`` or transform) but lacks its transcripts is refused by name,
    not skipped (a section would silently go missing)."""
    path = Path(location)
    if is_merscope_run(path):
        return [path]
    folders = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    runs = [p for p in folders if is_merscope_run(p)]
    if not runs:
        raise FileNotFoundError(f"{path}: not a MERSCOPE run (no {TRANSCRIPTS_FILE}) nor a folder of runs")
    incomplete = [p for p in folders if not is_merscope_run(p) and ((p / "images").is_dir() or (p / TRANSFORM_FILE).exists())]
    if incomplete:
        raise FileNotFoundError(
            f"{incomplete[0] / TRANSCRIPTS_FILE}: MERSCOPE transcripts file not found, but {incomplete[0].name} holds a "
            f"run's images ({len(incomplete)} such folder(s)); every section needs its {TRANSCRIPTS_FILE}"
        )
    return runs


def merscope_extent(runs: Sequence[str | Path], gene_bin: int = 16) -> tuple[int, int, int]:
    """``(sections, height, width)`` px of the store `ingest_merscope` would write (the largest mosaic cropped to
    whole bins), from the TIFF headers only: a region can be checked against it before anything is ingested."""
    check_gene_bin(gene_bin)
    shapes = [_mosaic_shape(Path(run), "DAPI") for run in runs]
    return len(shapes), max(s[0] for s in shapes) // gene_bin * gene_bin, max(s[1] for s in shapes) // gene_bin * gene_bin


def _mosaic_shape(run: Path, stain: str) -> tuple[int, int]:
    """(H, W) shared by every plane of a stain, from the TIFF headers; errors name the file."""
    import tifffile

    shapes = {}
    for path in _mosaic_planes(run, stain):
        try:
            with tifffile.TiffFile(path) as tif:
                shapes[path.name] = tuple(int(n) for n in tif.pages[0].shape)
        except Exception as err:  # tifffile raises several types for a corrupt file
            raise ValueError(f"{path}: cannot read the TIFF mosaic ({err})") from err
        if len(shapes[path.name]) != 2:
            raise ValueError(f"{path}: expected a 2-D mosaic, got shape {shapes[path.name]}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{run / 'images'}: the {stain} planes differ in shape: {shapes}")
    return next(iter(shapes.values()))


def _section_image(run: Path, stain: str, plane: int | None, rescale: str):
    try:
        return read_section_image(run, stain, plane, rescale)
    except (OSError, ValueError) as err:  # e.g. a truncated TIFF whose header read fine
        raise ValueError(f"{run / 'images'}: cannot read the {stain} mosaic ({err})") from err


def ingest_merscope(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    gene_bin: int = 16,
    plane: int | None = None,
    rescale: Literal["full", "percentile"] = "full",
    drop_blanks: bool = True,
    um_per_px: float | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    **kwargs,
) -> IngestReport:
    """Ingest MERSCOPE runs into gene store `out` (with images); `um_per_px` defaults to 1 / the first run's
    transform scale. Other keyword arguments (panel, section_spacing_um, overwrite, ...) go to `ingest_batches`."""
    runs = [Path(r) for r in runs]
    check_gene_bin(gene_bin)
    if not runs:
        raise ValueError("ingest_merscope: runs is empty (expected one run folder per section)")
    transforms, shapes = [], []
    for run in runs:
        if not is_merscope_run(run):
            raise FileNotFoundError(f"{run / TRANSCRIPTS_FILE}: MERSCOPE transcripts file not found")
        header = pd.read_csv(run / TRANSCRIPTS_FILE, nrows=0).columns
        missing = [c for c in MERSCOPE_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{run / TRANSCRIPTS_FILE}: missing column(s) {missing}; expected {list(MERSCOPE_COLUMNS)}")
        transforms.append(read_micron_to_pixel(run / TRANSFORM_FILE))
        dapi, polyt = _mosaic_shape(run, "DAPI"), _mosaic_shape(run, "PolyT")
        if dapi != polyt:
            raise ValueError(f"{run}: DAPI mosaic {dapi} and PolyT mosaic {polyt} differ in shape")
        if plane is not None and not 0 <= plane < len(_mosaic_planes(run, "DAPI")):
            raise ValueError(f"{run}: plane={plane} out of range, the run has {len(_mosaic_planes(run, 'DAPI'))} DAPI planes")
        shapes.append(dapi)
    height = max(s[0] for s in shapes) // gene_bin * gene_bin
    width = max(s[1] for s in shapes) // gene_bin * gene_bin
    if height == 0 or width == 0:
        raise ValueError(f"ingest_merscope: mosaics smaller than gene_bin={gene_bin} px")
    if um_per_px is None:
        um_per_px = 1.0 / float(np.hypot(transforms[0][0, 0], transforms[0][1, 0]))

    def batches() -> Iterator[Batch]:
        for z, (run, transform) in enumerate(zip(runs, transforms)):
            path = run / TRANSCRIPTS_FILE
            with pd.read_csv(path, usecols=list(MERSCOPE_COLUMNS), chunksize=batch_rows) as reader:
                for frame in reader:
                    if drop_blanks:
                        frame = frame[~frame["gene"].astype(str).str.startswith("Blank-")]
                    if frame["gene"].isna().any():
                        raise ValueError(f"{path}: column 'gene' has {int(frame['gene'].isna().sum())} missing values")
                    x_um = check_coordinates(frame["global_x"].to_numpy(), "global_x", str(path))
                    y_um = check_coordinates(frame["global_y"].to_numpy(), "global_y", str(path))
                    check_coordinates(frame["global_z"].to_numpy(), "global_z", str(path))
                    yield Batch(
                        rows=transform[1, 0] * x_um + transform[1, 1] * y_um + transform[1, 2],
                        cols=transform[0, 0] * x_um + transform[0, 1] * y_um + transform[0, 2],
                        sections=np.full(len(frame), z, dtype=np.int64),
                        genes=frame["gene"].astype(str),
                    )

    def write_images(group, canvas: Canvas) -> None:
        for z, run in enumerate(runs):
            for stain, name in enumerate(("DAPI", "PolyT")):
                image = _section_image(run, name, plane, rescale)
                h, w = min(image.shape[0], canvas.height), min(image.shape[1], canvas.width)
                group["images"][stain, z, :h, :w] = image[:h, :w]

    # pixel (0, 0) of the first run's mosaic, in its global micron coordinates (x, y) -> stored as (y, x)
    corner = np.linalg.solve(transforms[0], np.array([0.0, 0.0, 1.0]))
    provenance = {
        "format": "merscope", "inputs": [str(r) for r in runs], "plane": plane, "rescale": rescale,
        "drop_blanks": drop_blanks,
    }
    return ingest_batches(
        batches, out, source=str(runs[0].parent if len(runs) > 1 else runs[0]), um_per_px=um_per_px,
        gene_bin=gene_bin, canvas=Canvas(0, 0, height, width, len(runs)), images=write_images,
        origin_um=(float(corner[1]), float(corner[0])), provenance=provenance, batch_rows=batch_rows, **kwargs,
    )
