"""Vizgen MERSCOPE output: one run folder per tissue section.

A run holds `detected_transcripts.csv` (global_x, global_y in microns, global_z = z-plane index,
gene), `images/mosaic_DAPI_z{k}.tif`, `images/mosaic_PolyT_z{k}.tif` (usually uint16) and
`images/micron_to_mosaic_pixel_transform.csv` (3x3 affine, whitespace-separated, microns ->
mosaic pixels). All z-planes of a run lie inside one section, so:

* the section image is the **max projection** over planes (default) or one named plane (`plane=k`);
* uint16 mosaics become uint8 by `rescale`: "full" (default) maps 0..65535 linearly to 0..255
  (round(v / 257); exact for images that were uint8 * 257), "percentile" maps 0..p99.9 of the
  section to 0..255 (for dim mosaics);
* every transcript of the run, whatever its plane, goes into the section's gene map.

Sections are stacked in the order of `runs`, each placed at its own mosaic origin (no
registration); smaller mosaics are zero-padded to the largest, and the canvas is cropped to a
multiple of `gene_bin`. Transcripts outside the canvas are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from ..panel import GenePanel
from ..volume import SpatialVolume, bin_transcripts, check_gene_bin, panel_for_transcripts
from .images import read_image

TRANSCRIPTS_FILE = "detected_transcripts.csv"
TRANSFORM_FILE = "images/micron_to_mosaic_pixel_transform.csv"
MERSCOPE_COLUMNS = ("global_x", "global_y", "global_z", "gene")


def read_micron_to_pixel(path: str | Path) -> np.ndarray:
    """The 3x3 micron -> mosaic-pixel affine; ValueError naming the file if it is not 3x3."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MERSCOPE transform file not found")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        matrix = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: transform must be a 3x3 matrix of numbers (whitespace-separated)") from None
    if matrix.shape != (3, 3):
        shape = "x".join(str(len(r)) for r in rows[:1]) if rows else "empty"
        raise ValueError(f"{path}: transform must be a 3x3 matrix, got {len(rows)} rows ({shape} first row)")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{path}: transform has NaN/inf entries; expected a finite micron -> pixel affine")
    if not np.allclose(matrix[2], (0.0, 0.0, 1.0)):
        raise ValueError(f"{path}: transform's last row is {matrix[2].tolist()}; expected 0 0 1 (an affine)")
    if not np.linalg.cond(matrix[:2, :2]) < 1e12:  # singular (cond inf) or numerically so
        raise ValueError(f"{path}: transform is singular (its 2x2 part {matrix[:2, :2].tolist()} has no inverse); expected a micron -> pixel scale")
    return matrix


def read_merscope_transcripts(run: str | Path) -> pd.DataFrame:
    """`detected_transcripts.csv` of a run, columns checked (global_x, global_y, global_z, gene)."""
    path = Path(run) / TRANSCRIPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MERSCOPE transcripts file not found")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in MERSCOPE_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(MERSCOPE_COLUMNS)}")
    table = pd.read_csv(path, usecols=list(MERSCOPE_COLUMNS))
    for col in ("global_x", "global_y", "global_z"):
        bad = ~np.isfinite(pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64))
        if bad.any():
            raise ValueError(f"{path}: column {col!r} has {int(bad.sum())} NaN/non-numeric values")
    return table


def _mosaic_planes(run: Path, stain: str) -> list[Path]:
    pattern = re.compile(rf"^mosaic_{stain}_z(\d+)\.tiff?$")
    found = [(int(m.group(1)), p) for p in (run / "images").glob(f"mosaic_{stain}_z*") if (m := pattern.match(p.name))]
    if not found:
        raise FileNotFoundError(f"{run / 'images'}: no mosaic_{stain}_z*.tif images")
    return [p for _, p in sorted(found)]


def read_section_image(
    run: str | Path, stain: str, plane: int | None = None, rescale: Literal["full", "percentile"] = "full"
) -> np.ndarray:
    """One stain of a run as an (H, W) uint8 section image (max projection or plane `plane`)."""
    planes = _mosaic_planes(Path(run), stain)
    if plane is not None:
        if not 0 <= plane < len(planes):
            raise ValueError(f"{run}: plane={plane} out of range, the run has {len(planes)} {stain} planes")
        image = read_image(planes[plane])
    else:
        image = read_image(planes[0])
        for path in planes[1:]:
            other = read_image(path)
            if other.shape != image.shape:
                raise ValueError(f"{path}: shape {other.shape} differs from {planes[0].name} {image.shape}")
            np.maximum(image, other, out=image)
    if image.ndim != 2:
        raise ValueError(f"{planes[0]}: expected a 2-D mosaic, got shape {image.shape}")
    return to_uint8(image, rescale)


def to_uint8(image: np.ndarray, rescale: Literal["full", "percentile"] = "full") -> np.ndarray:
    """uint8 images pass through; wider integers are rescaled ("full" range or "percentile")."""
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    if rescale == "full":
        top = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    elif rescale == "percentile":
        top = max(float(np.percentile(values, 99.9)), 1e-12)
    else:
        raise ValueError(f"rescale must be 'full' or 'percentile', got {rescale!r}")
    return np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)


