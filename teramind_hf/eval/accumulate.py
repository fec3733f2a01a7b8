"""Block-wise evaluation of one generated volume against the truth: statistics summed block by block.

Each section is read in ``block x block`` px blocks (plus a halo for nuclei), so memory is bounded by a block
whatever the image size. What each block adds, and how exact the sum is:

* exact aggregates (equal to the whole-image value): intensity histograms and their Wasserstein distance, the
  squared error behind PSNR (also 4x4-pooled, pools inside blocks), grid-line border scores (steps across
  block edges included);
* exact given the segmentation: nucleus counts, F1 and the area/eccentricity distributions (each nucleus is
  kept by the block holding its centroid, and centroids are matched over the whole section at the end);
* approximations: nuclei are segmented per block plus a 15 um halo, thresholded at one Otsu threshold per
  section and image found from the histogram (1024 bins) of the smoothed DAPI in a first pass (a region that
  fits one block uses the exact Otsu threshold instead, so the report equals :func:`~.metrics.realism_metrics`
  there); SSIM and MS-SSIM are pixel-weighted means of per-block values
  (windows do not cross block edges); spectra are Welch estimates, the mean power spectrum of the blocks'
  top-left ``S x S`` squares, ``S = min(block, H, W)`` (the whole image when it is one square block).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._image import as_unit_float
from .fidelity import POOL, _fidelity, pooled
from .grid import StepProfile
from .nuclei import (
    MATCH_DISTANCE_UM,
    SMOOTHING_UM,
    detection_scores,
    match_centroids,
    nucleus_table,
    otsu_from_histogram,
    segment_nuclei,
    shape_distances,
    smoothed,
)
from .spectrum import (
    HISTOGRAM_LEVELS,
    _histogram,
    histogram_wasserstein,
    log_spectrum_distance,
    ring_means,
    spectrum_of_block,
)

STAINS = ("dapi", "polyt")
ROLES = ("generated", "truth")
BORDER_PERIODS = (64, 256)
DEFAULT_BLOCK = 1024
NUCLEUS_HALO_UM = 15.0  # > the largest nucleus diameter: a nucleus centred in a block lies inside its halo
THRESHOLD_BINS = 1024
MIN_FIDELITY_SIDE = 7 * POOL  # SSIM's 7-px window after 4x4 pooling


@dataclass
class SectionStats:
    """Everything summed over the blocks of one section for one (generated, truth) pair."""

    shape: tuple[int, int]
    rings: int
    num_regions: int
    hist: np.ndarray = None  # (roles, stains, levels) counts
    sq_err: np.ndarray = None  # (stains,) sum of squared [0, 1] differences
    sq_err_pool: np.ndarray = None
    pixels: int = 0
    pooled_pixels: int = 0
    similarity: np.ndarray = None  # (stains, ssim/ms_ssim/ssim_pool/ms_ssim_pool) pixel-weighted sums
    similarity_weight: np.ndarray = None  # same shape: pixels that contributed
    spectrum: np.ndarray = None  # (roles, stains, rings) summed ring-mean power of the spectrum blocks
    hf_power: np.ndarray = None  # (roles, stains)
    spectrum_blocks: int = 0
    steps: list = None  # StepProfile of generated, truth (both stains)
    nuclei: dict = None  # role -> dict of per-nucleus lists (y, x, area_um2, eccentricity, region)
    merged: int = 0
    region_pixels: np.ndarray = None  # (regions,)
    region_sq_err: np.ndarray = None  # (regions, stains)
    region_hist: np.ndarray = None  # (regions, roles, stains, levels)
    matched: tuple = field(default=None)  # (generated index, truth index) after finish()

    def __post_init__(self):
        r = max(self.num_regions, 1)
        self.hist = np.zeros((2, 2, HISTOGRAM_LEVELS), np.int64)
        self.sq_err, self.sq_err_pool = np.zeros(2), np.zeros(2)
        self.similarity, self.similarity_weight = np.zeros((2, 4)), np.zeros((2, 4))
        self.spectrum, self.hf_power = np.zeros((2, 2, self.rings)), np.zeros((2, 2))
        self.steps = [StepProfile.empty((2, *self.shape)) for _ in ROLES]
        self.nuclei = {role: {k: [] for k in ("y", "x", "area_um2", "eccentricity", "region")} for role in ROLES}
        self.region_pixels = np.zeros(r, np.int64)
        self.region_sq_err = np.zeros((r, 2))
        self.region_hist = np.zeros((r, 2, 2, HISTOGRAM_LEVELS), np.int64)

    def table(self, role: str) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.nuclei[role].items()}


def blocks(height: int, width: int, block: int):
    for y0 in range(0, height, block):
        for x0 in range(0, width, block):
            yield y0, min(y0 + block, height), x0, min(x0 + block, width)


def accumulate_section(
    generated, truth, z: int, um_per_px: float, *, labels=None, block: int = DEFAULT_BLOCK,
    match_distance_um: float = MATCH_DISTANCE_UM, nuclei_method: str = "watershed",
) -> SectionStats:
    """:class:`SectionStats` of section ``z`` of two aligned :class:`~.inputs.EvalVolume` (and region labels)."""
    _, _, height, width = generated.shape
    side = min(block, height, width)
    region_index = None
    values = np.asarray(labels.values) if labels is not None else None
    rings = len(ring_means(np.zeros((side, side)))[0])
    stats = SectionStats((height, width), rings, len(values) if values is not None else 0)
    halo = int(np.ceil(NUCLEUS_HALO_UM / um_per_px))
    thresholds = (None, None) if max(height, width) <= block else section_thresholds(generated, truth, z, um_per_px, block)
    for y0, y1, x0, x1 in blocks(height, width, block):
        hy0, hy1, hx0, hx1 = max(y0 - halo, 0), min(y1 + halo, height), max(x0 - halo, 0), min(x1 + halo, width)
        raw = [v.block(z, slice(hy0, hy1), slice(hx0, hx1)) for v in (generated, truth)]
        core = (slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0))
        # one more row and column than the core (where there is one): the steps across its lower/right edges
        grown = (slice(y0 - hy0, min(y1 + 1, hy1) - hy0), slice(x0 - hx0, min(x1 + 1, hx1) - hx0))
        for profile, image in zip(stats.steps, raw):
            profile.add_block(image[(slice(None), *grown)], y0, x0, y1 - y0, x1 - x0)
        unit = [as_unit_float(image[(slice(None), *core)]) for image in raw]  # (2, h, w) each
        if labels is not None:
            region_index = np.searchsorted(values, labels.block(z, slice(y0, y1), slice(x0, x1)))
        _add_pixels(stats, unit, region_index)
        _add_spectrum(stats, unit, side)
        _add_nuclei(stats, raw, (hy0, hx0), (y0, y1, x0, x1), um_per_px, nuclei_method, region_index, thresholds)
    stats.matched = match_centroids(
        *[np.column_stack([stats.table(role)["y"], stats.table(role)["x"]]) for role in ROLES],
        match_distance_um / um_per_px,
    )
    return stats


def _add_pixels(stats: SectionStats, unit: list[np.ndarray], region_index: np.ndarray | None) -> None:
    gen, truth = unit
    squared = (gen.astype(np.float64) - truth) ** 2  # (2, h, w)
    stats.sq_err += squared.sum(axis=(1, 2))
    stats.pixels += squared[0].size
    for r, image in enumerate(unit):
        for s in range(2):
            stats.hist[r, s] += _histogram(image[s])
    h, w = gen.shape[1:]
    if min(h, w) >= MIN_FIDELITY_SIDE:
        for s in range(2):
            values = _fidelity(gen[s], truth[s])
            pooled_values = _fidelity(pooled(gen[s]), pooled(truth[s]))
            found = np.array([values["ssim"], values["ms_ssim"], pooled_values["ssim"], pooled_values["ms_ssim"]])
            finite = np.isfinite(found)  # MS-SSIM is nan on blocks too small for two scales
            stats.similarity[s] += np.where(finite, found, 0.0) * h * w
            stats.similarity_weight[s] += finite * h * w
    pg = np.stack([pooled(gen[s]) for s in range(2)]).astype(np.float64)
    pt = np.stack([pooled(truth[s]) for s in range(2)])
    stats.sq_err_pool += ((pg - pt) ** 2).sum(axis=(1, 2))
    stats.pooled_pixels += pg[0].size
    if region_index is not None:
        flat = region_index.ravel()
        stats.region_pixels += np.bincount(flat, minlength=stats.num_regions)
        for s in range(2):
            stats.region_sq_err[:, s] += np.bincount(flat, weights=squared[s].ravel(), minlength=stats.num_regions)
            for r, image in enumerate(unit):
                levels = np.round(image[s].ravel() * (HISTOGRAM_LEVELS - 1)).astype(np.int64)
                joint = np.bincount(flat * HISTOGRAM_LEVELS + levels, minlength=stats.num_regions * HISTOGRAM_LEVELS)
                stats.region_hist[:, r, s] += joint.reshape(stats.num_regions, HISTOGRAM_LEVELS)


def _add_spectrum(stats: SectionStats, unit: list[np.ndarray], side: int) -> None:
    if min(unit[0].shape[1:]) < side:
        return  # a remainder block smaller than the spectrum square
    for r, image in enumerate(unit):
        for s in range(2):
            ring_power, hf = spectrum_of_block(image[s, :side, :side])
            stats.spectrum[r, s] += ring_power
            stats.hf_power[r, s] += hf
    stats.spectrum_blocks += 1


def section_thresholds(generated, truth, z: int, um_per_px: float, block: int) -> tuple[float | None, float | None]:
    """Otsu thresholds of the smoothed DAPI of section ``z`` of both volumes, from histograms summed over blocks
    (each block smoothed with a 4-sigma halo, so the smoothed values are the whole image's)."""
    _, _, height, width = generated.shape
    margin = int(np.ceil(4 * SMOOTHING_UM / um_per_px))
    counts = np.zeros((2, THRESHOLD_BINS), np.int64)
    for y0, y1, x0, x1 in blocks(height, width, block):
        hy0, hy1, hx0, hx1 = max(y0 - margin, 0), min(y1 + margin, height), max(x0 - margin, 0), min(x1 + margin, width)
        for r, volume in enumerate((generated, truth)):
            dapi = as_unit_float(volume.block(z, slice(hy0, hy1), slice(hx0, hx1))[0])
            core = smoothed(dapi, um_per_px)[y0 - hy0 : y1 - hy0, x0 - hx0 : x1 - hx0]
            counts[r] += np.bincount(np.minimum((core * THRESHOLD_BINS).astype(np.int64), THRESHOLD_BINS - 1).ravel(),
                                     minlength=THRESHOLD_BINS)
    return otsu_from_histogram(counts[0]), otsu_from_histogram(counts[1])


def _add_nuclei(stats, raw, halo_origin, core, um_per_px, method, region_index, thresholds) -> None:
    hy0, hx0 = halo_origin
    y0, y1, x0, x1 = core
    label_images = {}
    for role, image, threshold in zip(ROLES, raw, thresholds):
        if threshold is None and thresholds != (None, None):  # a flat section: no nuclei
            labels = np.zeros(image.shape[1:], np.int32)
        else:
            labels = segment_nuclei(image[0], um_per_px, method, threshold=threshold)
        label_images[role] = labels
        table = nucleus_table(labels, um_per_px)
        y, x = table["y"] + hy0, table["x"] + hx0  # section coordinates
        inside = (y >= y0 - 0.5) & (y < y1 - 0.5) & (x >= x0 - 0.5) & (x < x1 - 0.5)  # centroid's pixel in the core
        kept = {k: v[inside] for k, v in table.items()}
        kept["y"], kept["x"] = y[inside], x[inside]
        if region_index is not None:
            rows = np.clip(np.round(kept["y"]).astype(int) - y0, 0, y1 - y0 - 1)
            cols = np.clip(np.round(kept["x"]).astype(int) - x0, 0, x1 - x0 - 1)
            kept["region"] = region_index[rows, cols]
        else:
            kept["region"] = np.zeros(len(kept["y"]), np.int64)
        for key in stats.nuclei[role]:
            stats.nuclei[role][key].append(kept[key])
        if role == "truth":  # generated nuclei holding >= 2 true centroids of this block's core
            gy = np.clip(np.round(kept["y"]).astype(int) - hy0, 0, labels.shape[0] - 1)
            gx = np.clip(np.round(kept["x"]).astype(int) - hx0, 0, labels.shape[1] - 1)
            hits = label_images["generated"][gy, gx]
            hits = hits[hits > 0]
            stats.merged += int((np.bincount(hits) >= 2).sum()) if hits.size else 0


# ---------------------------------------------------------------------------------------------- summaries
def _psnr(sq_err: float, pixels: int) -> float:
    if pixels == 0:
        return float("nan")
    mse = sq_err / pixels
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def summarize(sections: list[SectionStats]) -> dict[str, float]:
    """The metrics (keys as :func:`~.metrics.realism_metrics`) of one or several sections summed together."""
    first = sections[0]
    total = lambda name: sum(getattr(s, name) for s in sections)  # noqa: E731
    out: dict[str, float] = {}
    tables = {role: _concat([s.table(role) for s in sections]) for role in ROLES}
    n_gen, n_truth = len(tables["generated"]["y"]), len(tables["truth"]["y"])
    matched = sum(len(s.matched[0]) for s in sections)
    nuclei = {"count_generated": n_gen, "count_truth": n_truth, **detection_scores(matched, n_gen, n_truth)}
    nuclei.update(shape_distances(tables["generated"], tables["truth"]))
    nuclei["merged_rate"] = total("merged") / n_gen if n_gen else 0.0
    for role, name in (("generated", "mean_area_generated_um2"), ("truth", "mean_area_truth_um2")):
        nuclei[name] = float(np.mean(tables[role]["area_um2"])) if len(tables[role]["area_um2"]) else float("nan")
    out.update({f"nuclei_{k}": v for k, v in nuclei.items()})
    hist, sq_err, sq_pool = total("hist"), total("sq_err"), total("sq_err_pool")
    similarity, weight = total("similarity"), total("similarity_weight")
    spectrum, hf, spectrum_blocks = total("spectrum"), total("hf_power"), total("spectrum_blocks")
    for s, stain in enumerate(STAINS):
        sim = np.where(weight[s] > 0, similarity[s] / np.maximum(weight[s], 1), np.nan)
        out[f"{stain}_psnr"] = _psnr(sq_err[s], total("pixels"))
        out[f"{stain}_ssim"], out[f"{stain}_ms_ssim"] = float(sim[0]), float(sim[1])
        out[f"{stain}_psnr_pool{POOL}"] = _psnr(sq_pool[s], total("pooled_pixels"))
        out[f"{stain}_ssim_pool{POOL}"], out[f"{stain}_ms_ssim_pool{POOL}"] = float(sim[2]), float(sim[3])
        out[f"{stain}_spectrum_distance"] = (
            log_spectrum_distance(spectrum[0, s], spectrum[1, s]) if spectrum_blocks else float("nan")
        )
        out[f"{stain}_hf_ratio"] = float(hf[0, s] / hf[1, s]) if spectrum_blocks and hf[1, s] > 0 else float("nan")
        out[f"{stain}_histogram_distance"] = histogram_wasserstein(hist[0, s], hist[1, s])
        levels = np.arange(HISTOGRAM_LEVELS)
        out[f"{stain}_mean_intensity"] = float((hist[0, s] * levels).sum() / max(hist[0, s].sum(), 1))
        out[f"{stain}_mean_intensity_truth"] = float((hist[1, s] * levels).sum() / max(hist[1, s].sum(), 1))
    height, width = first.shape
    for period in BORDER_PERIODS:
        if period >= min(height, width):
            continue
        for role, suffix in zip(ROLES, ("", "_truth")):
            profile = _sum_profiles([s.steps[ROLES.index(role)] for s in sections])
            out[f"border_{period}{suffix}"] = profile.worst_phase_2d(period)[0]
    return out


def summarize_regions(sections: list[SectionStats], names: dict[int, str], values: list[int]) -> dict[str, dict]:
    """Per region label: nuclei counts/precision/recall/F1/area distance, PSNR, histogram distance, intensities."""
    out = {}
    tables = {role: _concat([s.table(role) for s in sections]) for role in ROLES}
    pixels = sum(s.region_pixels for s in sections)
    sq_err = sum(s.region_sq_err for s in sections)
    hist = sum(s.region_hist for s in sections)
    offsets, matched_gen, matched_truth = 0, [], []
    truth_offset = 0
    for s in sections:  # matched pairs as indices into the concatenated tables
        matched_gen.append(s.matched[0] + offsets)
        matched_truth.append(s.matched[1] + truth_offset)
        offsets += len(s.table("generated")["y"])
        truth_offset += len(s.table("truth")["y"])
    matched_gen, matched_truth = np.concatenate(matched_gen), np.concatenate(matched_truth)
    for index, value in enumerate(values):
        if pixels[index] == 0:
            continue
        in_gen = tables["generated"]["region"] == index
        in_truth = tables["truth"]["region"] == index
        n_gen, n_truth = int(in_gen.sum()), int(in_truth.sum())
        precision_hits = int(in_gen[matched_gen].sum()) if len(matched_gen) else 0
        recall_hits = int(in_truth[matched_truth].sum()) if len(matched_truth) else 0
        precision = precision_hits / n_gen if n_gen else float(n_truth == 0)
        recall = recall_hits / n_truth if n_truth else float(n_gen == 0)
        entry = {
            "pixels": int(pixels[index]),
            "nuclei_count_generated": n_gen,
            "nuclei_count_truth": n_truth,
            "nuclei_count_error": (n_gen - n_truth) / n_truth if n_truth else float(n_gen > 0),
            "nuclei_precision": precision,
            "nuclei_recall": recall,
            "nuclei_f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
            "nuclei_area_wasserstein_um2": shape_distances(
                {k: v[in_gen] for k, v in tables["generated"].items()},
                {k: v[in_truth] for k, v in tables["truth"].items()},
            )["area_wasserstein_um2"],
        }
        for s, stain in enumerate(STAINS):
            entry[f"{stain}_psnr"] = _psnr(sq_err[index, s], int(pixels[index]))
            entry[f"{stain}_histogram_distance"] = histogram_wasserstein(hist[index, 0, s], hist[index, 1, s])
            levels = np.arange(HISTOGRAM_LEVELS)
            for r, suffix in enumerate(("", "_truth")):
                entry[f"{stain}_mean_intensity{suffix}"] = float((hist[index, r, s] * levels).sum() / pixels[index])
        out[names.get(value, f"label_{value}")] = entry
    return out


def _concat(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def _sum_profiles(profiles: list[StepProfile]) -> StepProfile:
    first = profiles[0]
    return StepProfile(
        sum(p.y_sum for p in profiles), sum(p.x_sum for p in profiles),
        first.y_pairs_per_position * len(profiles), first.x_pairs_per_position * len(profiles),
    )
