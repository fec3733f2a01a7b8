"""The gene / training store layout (a zarr v3 group), in a module without torch so ingestion stays light.

* `genes`: (G, Z, H // gene_bin, W // gene_bin) float32 counts, chunks (G, 1, chunk/bin, chunk/bin);
* `images` (optional for a gene-only store): (2, Z, H, W) uint8, DAPI then PolyT, chunks (1, 1, chunk, chunk);
* attributes `gene_names`, `gene_bin`, `um_per_px` and any extra ones (`teramind ingest` adds
  `section_spacing_um`, `origin_um`, `coordinate_system` and an `ingest` provenance record).

`teramind generate` reads `genes` + `gene_names`; training and `teramind eval` also need `images`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .panel import GenePanel


def create_training_store(
    path: str | Path,
    panel: GenePanel,
    num_slices: int,
    height: int,
    width: int,
    *,
    gene_bin: int = 16,
    um_per_px: float | None = None,
    chunk: int = 256,
    compressors: Any = "auto",
    images: bool = True,
    attrs: dict | None = None,
):
    """Create an empty store (see module doc) to fill chunk by chunk; returns the zarr group."""
    import zarr

    if height % gene_bin or width % gene_bin:
        raise ValueError(f"training store: height/width {height}x{width} must be multiples of gene_bin={gene_bin}")
    if chunk % gene_bin:
        raise ValueError(f"training store: chunk={chunk} must be a multiple of gene_bin={gene_bin}")
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update({"gene_names": list(panel.genes), "gene_bin": gene_bin, "um_per_px": um_per_px, **(attrs or {})})
    extra = {} if compressors == "auto" else {"compressors": compressors}
    if images:
        group.create_array(
            "images", shape=(2, num_slices, height, width), dtype="uint8", chunks=(1, 1, chunk, chunk), fill_value=0,
            **extra,
        )  # fmt: skip
    cb = chunk // gene_bin
    group.create_array(
        "genes",
        shape=(len(panel), num_slices, height // gene_bin, width // gene_bin),
        dtype="float32",
        chunks=(len(panel), 1, cb, cb),
        fill_value=0.0,
        **extra,
    )
    return group