def read_merscope(
    runs: Sequence[str | Path],
    *,
    panel: GenePanel | None = None,
    gene_bin: int = 16,
    plane: int | None = None,
    rescale: Literal["full", "percentile"] = "full",
    drop_blanks: bool = True,
    drop_unknown: bool = False,
    um_per_px: float | None = None,
) -> SpatialVolume:
    """Read MERSCOPE runs (one per section, in order) into a `SpatialVolume`.

    `panel` fixes the gene axis (default: all genes of all runs, sorted); `drop_blanks` removes
    `Blank-*` control barcodes; other genes outside `panel` raise unless `drop_unknown`.
    `um_per_px` defaults to 1 / the transform's x scale.
    """
    runs = [Path(r) for r in runs]
    check_gene_bin(gene_bin)
    if not runs:
        raise ValueError("read_merscope: runs is empty (expected one run folder per section)")
    sections, tables, transforms = [], [], []
    for run in runs:
        transform = read_micron_to_pixel(run / TRANSFORM_FILE)
        dapi = read_section_image(run, "DAPI", plane, rescale)
        polyt = read_section_image(run, "PolyT", plane, rescale)
        if dapi.shape != polyt.shape:
            raise ValueError(f"{run}: DAPI mosaic {dapi.shape} and PolyT mosaic {polyt.shape} differ in shape")
        table = read_merscope_transcripts(run)
        if drop_blanks:
            table = table[~table["gene"].astype(str).str.startswith("Blank-")]
        sections.append((dapi, polyt))
        tables.append(table)
        transforms.append(transform)
    height = max(s[0].shape[0] for s in sections) // gene_bin * gene_bin
    width = max(s[0].shape[1] for s in sections) // gene_bin * gene_bin
    if height == 0 or width == 0:
        raise ValueError(f"read_merscope: mosaics smaller than gene_bin={gene_bin} px")
    images = np.zeros((2, len(runs), height, width), dtype=np.uint8)
    for z, (dapi, polyt) in enumerate(sections):
        h, w = min(dapi.shape[0], height), min(dapi.shape[1], width)
        images[0, z, :h, :w], images[1, z, :h, :w] = dapi[:h, :w], polyt[:h, :w]
    all_genes = pd.concat([t["gene"] for t in tables], ignore_index=True)
    panel, gene_index = panel_for_transcripts(all_genes, panel, f"read_merscope({runs[0].parent})", drop_unknown)
    rows, cols, zs = [], [], []
    for z, (table, transform) in enumerate(zip(tables, transforms)):
        x_um, y_um = table["global_x"].to_numpy(np.float64), table["global_y"].to_numpy(np.float64)
        cols.append(transform[0, 0] * x_um + transform[0, 1] * y_um + transform[0, 2])
        rows.append(transform[1, 0] * x_um + transform[1, 1] * y_um + transform[1, 2])
        zs.append(np.full(len(table), z, dtype=np.int64))
    genes = bin_transcripts(
        np.concatenate(rows), np.concatenate(cols), np.concatenate(zs), gene_index, None,
        num_genes=len(panel), num_slices=len(runs), grid_shape=(height // gene_bin, width // gene_bin),
        gene_bin=gene_bin,
    )
    if um_per_px is None:
        um_per_px = 1.0 / float(np.hypot(transforms[0][0, 0], transforms[0][1, 0]))
    return SpatialVolume(genes=genes, panel=panel, gene_bin=gene_bin, images=images, um_per_px=um_per_px)


MERSCOPE_OFFSET_UM = (1234.5, -678.25)  # (x, y) of mosaic pixel (0, 0) in the written runs' global microns


def write_merscope_runs(
    out_dir: str | Path, images: np.ndarray, transcripts: pd.DataFrame, um_per_px: float
) -> list[Path]:
    """Write (2, Z, H, W) uint8 images and a transcripts table (x, y px, z section, gene) as MERSCOPE output,
    one run folder `section_ZZ` per section (what the phantom's "merscope" format is).

    Each run holds `detected_transcripts.csv` (global_x/global_y in microns, offset by `MERSCOPE_OFFSET_UM` so
    the transform matters, global_z plane 0 or 1, gene, plus fov/transcript_id columns like real runs),
    `images/mosaic_{DAPI,PolyT}_z{0,1}.tif` as uint16 (plane 0 = image * 257, plane 1 = half as bright, so the
    max projection with the "full" rescale gives the image back exactly) and the micron -> pixel transform.
    """
    import tifffile

    out = Path(out_dir)
    scale = 1.0 / um_per_px
    ox, oy = MERSCOPE_OFFSET_UM
    transform = np.array([[scale, 0.0, -ox * scale], [0.0, scale, -oy * scale], [0.0, 0.0, 1.0]])
    runs = []
    for z in range(images.shape[1]):
        run = out / f"section_{z:02d}"
        (run / "images").mkdir(parents=True, exist_ok=True)
        table = transcripts[transcripts["z"] == z]
        n = len(table)
        pd.DataFrame(
            {
                "transcript_id": np.arange(n),
                "fov": (table["y"].to_numpy() // 256).astype(np.int64),
                "global_x": table["x"].to_numpy() * um_per_px + ox,
                "global_y": table["y"].to_numpy() * um_per_px + oy,
                "global_z": np.arange(n) % 2,
                "gene": table["gene"].to_numpy(),
            }
        ).to_csv(run / TRANSCRIPTS_FILE, index=False)
        for stain, name in enumerate(("DAPI", "PolyT")):
            for k, plane in enumerate((images[stain, z], images[stain, z] // 2)):
                tifffile.imwrite(run / "images" / f"mosaic_{name}_z{k}.tif", plane.astype(np.uint16) * 257)
        np.savetxt(run / TRANSFORM_FILE, transform, fmt="%.10g", delimiter=" ")
        runs.append(run)
    return runs
