"""The phantom written to disk in the reader formats with its ground truth, its digest, and a "new lab's" variant
of it (renamed and dropped genes) for fine-tuning demos."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import PHANTOM_FORMATS
from .panel import GenePanel
from .phantom import (
    CELL_TYPES, INTERACTION_DAPI_SCALE, INTERACTION_FRACTION, INTERACTION_NUCLEUS_SCALE, INTERACTION_PAIR, NULL_GENE,
    PLANTED_PAIRS, REGIONS, Phantom,
)
from .volume import SpatialVolume


# A "new lab's tissue" for fine-tuning demos and tests: two genes named differently, two absent.
NEW_TISSUE_RENAMES = {"Slc17a7": "Vglut1", "Gad2": "Gad65"}
NEW_TISSUE_DROPPED = ("Pvalb", "Mog")


def with_panel_changes(
    phantom: Phantom, renames: dict[str, str] = NEW_TISSUE_RENAMES, drop: tuple[str, ...] = NEW_TISSUE_DROPPED
) -> SpatialVolume:
    """The phantom as a volume whose panel lacks the `drop` genes and calls some genes by other names.

    Stands in for another lab's data when trying fine-tuning (`teramind train --pretrained ... --extend_panel`):
    a model aligned by name sees zeros for renamed and dropped genes.
    """
    unknown = sorted((set(renames) | set(drop)) - set(phantom.panel.genes))
    if unknown:
        raise ValueError(f"with_panel_changes: genes {unknown} are not in the phantom's panel ({len(phantom.panel)} genes)")
    keep = [i for i, g in enumerate(phantom.panel.genes) if g not in drop]
    names = [renames.get(phantom.panel.genes[i], phantom.panel.genes[i]) for i in keep]
    return SpatialVolume(
        genes=phantom.genes[keep], panel=GenePanel(names), gene_bin=phantom.gene_bin, images=phantom.images,
        um_per_px=phantom.um_per_px,
    )


# --- writing ------------------------------------------------------------------------------


def write_phantom(phantom: Phantom, out_dir: str | Path, formats: tuple[str, ...] = ("table", "official")) -> Path:
    """Write the phantom in reader formats plus ground truth; returns `out_dir`.

    Layout: `transcripts.parquet` (x, y in pixels, z section, gene) + `images.tif` ((2, Z, H, W)
    uint8) + `panel.txt` ["table"]; `official/gene/*.npz` + `official/img/*.zip` (official tile
    format, gene slots of the official 229 panel) ["official"]; `store.zarr` (training store)
    ["store"]; `merscope/section_ZZ/` one MERSCOPE run folder per section (`readers.merscope.write_merscope_runs`)
    ["merscope"]; always `ground_truth/labels.tif`, `cell_types.tif`, `regions.tif`, `cells.csv`
    and `phantom.json` (parameters, cell types, planted pairs, null gene).
    """
    import tifffile

    unknown = [f for f in formats if f not in PHANTOM_FORMATS]
    if unknown:
        raise ValueError(f"write_phantom: unknown format(s) {unknown}; expected some of {list(PHANTOM_FORMATS)}")
    out = Path(out_dir)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    if "table" in formats:
        phantom.transcripts.to_parquet(out / "transcripts.parquet", index=False)
        tifffile.imwrite(out / "images.tif", phantom.images)
        phantom.panel.to_file(str(out / "panel.txt"))
    if "official" in formats:
        from .readers.official import write_official_tiles

        write_official_tiles(out / "official", phantom.images, phantom.transcripts)
    if "store" in formats:
        from .datasets import write_training_store

        write_training_store(phantom.to_volume(), out / "store.zarr")
    if "merscope" in formats:
        from .readers.merscope import write_merscope_runs

        write_merscope_runs(out / "merscope", phantom.images, phantom.transcripts, phantom.um_per_px)
    tifffile.imwrite(out / "ground_truth" / "labels.tif", phantom.labels)
    tifffile.imwrite(out / "ground_truth" / "cell_types.tif", phantom.cell_types)
    tifffile.imwrite(out / "ground_truth" / "regions.tif", phantom.regions)
    phantom.cells.to_csv(out / "ground_truth" / "cells.csv", index=False)
    meta = {
        "seed": phantom.seed,
        "shape_zyx": list(phantom.labels.shape),
        "um_per_px": phantom.um_per_px,
        "gene_bin": phantom.gene_bin,
        "coordinates": "transcripts x (column), y (row) in image pixels; z = section index",
        "cell_types": [{"index": i + 1, **t.__dict__} for i, t in enumerate(CELL_TYPES)],
        "regions": [r[0] for r in REGIONS],
        "planted_pairs": [list(p) for p in PLANTED_PAIRS],
        "null_gene": NULL_GENE,
        "genes": list(phantom.panel.genes),
    }
    if "interaction" in phantom.cells.columns:
        meta["planted_interaction"] = {
            "genes": list(INTERACTION_PAIR), "fraction_per_gene": INTERACTION_FRACTION,
            "nucleus_scale": INTERACTION_NUCLEUS_SCALE, "dapi_scale": INTERACTION_DAPI_SCALE,
        }
    (out / "phantom.json").write_text(json.dumps(meta, indent=1, default=list) + "\n")
    return out


def array_digest(phantom: Phantom) -> str:
    """SHA-256 over all phantom arrays and the transcript table (for determinism checks)."""
    h = hashlib.sha256()
    for arr in (phantom.images, phantom.genes, phantom.labels, phantom.cell_types, phantom.regions):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(pd.util.hash_pandas_object(phantom.transcripts, index=False).to_numpy().tobytes())
    return h.hexdigest()
