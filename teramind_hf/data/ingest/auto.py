"""`teramind generate --genes` given raw data: a MERSCOPE folder or a SpatialData store is ingested on the fly.

The store goes beside the output (`out/region.ome.zarr` -> `out/region.genes.zarr`) and is reused when its
ingest record names the same inputs, so a resumed `generate` does not ingest again.
"""

from __future__ import annotations

from pathlib import Path

from ...output_guard import check_output_location
from .merscope import ingest_merscope, is_merscope_run, merscope_runs
from .scverse import ingest_spatialdata, is_spatialdata_store


def sibling(out: str | Path, suffix: str) -> Path:
    """`out/region.ome.zarr` -> `out/region{suffix}` (a store next to the output)."""
    out = Path(out)
    name = out.name
    for ending in (".ome.zarr", ".zarr"):
        if name.endswith(ending):
            name = name[: -len(ending)]
            break
    return out.parent / f"{name}{suffix}"


def raw_kind(location: str | Path) -> str | None:
    """"merscope", "spatialdata" or None (a gene store, array file or URL: read as it is)."""
    path = Path(str(location))
    if "://" in str(location) or not path.is_dir() or (path / "genes").exists():
        return None
    if is_merscope_run(path) or any(is_merscope_run(p) for p in path.iterdir() if p.is_dir()):
        return "merscope"
    if is_spatialdata_store(path):
        return "spatialdata"
    return None


def gene_store_for(location: str | Path, out: str | Path, *, um_per_px: float | None = None,
                   progress_bar: bool = True) -> tuple[str, str | None]:
    """(gene source to read, message or None): raw inputs are ingested into the sibling store of `out`."""
    import zarr

    kind = raw_kind(location)
    if kind is None:
        return str(location), None
    store = sibling(out, ".genes.zarr")
    check_output_location(store, {"--genes": location}, f"the gene store {store} beside --out")
    inputs = [str(r) for r in merscope_runs(location)] if kind == "merscope" else [str(Path(location))]
    if store.exists():
        try:
            record = dict(zarr.open_group(str(store), mode="r").attrs).get("ingest", {})
        except Exception:  # unreadable: treated as foreign
            record = {}
        if record.get("inputs") == inputs and record.get("format") == kind:
            return str(store), f"gene store {store} (ingested earlier from {kind} {location}, reused)"
        raise FileExistsError(f"{store} exists but was not ingested from {location}; remove it or pick another --out")
    if kind == "merscope":
        report = ingest_merscope(merscope_runs(location), store, um_per_px=um_per_px, progress_bar=progress_bar)
    else:
        if um_per_px is None:
            raise ValueError(f"--genes {location} is a SpatialData store: pass --um-per-px (microns per image pixel)")
        report = ingest_spatialdata(location, store, um_per_px=um_per_px, progress_bar=progress_bar)
    return str(store), f"ingested {kind} {location} -> gene store {store} ({report.shape[0]} genes, {report.shape[1]} sections)"
