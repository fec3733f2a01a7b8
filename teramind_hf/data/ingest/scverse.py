"""SpatialData points and AnnData (`.h5ad`) bins -> gene store (the `spatialdata` extra provides both).

* **SpatialData**: a points element (dask DataFrame x, y, gene column `feature_name`, section column `z` or
  `section`; none = all in section 0; other names through `columns`) is read
  one dask partition at a time and placed in a micron coordinate system through the element's own
  transformation; `um_per_px` turns microns into the store's pixels.
* **AnnData**: observations are bins (or cells) with `obsm["spatial"]` (x, y) coordinates and an optional
  section column in `obs`; `X` (dense or sparse) holds counts per gene and is read in row blocks (backed mode),
  each observation's counts going to the store bin under its coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .engine import DEFAULT_BATCH_ROWS, Batch, IngestReport, check_coordinates, check_sections, ingest_batches
from .table import frame_to_batch, resolve_columns

SPATIALDATA_COLUMNS = {"gene": "feature_name"}


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"reading this format needs the {module!r} package: pip install 'teramind-hf[spatialdata]' ({err})"
        ) from err


# SpatialData's element groups: a store (older versions write no `spatialdata_attrs`) holds only these
SPATIALDATA_GROUPS = ("images", "labels", "points", "shapes", "tables")
# what spatialdata / anndata / h5py raise for a file or folder that holds damaged or foreign data
READ_ERRORS = (ValueError, KeyError, TypeError, OSError, EOFError)


def check_spatialdata_store(path: str | Path, argument: str = "SpatialData store") -> Path:
    """``path`` must be a SpatialData zarr store (root attribute ``spatialdata_attrs``, or only SpatialData element
    groups): ValueError naming it and what it holds otherwise (a gene store, an OME-Zarr, any other folder)."""
    import json

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{argument} {path}: not found")
    if not path.is_dir():
        raise NotADirectoryError(f"{argument} {path}: is a file; expected a SpatialData .zarr folder")
    attrs = {}
    for meta_name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta_path = path / meta_name
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_bytes())
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{meta_path}: not valid JSON ({err}); expected a SpatialData store's metadata") from err
            meta = meta.get(key, {}) if key and isinstance(meta, dict) else meta
            attrs = meta if isinstance(meta, dict) else {}
            break
    else:
        if not (path / ".zgroup").is_file():
            raise ValueError(f"{argument} {path}: not a zarr store (no zarr.json); expected a SpatialData .zarr folder")
    folders = sorted(p.name for p in path.iterdir() if p.is_dir())
    if "spatialdata_attrs" not in attrs and not (folders and set(folders) <= set(SPATIALDATA_GROUPS)):
        raise ValueError(
            f"{argument} {path}: not a SpatialData store (no 'spatialdata_attrs' attribute; it holds {folders[:6]}, "
            f"expected only {list(SPATIALDATA_GROUPS)})"
        )
    return path


def read_spatialdata(path: str | Path, argument: str = "SpatialData store"):
    """``spatialdata.read_zarr`` of a store checked by :func:`check_spatialdata_store`; a store that does not read
    back is refused with `DamagedDataError` naming it."""
    from ..store import DamagedDataError

    spatialdata = _require("spatialdata")
    path = check_spatialdata_store(path, argument)
    try:
        return spatialdata.read_zarr(path)
    except READ_ERRORS as err:
        raise DamagedDataError(f"{argument} {path}: cannot be read as SpatialData ({type(err).__name__}: {err})") from err


def read_h5ad(path: str | Path):
    """``anndata.read_h5ad(path, backed="r")``; a file that is not HDF5, or is cut short, is refused with
    `DamagedDataError` naming it."""
    from ..store import DamagedDataError

    anndata = _require("anndata")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: .h5ad file not found")
    try:
        return anndata.read_h5ad(path, backed="r")
    except READ_ERRORS as err:
        raise DamagedDataError(f"{path}: not a readable .h5ad (HDF5) file ({type(err).__name__}: {err})") from err


def is_spatialdata_store(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "points").is_dir() and not (path / "genes").exists()


def points_affine(element, coordinate_system: str, source: str) -> np.ndarray:
    """The 3x3 affine (x, y, 1) of a SpatialData element into `coordinate_system`; error names the systems."""
    from spatialdata.transformations import get_transformation

    systems = get_transformation(element, get_all=True)
    if coordinate_system not in systems:
        raise ValueError(f"{source}: no coordinate system {coordinate_system!r}; the element has {sorted(systems)}")
    return np.asarray(systems[coordinate_system].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))


def ingest_spatialdata(
    path: str | Path,
    out: str | Path,
    *,
    um_per_px: float,
    points: str | None = None,
    coordinate_system: str = "global",
    columns: dict[str, str] | None = None,
    origin: str = "extent",
    **kwargs,
) -> IngestReport:
    """A SpatialData store's points element -> gene store `out` (partition by partition)."""
    path = Path(path)
    sdata = read_spatialdata(path)
    names = list(sdata.points)
    if points is None:
        if len(names) != 1:
            raise ValueError(f"{path}: pass points=NAME (--points); the store has points elements {names}")
        points = names[0]
    if points not in sdata.points:
        raise ValueError(f"{path}: no points element {points!r}; found {names}")
    element = sdata.points[points]
    source = f"{path}/points/{points}"
    found = list(element.columns)
    # 2-D points keep the section in a column of its own ("z" is a coordinate to spatialdata)
    defaults = {**SPATIALDATA_COLUMNS, **({"z": "section"} if "z" not in found and "section" in found else {})}
    mapping = resolve_columns(found, columns, source, defaults, require_z=False)
    affine = points_affine(element, coordinate_system, source)
    scale = 1.0 / um_per_px

    def batches() -> Iterator[Batch]:
        for i in range(element.npartitions):
            frame = element.get_partition(i).compute()
            if "z" not in mapping:  # no section column: everything is section 0
                frame = frame.assign(_section=np.zeros(len(frame), dtype=np.int64))
            x = check_coordinates(frame[mapping["x"]].to_numpy(), mapping["x"], source)
            y = check_coordinates(frame[mapping["y"]].to_numpy(), mapping["y"], source)
            frame = frame.assign(
                _x_um=affine[0, 0] * x + affine[0, 1] * y + affine[0, 2],
                _y_um=affine[1, 0] * x + affine[1, 1] * y + affine[1, 2],
            )
            yield frame_to_batch(frame, {**mapping, "x": "_x_um", "y": "_y_um", "z": mapping.get("z", "_section")}, scale, source)

    provenance = {"format": "spatialdata", "inputs": [str(path)], "points": points, "columns": mapping}
    return ingest_batches(
        batches, out, source=source, um_per_px=um_per_px, coordinate_system=coordinate_system, origin=origin,
        provenance=provenance, **kwargs,
    )


