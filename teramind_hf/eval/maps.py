"""Analysis maps as files: pathway maps (attention x expression of a gene pair) and volumes, as OME-Zarr and PNG.

A pathway map, as in the paper, shows where in the tissue a gene pair is both expressed and attended to: per gene
bin, the pair's attention in the bin's patch (the chunk conditioning its section) times the geometric mean of the
two genes' counts in the bin. The OME-Zarr layers reuse the pipeline's NGFF writer (`pipelines/ome_zarr.py`),
written to a temporary folder and renamed, so a folder that exists is complete.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .attention import _as_numpy, gene_index, pair_attention_map

__all__ = ["pathway_map", "save_panels", "write_ome_zarr_layers"]


def pathway_map(
    attention: Any, model_genes: Any, names: Sequence[str], gene_a: str, gene_b: str, config: Any
) -> dict[str, np.ndarray]:
    """Per gene bin and section ``(Z, Hb, Wb)``: ``attention`` (the patch's pair attention), ``expression``
    (sqrt of the product of the two genes' counts) and ``pathway`` (their product)."""
    genes = _as_numpy(model_genes)
    _, sections, bins_h, bins_w = genes.shape
    per_patch = config.sample_size // config.gene_bin
    pair = pair_attention_map(attention, names, gene_a, gene_b)  # (chunks, ph, pw)
    per_bin = np.repeat(np.repeat(pair, per_patch, axis=1), per_patch, axis=2)
    # chunk k conditions sections [k * num_slices, (k + 1) * num_slices)
    per_section = np.repeat(per_bin, config.num_slices, axis=0)[:sections]
    expression = np.sqrt(genes[gene_index(names, gene_a)] * genes[gene_index(names, gene_b)])
    return {"attention": per_section, "expression": expression, "pathway": per_section * expression}


def write_ome_zarr_layers(
    path: str | Path,
    layers: dict[str, np.ndarray],
    *,
    um_per_px: float,
    section_spacing_um: float | None = None,
    value_range: tuple[float, float] | None = None,
    tile_size: int = 256,
) -> Path:
    """Write ``(Z, H, W)`` float layers as one NGFF image ``c, z, y, x`` uint8 (one channel per layer).

    Each layer is scaled to 0-255 over ``value_range`` (default: its own 0..max); the ranges are stored in the
    group attribute ``teramind_layers`` so values can be recovered. Written under a hidden partial name, then renamed.
    """
    import zarr

    from ..constants import DEFAULT_SECTION_SPACING_UM
    from ..pipelines.ome_zarr import PhysicalScale, build_level, create_image, level_blocks

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: pick another output folder or remove it")
    arrays = [np.asarray(v, dtype=np.float64) for v in layers.values()]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"layers must all be (Z, H, W) of one shape, got {sorted(shapes)}")
    stack, ranges = [], []
    for a in arrays:
        lo, hi = value_range if value_range is not None else (0.0, float(np.nanmax(a)) if a.size else 0.0)
        span = hi - lo if hi > lo else 1.0
        stack.append(np.clip((np.nan_to_num(a, nan=lo) - lo) / span * 255.0, 0, 255).round().astype(np.uint8))
        ranges.append([float(lo), float(lo + span)])
    data = np.stack(stack)
    # a fresh hidden name: nothing that existed before is ever deleted
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    group = zarr.open_group(str(tmp), mode="w")
    spacing = DEFAULT_SECTION_SPACING_UM if section_spacing_um is None else section_spacing_um
    levels = create_image(group, data.shape, tile_size, PhysicalScale(um_per_px, spacing))
    levels[0][...] = data
    for fine, coarse in zip(levels, levels[1:]):
        build_level(fine, coarse, level_blocks(coarse))
    ome = dict(group.attrs["ome"])
    for channel, name in zip(ome["omero"]["channels"], layers):
        channel["label"] = name
    extra = [dict(ome["omero"]["channels"][0], label=name) for name in list(layers)[len(ome["omero"]["channels"]) :]]
    ome["omero"]["channels"] = ome["omero"]["channels"][: len(layers)] + extra
    group.attrs["ome"] = ome
    group.attrs["teramind_layers"] = {name: {"uint8_0": r[0], "uint8_255": r[1]} for name, r in zip(layers, ranges)}
    tmp.rename(path)
    return path


def save_panels(panels: Sequence[tuple[np.ndarray, str, dict]], path: str | Path, columns: int | None = None) -> Path:
    """Save 2-D arrays side by side as one PNG; each panel is ``(array, title, imshow keyword arguments)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(3.3 * columns, 3.3 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.axis("off")
    for ax, (array, title, style) in zip(axes, panels):
        style = {"cmap": "gray", "interpolation": "nearest", **style}
        shown = ax.imshow(array, **style)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if style["cmap"] != "gray":
            fig.colorbar(shown, ax=ax, shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def read_gene_region(
    location: str | Path,
    region: tuple[int, int, int, int] | None = None,
    slices: tuple[int, int] | None = None,
    multiple: int = 64,
) -> tuple[np.ndarray, list[str] | None, dict]:
    """Counts ``(G, Z, Hb, Wb)`` of ``region`` (``y0, x0, h, w`` in image px, multiples of ``multiple``) and
    sections ``slices = (a, b)`` of a gene source (`teramind_hf.pipelines.gene_source`), with its gene names and
    attributes (``gene_bin``, ``um_per_px`` ...; ``origin_px`` is added)."""
    from ..pipelines.gene_source import open_gene_source

    source = open_gene_source(location)
    bin_ = int(source.attrs.get("gene_bin", 16))
    g, z, hb, wb = source.shape
    y0, x0, h, w = region if region is not None else (0, 0, hb * bin_, wb * bin_)
    if min(h, w) <= 0 or any(v % multiple for v in (y0, x0, h, w)):
        raise ValueError(f"--region y0,x0,h,w must be positive multiples of {multiple} px, got {y0},{x0},{h},{w}")
    if y0 < 0 or x0 < 0 or y0 + h > hb * bin_ or x0 + w > wb * bin_:
        raise ValueError(f"--region {y0},{x0},{h},{w} reaches outside the {hb * bin_}x{wb * bin_} px gene grid of {location}")
    a, b = slices if slices is not None else (0, z)
    if not 0 <= a < b <= z:
        raise ValueError(f"--slices a,b must satisfy 0 <= a < b <= {z} (sections in {location}), got {a},{b}")
    genes = source.read((a, b), (y0 // bin_, (y0 + h) // bin_), (x0 // bin_, (x0 + w) // bin_)).numpy()
    return genes, source.gene_names, {**source.attrs, "gene_bin": bin_, "origin_px": (a, y0, x0)}
