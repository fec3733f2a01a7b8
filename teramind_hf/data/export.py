"""Out to the scverse formats (the `spatialdata` extra): generated morphology as SpatialData images, gene stores
as `.h5ad` bins, transcripts as SpatialData points.

`export_spatialdata` places a `teramind generate` output in the micron coordinate system of the data it came
from: pixel (y, x) of the output is at `origin_um + (region origin + (y, x)) * um_per_px`, where `origin_um` and
`coordinate_system` are numbers the output's run record copied from the gene store (`teramind ingest` writes
them); an output without them needs `origin_um` or `origin_unknown`. One 2-D multiscale image element (channels
DAPI, PolyT; the output's own pyramid) per section, streamed block by block from the output's zarr levels, so
napari-spatialdata shows it over the real images and points.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .ingest.scverse import _require, check_spatialdata_store, read_spatialdata


# attribute of each image element written here (what --overwrite may replace); name shared with output_guard
EXPORT_MARKER = "teramind_export"


def _output_placement(
    out: str | Path, origin_um: tuple[float, float] | None = None, origin_unknown: bool = False
) -> dict:
    """Region, slices, scale, levels and micron origin of a `teramind generate` output, from its run record alone
    (never from its gene store's path, which may be relative, moved or gone)."""
    import zarr

    from .store import check_origin_um

    try:
        group = zarr.open_group(str(out), mode="r")
        run = dict(group.attrs["teramind"])["run"]
        levels = [group[d["path"]] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    except Exception as err:  # zarr / KeyError for "not a teramind output"
        raise ValueError(f"{out}: not a complete `teramind generate` OME-Zarr output ({err})") from err
    if not dict(group.attrs["teramind"]).get("complete"):
        raise ValueError(f"{out}: the generation is not complete (rerun `teramind generate` to finish it)")
    if origin_um is not None and origin_unknown:
        raise ValueError("--origin-um and --origin-unknown exclude each other")
    if origin_um is not None:
        origin = check_origin_um(origin_um, "--origin-um")
    elif run.get("origin_um") is not None:
        origin = check_origin_um(run["origin_um"], f"{out}/zarr.json: run record 'origin_um'")
    elif origin_unknown:
        origin = (0.0, 0.0)
    else:
        why = "records an unknown origin (origin_um null)" if "origin_um" in run else "predates micron origins in the run record"
        raise ValueError(
            f"{out}: the output {why}, so its images cannot be placed over the tissue: pass --origin-um Y,X "
            f"(micrometres of the gene source's pixel (0, 0)) or --origin-unknown (place them in its pixel frame)"
        )
    y0, x0, _, _ = run["region_yxhw"]
    um = float(run["um_per_px"])
    return {
        "levels": levels, "slices": run["slices"], "um_per_px": um,
        "coordinate_system": run.get("coordinate_system") or "global",
        "translation_yx": (origin[0] + y0 * um, origin[1] + x0 * um),
    }


def check_export_target(
    to: str | Path, name: str, overwrite: bool, inputs: dict | None = None, argument: str = "--to"
) -> None:
    """Before generating: refuse a `--spatialdata` target that already holds `{name}_z*` images, or is a file, or
    is, contains or lies inside one of `inputs` (``{"--like": path, ...}``: what the command reads)."""
    from ..output_guard import check_can_create, check_output_location, check_replaceable

    check_output_location(to, inputs or {}, argument)
    to = Path(to)
    if to.is_file():
        raise FileExistsError(f"{to} is a file; --spatialdata needs a SpatialData .zarr folder (new or existing)")
    clash = sorted(p.name for p in (to / "images").glob(f"{name}_z*")) if to.is_dir() else []
    if clash and not overwrite:
        raise FileExistsError(f"{to}: image element(s) {clash} exist; pass --overwrite to replace them")
    for element in clash:  # --overwrite replaces only elements an earlier export wrote (their marker)
        check_replaceable(to / "images" / element, ["exported_image"], argument)
    if not to.exists() and not to.parent.is_dir():
        raise FileNotFoundError(f"{to.parent}: folder of the --spatialdata target does not exist")
    if to.exists():
        check_spatialdata_store(to, "--to")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name or ""):
        raise ValueError(f"--name {name!r}: an element name prefix must be non-empty letters, digits, '_', '.' or '-'")
    check_can_create(to / "images" if to.is_dir() else to, argument)


# dask blocks of the exported images (px per side): a few MB each and few enough tasks (a graph of one task per
# 256-px zarr chunk grows with the image), so the export's memory stays flat
EXPORT_BLOCK_PX = 1024


def generated_images(
    out: str | Path, name: str = "teramind", coordinate_system: str | None = None, *,
    origin_um: tuple[float, float] | None = None, origin_unknown: bool = False,
) -> dict:
    """SpatialData image elements `{name}_z{section}` (c: DAPI, PolyT; y; x) of a generate output: lazy dask
    views of the output's own pyramid (scale0, scale1, ... = its levels), written block by block."""
    _require("spatialdata")
    import dask.array
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, Sequence, Translation
    from xarray import DataTree

    from ..constants import STAIN_NAMES

    place = _output_placement(out, origin_um, origin_unknown)
    system = coordinate_system or place["coordinate_system"]
    um = place["um_per_px"]
    # level 0's pixel (y, x) covers [origin + (region origin + (y, x)) * um, + um): SpatialData's pixel-corner
    # convention; a level-l pixel covers 2^l fine pixels (SpatialData's multiscale convention, no half-pixel shift)
    base = Sequence([Scale([um, um], axes=("y", "x")), Translation(list(place["translation_yx"]), axes=("y", "x"))])
    levels = [
        dask.array.from_zarr(level, chunks=(level.shape[0], 1, EXPORT_BLOCK_PX, EXPORT_BLOCK_PX))
        for level in place["levels"]
    ]
    channels = list(STAIN_NAMES[: levels[0].shape[0]])
    elements = {}
    for k, section in enumerate(range(*place["slices"])):
        scales = {}
        for level, array in enumerate(levels):
            factor = 2 ** level
            transform = base if level == 0 else Sequence([Scale([factor, factor], axes=("y", "x")), base])
            image = Image2DModel.parse(
                array[:, k], dims=("c", "y", "x"), c_coords=channels, transformations={system: transform}
            )
            scales[f"scale{level}"] = image.to_dataset(name="image")
        tree = DataTree.from_dict(scales)
        Image2DModel().validate(tree)
        elements[f"{name}_z{section}"] = tree
    return elements


def export_spatialdata(
    out: str | Path, to: str | Path, *, like: str | Path | None = None, name: str = "teramind",
    coordinate_system: str | None = None, overwrite: bool = False, origin_um: tuple[float, float] | None = None,
    origin_unknown: bool = False,
) -> list[str]:
    """Write the generated DAPI/PolyT of `out` as image elements into the SpatialData store `to`.

    An existing `to` gains the elements (point `to` at the input store to see real and generated together);
    a new one holds them plus, with `like`, every element of that input store. Returns the element names.
    """
    to = Path(to)
    check_export_target(to, name, overwrite, inputs={"OUT (the generated output)": out, "--like": like})
    if like is not None:
        check_spatialdata_store(like, "--like")
    _output_placement(out, origin_um, origin_unknown)  # placement known before anything is written
    spatialdata = _require("spatialdata")
    elements = generated_images(out, name, coordinate_system, origin_um=origin_um, origin_unknown=origin_unknown)
    if to.exists():
        from ..output_guard import check_replaceable

        sdata = read_spatialdata(to, "--to")
        for element_name, image in elements.items():
            if element_name in sdata.images:  # only with overwrite (checked above); spatialdata cannot write
                # over an element it reads lazily from the same store, so ours (checked again) is deleted first
                check_replaceable(to / "images" / element_name, ["exported_image"], "--to")
                del sdata.images[element_name]
                sdata.delete_element_from_disk(element_name)
            sdata.images[element_name] = image
            sdata.write_element(element_name)
        _mark_exported(to, elements, out)
        return list(elements)
    if like is not None:
        sdata = read_spatialdata(like, "--like")
        for element_name, image in elements.items():
            sdata.images[element_name] = image
    else:
        sdata = spatialdata.SpatialData(images=elements)
    sdata.write(to)
    _mark_exported(to, elements, out)
    return list(elements)


def _mark_exported(to: Path, elements: dict, out: str | Path) -> None:
    """The marker `--overwrite` looks for (`output_guard`): which generated output each image element came from."""
    import zarr

    for element_name in elements:
        zarr.open_group(str(to / "images" / element_name), mode="r+").attrs[EXPORT_MARKER] = {"from": str(out)}


def write_spatialdata_points(
    path: str | Path, transcripts: pd.DataFrame, um_per_px: float, *, name: str = "transcripts",
    coordinate_system: str = "global", offset_um: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """A transcripts table (x, y px, z section, gene) as a 2-D SpatialData points element in microns (x, y,
    `section`, `feature_name`), placed at `offset_um` (x, y) by a translation."""
    spatialdata = _require("spatialdata")
    from spatialdata.models import PointsModel
    from spatialdata.transformations import Translation

    frame = pd.DataFrame(
        {
            "x": transcripts["x"].to_numpy() * um_per_px,
            "y": transcripts["y"].to_numpy() * um_per_px,
            "section": transcripts["z"].to_numpy().astype(np.int64),
            "feature_name": pd.Categorical(transcripts["gene"].astype(str)),
        }
    )
    points = PointsModel.parse(
        frame, coordinates={"x": "x", "y": "y"}, feature_key="feature_name",
        transformations={coordinate_system: Translation(list(offset_um), axes=("x", "y"))},
    )
    spatialdata.SpatialData(points={name: points}).write(path)
    return Path(path)


def write_anndata_bins(
    path: str | Path, genes: np.ndarray, gene_names: list[str], um_per_px: float, gene_bin: int
) -> Path:
    """Binned counts (G, Z, Hb, Wb) as an `.h5ad`: one observation per non-empty bin, `obsm["spatial"]` its
    centre (x, y) in microns, `obs["section"]`, sparse `X` (bins x genes)."""
    anndata = _require("anndata")
    import scipy.sparse

    g, z, hb, wb = genes.shape
    flat = np.asarray(genes, dtype=np.float32).reshape(g, -1).T  # (Z * Hb * Wb, G)
    keep = np.flatnonzero(flat.any(axis=1))
    section, row, col = np.unravel_index(keep, (z, hb, wb))
    centre = lambda index: (index + 0.5) * gene_bin * um_per_px  # noqa: E731
    adata = anndata.AnnData(
        X=scipy.sparse.csr_matrix(flat[keep]),
        obs=pd.DataFrame({"section": section.astype(np.int64)}, index=[f"bin{i}" for i in keep]),
        var=pd.DataFrame(index=[str(n) for n in gene_names]),
        obsm={"spatial": np.stack([centre(col), centre(row)], axis=1)},
    )
    adata.write_h5ad(path)
    return Path(path)
