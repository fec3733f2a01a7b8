"""A procedural 3D brain-like tissue with known ground truth (no downloads needed).

The phantom is a stack of `num_slices` sections, `section_spacing_um` apart (default 150 um), so
no cell continues from one section to the next; what continues is regional structure (four
layered regions whose boundaries drift smoothly between sections) and the cell-type mix of each
region. Each cell has a type; the type sets its morphology (nucleus size/shape/brightness in
DAPI, cytoplasm extent/brightness in PolyT) and its marker genes. Transcripts of a cell's
markers are drawn around the cell (Poisson counts, scaled by one per-cell expression factor, so
markers of one type are co-expressed), plus uniform background noise for every gene.

Planted facts a model or an analysis can be checked against:
* co-expressed pairs: Slc17a6 + Slc17a7 (glutamatergic type), Nr4a2 + Th (dopaminergic type);
* `NULL_GENE` (Serpine2) is spatially uniform noise with no relation to morphology;
* opt-in (``planted_interaction=True``): `INTERACTION_PAIR` (Penk, Crym), two extra genes each expressed by a
  random ~30 % of cells of every type, independently; only cells expressing BOTH have larger, brighter nuclei
  (`INTERACTION_NUCLEUS_SCALE`, `INTERACTION_DAPI_SCALE`). One gene alone changes nothing, and since the two
  are independent per cell they are barely co-expressed (far less than the marker pairs), so co-expression
  statistics do not single the pair out: only a model that learned the joint effect could.

Units: transcripts are in **image pixels** (`x` = column, `y` = row, floats; `z` = section
index). Multiply by `um_per_px` for microns. `um_per_px` defaults to the MERSCOPE mosaic scale
(0.108); the CPU default model uses a coarser scale (``teramind_hf.DEFAULT_MODEL_UM_PER_PX`` = 0.5 um/px),
where nuclei are ~12-22 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..constants import MERSCOPE_UM_PER_PX
from .panel import GenePanel
from .volume import SpatialVolume, bin_transcripts, check_dense_size, check_gene_bin

NULL_GENE = "Serpine2"
PLANTED_PAIRS = (("Slc17a6", "Slc17a7"), ("Nr4a2", "Th"))
INTERACTION_PAIR = ("Penk", "Crym")
INTERACTION_FRACTION = 0.3  # fraction of cells expressing each interaction gene (independently)
INTERACTION_TRANSCRIPTS = 40.0  # mean transcripts of an interaction gene per expressing cell
INTERACTION_NUCLEUS_SCALE = 1.35  # nucleus diameter factor of cells expressing both genes
INTERACTION_DAPI_SCALE = 1.45  # nucleus DAPI brightness factor (clipped at 255) of those cells


@dataclass(frozen=True)
class CellType:
    """Morphology and marker genes of one cell type (sizes in microns, brightness 0-255)."""

    name: str
    markers: tuple[str, ...]
    nucleus_um: float  # nucleus diameter (major axis)
    nucleus_aspect: float  # major / minor axis
    dapi: float  # nucleus brightness in DAPI
    cytoplasm_um: float  # cell-body (cytoplasm) diameter
    polyt: float  # cytoplasm brightness in PolyT
    transcripts_per_marker: float  # mean transcripts of each marker per cell


CELL_TYPES: tuple[CellType, ...] = (
    CellType("glutamatergic", ("Slc17a7", "Slc17a6", "Nrn1"), 10.0, 1.15, 150, 18.0, 190, 40),
    CellType("gabaergic", ("Gad2", "Pvalb", "Lamp5"), 8.0, 1.2, 170, 14.0, 160, 35),
    CellType("dopaminergic", ("Th", "Nr4a2", "Ddc"), 11.0, 1.1, 120, 22.0, 230, 45),
    CellType("astrocyte", ("Gfap", "Aqp4", "Gja1"), 7.0, 1.3, 190, 11.0, 90, 30),
    CellType("oligodendrocyte", ("Mog", "Sox10", "St18"), 6.0, 1.1, 240, 8.0, 110, 30),
    CellType("endothelial", ("Cldn5", "Adgrf5", "Acta2"), 9.0, 2.6, 170, 10.0, 70, 25),
)

# Regions: name, cell density (fraction of grid sites with a cell), type mixture (CELL_TYPES order)
REGIONS: tuple[tuple[str, float, tuple[float, ...]], ...] = (
    ("upper_layer", 0.85, (0.55, 0.20, 0.00, 0.15, 0.05, 0.05)),
    ("deep_layer", 0.80, (0.45, 0.15, 0.00, 0.15, 0.15, 0.10)),
    ("white_matter", 0.65, (0.00, 0.00, 0.00, 0.20, 0.70, 0.10)),
    ("midbrain", 0.75, (0.05, 0.20, 0.50, 0.10, 0.10, 0.05)),
)

CELL_SPACING_UM = 16.0  # mean distance between neighbouring cells
BACKGROUND_PER_UM2 = 0.0005  # background transcripts of every gene, per um^2
NULL_PER_UM2 = 0.01  # transcripts of NULL_GENE, per um^2 (uniform, morphology-blind)


def default_panel(planted_interaction: bool = False) -> GenePanel:
    """The phantom's genes (all markers + the null gene [+ the interaction pair]) in the official 229-panel order."""
    names = {m for t in CELL_TYPES for m in t.markers} | {NULL_GENE}
    if planted_interaction:
        names |= set(INTERACTION_PAIR)
    return GenePanel.official_mouse().subset(names)


