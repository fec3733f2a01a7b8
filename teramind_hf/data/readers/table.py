"""A plain transcripts table (CSV or Parquet: x, y, z, gene [, count]) plus optional images.

x is the column, y the row, z the section index. Coordinates are image pixels (`units="px"`,
the phantom's convention) or microns (`units="um"` with `um_per_px`). Images are a TIFF or
.npy file (or array) of shape (2, Z, H, W) uint8, DAPI then PolyT. SpatialData/AnnData-style
points (a DataFrame, or a dask DataFrame with `.compute()`, with a gene column such as
`feature_name`) go through `read_points`, without needing spatialdata installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..panel import GenePanel
from ..volume import SpatialVolume, bin_transcripts, check_gene_bin, check_transcripts, panel_for_transcripts
from .images import read_image


def load_table(path: str | Path) -> pd.DataFrame:
    """A transcripts table from .csv/.tsv/.parquet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: transcripts table not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    raise ValueError(f"{path}: unsupported table format {suffix!r} (expected .csv, .tsv or .parquet)")


def load_images(images: str | Path | np.ndarray) -> np.ndarray:
    """(2, Z, H, W) uint8 images from a .tif/.tiff/.npy path or an array."""
    if isinstance(images, (str, Path)):
        array, source = read_image(images), str(images)
    else:
        array, source = np.asarray(images), "images"
    if array.ndim != 4 or array.shape[0] != 2 or array.dtype != np.uint8:
        raise ValueError(f"{source}: images must be (2, Z, H, W) uint8 (DAPI, PolyT), got {array.shape} {array.dtype}")
    return array


def read_transcript_table(
    table: str | Path | pd.DataFrame,
    *,
    images: str | Path | np.ndarray | None = None,
    panel: GenePanel | None = None,
    gene_bin: int = 16,
    units: Literal["px", "um"] = "px",
    um_per_px: float | None = None,
    shape: tuple[int, int] | None = None,
    num_slices: int | None = None,
    drop_unknown: bool = False,
    max_bytes: int | None = None,
) -> SpatialVolume:
    """Bin a transcripts table (and attach images) into a `SpatialVolume`.

    The canvas is the images' (H, W), else `shape`, else the extent of the transcripts, rounded
    down/up to a multiple of `gene_bin` (images: cropped down). Z is the images' Z, else
    `num_slices`, else max(z) + 1; transcripts with z outside 0..Z-1 are an error. A grid that would need more
    than `max_bytes` (default: the machine's memory) is refused before it is allocated.
    """
    source = str(table) if isinstance(table, (str, Path)) else "transcripts table"
    check_gene_bin(gene_bin)
    frame = load_table(table) if isinstance(table, (str, Path)) else table
    check_transcripts(frame, source)
    if units not in ("px", "um"):
        raise ValueError(f"units must be 'px' or 'um', got {units!r}")
    if units == "um" and not um_per_px:
        raise ValueError(f"{source}: units='um' needs um_per_px (microns per image pixel)")
    scale = 1.0 / um_per_px if units == "um" else 1.0
    rows = frame["y"].to_numpy(np.float64) * scale
    cols = frame["x"].to_numpy(np.float64) * scale
    z = frame["z"].to_numpy(np.float64)
    if (z != np.round(z)).any() or (z < 0).any():
        raise ValueError(f"{source}: column 'z' must hold non-negative integer section indices")
    z = z.astype(np.int64)
    image_array = load_images(images) if images is not None else None
    num_slices = _num_slices(source, z, image_array, num_slices)
    height, width = _canvas(rows, cols, image_array, shape, gene_bin, source)
    if image_array is not None:
        image_array = np.ascontiguousarray(image_array[:, :, :height, :width])
    panel, gene_index = panel_for_transcripts(frame["gene"], panel, source, drop_unknown)
    counts = frame["count"].to_numpy(np.float64) if "count" in frame.columns else None
    genes = bin_transcripts(
        rows, cols, z, gene_index, counts, num_genes=len(panel), num_slices=num_slices,
        grid_shape=(height // gene_bin, width // gene_bin), gene_bin=gene_bin, max_bytes=max_bytes, source=source,
    )
    return SpatialVolume(genes=genes, panel=panel, gene_bin=gene_bin, images=image_array, um_per_px=um_per_px)


def _num_slices(source: str, z: np.ndarray, images: np.ndarray | None, num_slices: int | None) -> int:
    z_max = int(z.max()) + 1 if len(z) else 0
    if images is not None:
        if num_slices is not None and num_slices != images.shape[1]:
            raise ValueError(f"z mismatch: num_slices={num_slices} but images have Z={images.shape[1]}")
        num_slices = images.shape[1]
    num_slices = z_max if num_slices is None else num_slices
    if z_max > num_slices:
        raise ValueError(
            f"z mismatch: {source} has transcripts in section z={z_max - 1} but images/num_slices give Z={num_slices}"
        )
    if num_slices < 1:
        raise ValueError(f"{source}: no transcripts and no images/num_slices: cannot tell the number of sections")
    return num_slices


def _canvas(
    rows: np.ndarray, cols: np.ndarray, images: np.ndarray | None, shape: tuple[int, int] | None, gene_bin: int, source: str
) -> tuple[int, int]:
    if images is not None:
        height, width = images.shape[2] // gene_bin * gene_bin, images.shape[3] // gene_bin * gene_bin
    elif shape is not None:
        height, width = (-(-int(s) // gene_bin) * gene_bin for s in shape)
    elif len(rows):
        height = (int(np.floor(rows.max())) // gene_bin + 1) * gene_bin
        width = (int(np.floor(cols.max())) // gene_bin + 1) * gene_bin
    else:
        height = width = 0
    if height <= 0 or width <= 0:
        raise ValueError(f"empty region: {source} gives a canvas of {height}x{width} px (gene_bin={gene_bin})")
    return height, width


def read_points(
    points: Any,
    *,
    gene_key: str = "gene",
    x_key: str = "x",
    y_key: str = "y",
    z_key: str | None = "z",
    count_key: str | None = None,
    **kwargs: Any,
) -> SpatialVolume:
    """SpatialData/AnnData-shaped points (e.g. `sdata.points["transcripts"]`, gene column
    `feature_name`) -> `SpatialVolume`. Without a z column all points go to section 0.
    Keyword arguments go to `read_transcript_table`.
    """
    frame = points.compute() if hasattr(points, "compute") else points
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"read_points: expected a (dask) DataFrame of points, got {type(points).__name__}")
    wanted = [k for k in (gene_key, x_key, y_key, z_key, count_key) if k is not None]
    missing = [k for k in wanted if k not in frame.columns]
    if missing:
        raise ValueError(f"read_points: missing column(s) {missing}; found {list(frame.columns)}")
    table = pd.DataFrame(
        {
            "x": frame[x_key].to_numpy(),
            "y": frame[y_key].to_numpy(),
            "z": frame[z_key].to_numpy() if z_key is not None else np.zeros(len(frame), dtype=np.int64),
            "gene": frame[gene_key].astype(str).to_numpy(),
        }
    )
    if count_key is not None:
        table["count"] = frame[count_key].to_numpy()
    return read_transcript_table(table, **kwargs)