def ingest_anndata(
    path: str | Path,
    out: str | Path,
    *,
    um_per_px: float,
    spatial_key: str = "spatial",
    section_key: str | None = None,
    units: str = "um",
    origin: str = "extent",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    **kwargs,
) -> IngestReport:
    """An `.h5ad` of binned counts (obs = bins, var = genes, obsm[spatial_key] = (x, y)) -> gene store `out`."""
    path = Path(path)
    if units not in ("px", "um"):
        raise ValueError(f"units must be 'px' or 'um', got {units!r}")
    adata = read_h5ad(path)
    source = str(path)
    if spatial_key not in adata.obsm:
        raise ValueError(f"{source}: no obsm[{spatial_key!r}] coordinates; obsm has {list(adata.obsm.keys())}")
    coords = np.asarray(adata.obsm[spatial_key])
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"{source}: obsm[{spatial_key!r}] must be (n_obs, 2) x, y coordinates, got {coords.shape}")
    scale = 1.0 / um_per_px if units == "um" else 1.0
    cols = check_coordinates(coords[:, 0], f"obsm[{spatial_key!r}][:, 0] (x)", source) * scale
    rows = check_coordinates(coords[:, 1], f"obsm[{spatial_key!r}][:, 1] (y)", source) * scale
    if section_key is None:
        sections = np.zeros(adata.n_obs, dtype=np.int64)
    elif section_key not in adata.obs.columns:
        raise ValueError(f"{source}: no obs column {section_key!r} (section index); obs has {list(adata.obs.columns)}")
    else:
        sections = check_sections(adata.obs[section_key].to_numpy(), f"obs[{section_key!r}]", source)
    gene_names = pd.Index([str(g) for g in adata.var_names])

    def batches() -> Iterator[Batch]:
        import scipy.sparse

        for start in range(0, adata.n_obs, batch_rows):
            stop = min(start + batch_rows, adata.n_obs)
            block = scipy.sparse.coo_matrix(adata.X[start:stop])
            counts = check_coordinates(block.data, "X", source)
            if (counts < 0).any():
                raise ValueError(f"{source}: X has negative counts (expected counts >= 0)")
            obs = block.row + start
            yield Batch(
                rows=rows[obs], cols=cols[obs], sections=sections[obs],
                genes=pd.Series(pd.Categorical.from_codes(block.col, categories=gene_names)), counts=counts,
            )

    provenance = {"format": "anndata", "inputs": [str(path)], "spatial_key": spatial_key, "section_key": section_key}
    try:
        return ingest_batches(
            batches, out, source=source, um_per_px=um_per_px, origin=origin, provenance=provenance,
            batch_rows=batch_rows, **kwargs,
        )
    finally:
        adata.file.close()