@dataclass
class Phantom:
    """A generated tissue: images, binned genes, raw transcripts and ground truth.

    images: (2, Z, H, W) uint8, stain 0 DAPI, stain 1 PolyT.
    genes: (G, Z, H // gene_bin, W // gene_bin) float32 counts (integers), one map per section.
    transcripts: DataFrame x, y (pixels, float), z (section index), gene (str).
    labels: (Z, H, W) int32 cell ids (0 = background); cell ids are unique over the volume.
    cell_types: (Z, H, W) int8, 0 = background, k = CELL_TYPES[k - 1].
    regions: (Z, H, W) uint8 index into REGIONS.
    cells: DataFrame cell_id, z, y, x (pixels), cell_type, region.
    """

    images: np.ndarray
    genes: np.ndarray
    transcripts: pd.DataFrame
    panel: GenePanel
    labels: np.ndarray
    cell_types: np.ndarray
    regions: np.ndarray
    cells: pd.DataFrame
    gene_bin: int
    um_per_px: float
    seed: int

    @property
    def cell_type_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in CELL_TYPES)

    def to_volume(self) -> SpatialVolume:
        return SpatialVolume(
            genes=self.genes, panel=self.panel, gene_bin=self.gene_bin, images=self.images, um_per_px=self.um_per_px
        )


def make_phantom(
    height: int,
    width: int | None = None,
    num_slices: int = 4,
    seed: int = 0,
    *,
    um_per_px: float = MERSCOPE_UM_PER_PX,
    panel: GenePanel | None = None,
    gene_bin: int = 16,
    section_spacing_um: float = 150.0,
    planted_interaction: bool = False,
) -> Phantom:
    """Generate a phantom of `num_slices` sections of `height` x `width` pixels.

    `panel` chooses the gene axis (default `default_panel(planted_interaction)`); phantom genes outside it are
    not emitted and panel genes the phantom does not model stay zero. Same arguments -> same arrays.
    ``planted_interaction`` adds `INTERACTION_PAIR` (module docstring) from a separate random stream, so the
    cells, their types and the other genes are those of the default phantom of the same seed; the default
    (False) phantom is unchanged.
    """
    width = height if width is None else width
    _check_size(height, width, num_slices, gene_bin, um_per_px)
    panel = default_panel(planted_interaction) if panel is None else panel
    rng = np.random.default_rng(seed)
    interaction_rng = np.random.default_rng([seed, 1]) if planted_interaction else None
    boundaries = _region_boundaries(rng)
    images = np.zeros((2, num_slices, height, width), dtype=np.uint8)
    labels = np.zeros((num_slices, height, width), dtype=np.int32)
    types = np.zeros((num_slices, height, width), dtype=np.int8)
    regions = np.zeros((num_slices, height, width), dtype=np.uint8)
    cell_tables, transcript_tables = [], []
    next_id = 1
    for z in range(num_slices):
        z_um = z * section_spacing_um
        regions[z] = _region_map(height, width, um_per_px, z_um, boundaries)
        cells = _place_cells(rng, regions[z], um_per_px, next_id, z)
        next_id += len(cells)
        if interaction_rng is not None:
            _assign_interaction(interaction_rng, cells)
        images[:, z], labels[z], types[z] = _render_section(rng, cells, regions[z], um_per_px)
        transcript_tables.append(_section_transcripts(rng, cells, height, width, um_per_px, z))
        if interaction_rng is not None:
            transcript_tables.append(_interaction_transcripts(interaction_rng, cells, height, width, um_per_px, z))
        cell_tables.append(cells)
    cells = pd.concat(cell_tables, ignore_index=True)
    transcripts = pd.concat(transcript_tables, ignore_index=True)
    transcripts = transcripts[transcripts["gene"].isin(set(panel.genes))].reset_index(drop=True)
    index = {g: i for i, g in enumerate(panel.genes)}
    genes = bin_transcripts(
        transcripts["y"].to_numpy(),
        transcripts["x"].to_numpy(),
        transcripts["z"].to_numpy(),
        transcripts["gene"].map(index).to_numpy(),
        None,
        num_genes=len(panel),
        num_slices=num_slices,
        grid_shape=(height // gene_bin, width // gene_bin),
        gene_bin=gene_bin,
    )
    cells["cell_type"] = [CELL_TYPES[t].name for t in cells.pop("type_index")]
    cells["region"] = [REGIONS[r][0] for r in cells["region"]]
    if planted_interaction:
        cells = cells.drop(columns=["nucleus_scale", "dapi_scale"])
    return Phantom(images, genes, transcripts, panel, labels, types, regions, cells, gene_bin, um_per_px, seed)


def _check_size(height: int, width: int, num_slices: int, gene_bin: int, um_per_px: float) -> None:
    check_gene_bin(gene_bin)
    if height < gene_bin or width < gene_bin or height % gene_bin or width % gene_bin:
        raise ValueError(
            f"phantom size {height}x{width}: height and width must be positive multiples of gene_bin={gene_bin}"
        )
    if num_slices < 1:
        raise ValueError(f"phantom num_slices must be >= 1, got {num_slices}")
    if not um_per_px > 0:
        raise ValueError(f"phantom um_per_px must be > 0, got {um_per_px}")
    # images, labels and the float fields they are drawn from: well over 16 bytes per voxel
    check_dense_size((num_slices, height, width), 16, f"phantom {num_slices}x{height}x{width} px")


def _region_boundaries(rng: np.random.Generator) -> np.ndarray:
    """Per boundary: base depth (fraction), wave amplitude, wavelength (um), phase, z-drift/um."""
    base = np.array([0.3, 0.55, 0.78])
    amp = rng.uniform(0.03, 0.07, 3)
    wavelength = rng.uniform(300.0, 900.0, 3)
    phase = rng.uniform(0, 2 * np.pi, 3)
    drift = rng.uniform(-2e-4, 2e-4, 3)
    return np.stack([base, amp, wavelength, phase, drift], axis=1)


def _region_map(height: int, width: int, um_per_px: float, z_um: float, boundaries: np.ndarray) -> np.ndarray:
    """Layered regions: rows cross boundaries that wave along x and drift slowly with z."""
    depth = (np.arange(height) + 0.5) / height
    x_um = (np.arange(width) + 0.5) * um_per_px
    region = np.zeros((height, width), dtype=np.uint8)
    for base, amp, wavelength, phase, drift in boundaries:
        line = base + drift * z_um + amp * np.sin(2 * np.pi * x_um / wavelength + phase + z_um / 400.0)
        region += (depth[:, None] > line[None, :]).astype(np.uint8)
    return region


def _place_cells(
    rng: np.random.Generator, region: np.ndarray, um_per_px: float, first_id: int, z: int
) -> pd.DataFrame:
    """Jittered-grid cell centres; region sets density and the cell-type mixture."""
    height, width = region.shape
    spacing = CELL_SPACING_UM / um_per_px
    ys = np.arange(spacing / 2, height, spacing)
    xs = np.arange(spacing / 2, width, spacing)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    yy = (yy + rng.uniform(-0.3, 0.3, yy.shape) * spacing).ravel()
    xx = (xx + rng.uniform(-0.3, 0.3, xx.shape) * spacing).ravel()
    inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
    yy, xx = yy[inside], xx[inside]
    reg = region[yy.astype(int), xx.astype(int)]
    density = np.array([r[1] for r in REGIONS])
    keep = rng.random(len(yy)) < density[reg]
    yy, xx, reg = yy[keep], xx[keep], reg[keep]
    mixtures = np.array([r[2] for r in REGIONS])
    cumulative = np.cumsum(mixtures[reg], axis=1)
    type_index = (rng.random(len(yy))[:, None] > cumulative).sum(axis=1).clip(max=len(CELL_TYPES) - 1)
    n = len(yy)
    return pd.DataFrame(
        {
            "cell_id": np.arange(first_id, first_id + n, dtype=np.int32),
            "z": np.full(n, z, dtype=np.int32),
            "y": yy,
            "x": xx,
            "type_index": type_index.astype(np.int8),
            "region": reg,
            "size_factor": rng.uniform(0.9, 1.1, n),
            "angle": rng.uniform(0, np.pi, n),
            "expression": rng.gamma(4.0, 0.25, n),  # shared by all markers of the cell
        }
    )


def _assign_interaction(rng: np.random.Generator, cells: pd.DataFrame) -> None:
    """Which cells express each interaction gene (independently), and the nuclei of those expressing both."""
    n = len(cells)
    for gene in INTERACTION_PAIR:
        cells[f"expresses_{gene}"] = rng.random(n) < INTERACTION_FRACTION
    both = cells[[f"expresses_{g}" for g in INTERACTION_PAIR]].all(axis=1).to_numpy()
    cells["interaction"] = both
    cells["nucleus_scale"] = np.where(both, INTERACTION_NUCLEUS_SCALE, 1.0)
    cells["dapi_scale"] = np.where(both, INTERACTION_DAPI_SCALE, 1.0)


def _interaction_transcripts(
    rng: np.random.Generator, cells: pd.DataFrame, height: int, width: int, um_per_px: float, z: int
) -> pd.DataFrame:
    """Transcripts of the interaction genes around the cells expressing them, plus their uniform background."""
    parts = []
    sigma_um = np.array([CELL_TYPES[t].cytoplasm_um for t in cells["type_index"]]) / 2 * 0.5
    sigma = sigma_um / um_per_px * cells["size_factor"].to_numpy()
    area_um2 = height * width * um_per_px**2
    for gene in INTERACTION_PAIR:
        expressing = cells[f"expresses_{gene}"].to_numpy()
        counts = rng.poisson(INTERACTION_TRANSCRIPTS * cells["expression"].to_numpy()) * expressing
        owner = np.repeat(np.arange(len(cells)), counts)
        y = cells["y"].to_numpy()[owner] + rng.normal(0, 1, len(owner)) * sigma[owner]
        x = cells["x"].to_numpy()[owner] + rng.normal(0, 1, len(owner)) * sigma[owner]
        n = rng.poisson(BACKGROUND_PER_UM2 * area_um2)
        y, x = np.concatenate([y, rng.uniform(0, height, n)]), np.concatenate([x, rng.uniform(0, width, n)])
        parts.append(pd.DataFrame({"x": x, "y": y, "gene": gene}))
    table = pd.concat(parts, ignore_index=True)
    inside = (table["x"] >= 0) & (table["x"] < width) & (table["y"] >= 0) & (table["y"] < height)
    table = table[inside].reset_index(drop=True)
    table.insert(2, "z", np.int32(z))
    return table[["x", "y", "z", "gene"]]


def _render_section(
    rng: np.random.Generator, cells: pd.DataFrame, region: np.ndarray, um_per_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DAPI/PolyT (2, H, W) uint8, cell labels and cell-type map of one section."""
    height, width = region.shape
    dapi = np.zeros((height, width), dtype=np.float32)
    polyt = np.zeros((height, width), dtype=np.float32)
    labels = np.zeros((height, width), dtype=np.int32)
    types = np.zeros((height, width), dtype=np.int8)
    planted = "nucleus_scale" in cells.columns  # the opt-in interaction subtype (default phantom: absent)
    for cell in cells.itertuples(index=False):
        kind = CELL_TYPES[cell.type_index]
        r_nuc = kind.nucleus_um / 2 / um_per_px * cell.size_factor
        if planted:
            r_nuc *= cell.nucleus_scale
        r_cyto = max(kind.cytoplasm_um / 2 / um_per_px * cell.size_factor, r_nuc * 1.05)
        half = int(np.ceil(r_cyto * 1.2)) + 1
        cy, cx = int(cell.y), int(cell.x)
        r0, r1, c0, c1 = max(cy - half, 0), min(cy + half + 1, height), max(cx - half, 0), min(cx + half + 1, width)
        dy = np.arange(r0, r1)[:, None] + 0.5 - cell.y
        dx = np.arange(c0, c1)[None, :] + 0.5 - cell.x
        cos, sin = np.cos(cell.angle), np.sin(cell.angle)
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        d_nuc = np.sqrt((u / r_nuc) ** 2 + (v * kind.nucleus_aspect / r_nuc) ** 2)
        d_cyto = np.sqrt((u / r_cyto) ** 2 + (v * 1.15 / r_cyto) ** 2)
        nucleus = _soft_disc(d_nuc, r_nuc)
        body = _soft_disc(d_cyto, r_cyto)
        dapi_patch = kind.dapi * nucleus * (0.85 + 0.15 * (1 - d_nuc.clip(0, 1) ** 2))
        if planted:
            dapi_patch = np.minimum(dapi_patch * cell.dapi_scale, 255.0)
        polyt_patch = kind.polyt * body * (1 - 0.55 * nucleus) * (1 - 0.3 * d_cyto.clip(0, 1))
        np.maximum(dapi[r0:r1, c0:c1], dapi_patch, out=dapi[r0:r1, c0:c1])
        np.maximum(polyt[r0:r1, c0:c1], polyt_patch, out=polyt[r0:r1, c0:c1])
        own = body > 0.5
        free = own & (labels[r0:r1, c0:c1] == 0) | (nucleus > 0.5)
        labels[r0:r1, c0:c1][free] = cell.cell_id
        types[r0:r1, c0:c1][free] = cell.type_index + 1
    neuropil = np.array([22.0, 20.0, 12.0, 18.0], dtype=np.float32)[region]
    dapi += 6.0 + rng.normal(0.0, 3.0, dapi.shape).astype(np.float32)
    polyt += neuropil + rng.normal(0.0, 4.0, polyt.shape).astype(np.float32)
    stains = np.stack([dapi, polyt]).round().clip(0, 255).astype(np.uint8)
    return stains, labels, types


def _soft_disc(distance: np.ndarray, radius_px: float) -> np.ndarray:
    """1 inside, 0 outside, with a ~1-pixel soft edge at normalised distance 1."""
    return 1.0 / (1.0 + np.exp(np.clip((distance - 1.0) * radius_px * 2.0, -30, 30)))


def _section_transcripts(
    rng: np.random.Generator, cells: pd.DataFrame, height: int, width: int, um_per_px: float, z: int
) -> pd.DataFrame:
    """Marker transcripts around cells + uniform background of every gene + the null gene."""
    parts = []
    for t, kind in enumerate(CELL_TYPES):
        of_type = cells[cells["type_index"] == t]
        if of_type.empty:
            continue
        sigma = kind.cytoplasm_um / 2 / um_per_px * 0.5 * of_type["size_factor"].to_numpy()
        for marker in kind.markers:
            counts = rng.poisson(kind.transcripts_per_marker * of_type["expression"].to_numpy())
            owner = np.repeat(np.arange(len(of_type)), counts)
            y = of_type["y"].to_numpy()[owner] + rng.normal(0, 1, len(owner)) * sigma[owner]
            x = of_type["x"].to_numpy()[owner] + rng.normal(0, 1, len(owner)) * sigma[owner]
            parts.append(pd.DataFrame({"x": x, "y": y, "gene": marker}))
    area_um2 = height * width * um_per_px**2
    all_genes = sorted({m for t in CELL_TYPES for m in t.markers} | {NULL_GENE})
    for gene in all_genes:
        rate = BACKGROUND_PER_UM2 + (NULL_PER_UM2 if gene == NULL_GENE else 0.0)
        n = rng.poisson(rate * area_um2)
        parts.append(pd.DataFrame({"x": rng.uniform(0, width, n), "y": rng.uniform(0, height, n), "gene": gene}))
    table = pd.concat(parts, ignore_index=True)
    inside = (table["x"] >= 0) & (table["x"] < width) & (table["y"] >= 0) & (table["y"] < height)
    table = table[inside].reset_index(drop=True)
    table.insert(2, "z", np.int32(z))
    return table[["x", "y", "z", "gene"]]
