"""Knockouts and perturbations against the noise floor, with the morphology that changed.

A perturbed sample is drawn from the same seed as the original, so any difference is due to the genes. Whether it
is a *large* difference is judged against the **noise floor**: the same region, unperturbed, sampled with another
seed (what the model would vary anyway). Inside each cell type and region the report gives the mean absolute
change per stain for the perturbation and for the noise floor and their ratio.

A mean says how much changed, not what. Nuclei are segmented in the DAPI of each sample
(`teramind_hf.eval.nuclei.segment_nuclei`) and matched one to one between original and perturbed by centroid
(within `MATCH_DISTANCE_UM`); per cell type (the type under the original nucleus' centroid) the report gives the
fraction of nuclei removed (no match), added, and the median area and DAPI-brightness ratios of matched nuclei, each
next to the same numbers between original and the other seed. Those numbers are only put into words for a cell type
with at least `MIN_NUCLEI_TO_JUDGE` nuclei: with fewer, one nucleus is a large fraction ("14 % removed" can be one
nucleus of seven), and the phrase says there are too few to judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["MIN_NUCLEI_TO_JUDGE", "KnockoutReport", "change_table", "describe_morphology", "knockout_report", "nucleus_changes"]

MATCH_DISTANCE_UM = 5.0  # centroids this close are the same nucleus (about a nucleus radius)
# Fewest nuclei of a cell type whose changes are put into words: from this count on, one nucleus is at most the
# 10-point margin a change must exceed the noise floor by, so a single nucleus can never make a phrase alone.
MIN_NUCLEI_TO_JUDGE = 10


def _abs_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> list[float]:
    """Mean |a - b| inside ``mask`` ``(Z, H, W)`` for ``(Z, stains, H, W)`` images: per stain, then both."""
    if not mask.any():
        return [float("nan")] * (a.shape[1] + 1)
    diff = np.abs(a - b)
    per_stain = [float(diff[:, s][mask].mean()) for s in range(a.shape[1])]
    return per_stain + [float(np.mean(per_stain))]


def change_table(
    original: np.ndarray, perturbed: np.ndarray, other_seed: np.ndarray, masks: dict[str, np.ndarray]
) -> dict[str, dict]:
    """Per mask: mean |perturbed - original| and the noise floor mean |other_seed - original| (DAPI, PolyT, both
    stains), their ratio, and the pixel count."""
    table = {}
    for name, mask in masks.items():
        change, floor = _abs_change(perturbed, original, mask), _abs_change(other_seed, original, mask)
        table[name] = {
            "pixels": int(mask.sum()),
            "change": change,
            "noise_floor": floor,
            "ratio": [c / f if f > 0 else float("nan") for c, f in zip(change, floor)],
        }
    return table


def _nuclei(dapi: np.ndarray, um_per_px: float) -> dict[str, np.ndarray]:
    from .nuclei import nucleus_table, segment_nuclei

    labels = segment_nuclei(dapi, um_per_px)
    table = nucleus_table(labels, um_per_px)
    sums = np.bincount(labels.ravel(), weights=np.asarray(dapi, dtype=np.float64).ravel())
    table["brightness"] = sums[table["label"]] / np.maximum(table["area_um2"] / um_per_px**2, 1)
    return table


def nucleus_changes(
    original: np.ndarray, other: np.ndarray, cell_types: np.ndarray | None, type_names: Sequence[str], um_per_px: float
) -> dict[str, dict]:
    """Per cell type (and ``"all"``): nuclei of ``original`` removed / added / resized / dimmed in ``other``.

    ``original``, ``other``: ``(Z, stains, H, W)`` in [-1, 1] (DAPI = stain 0); ``cell_types`` ``(Z, H, W)`` with
    0 = background and k = ``type_names[k - 1]`` (None: only ``"all"``).
    """
    from .nuclei import match_centroids

    rows = []  # (type index at the original centroid, matched, area ratio, brightness ratio)
    added = {}
    for z in range(original.shape[0]):
        a = _nuclei((original[z, 0] + 1) / 2, um_per_px)
        b = _nuclei((other[z, 0] + 1) / 2, um_per_px)
        pa, pb = np.stack([a["y"], a["x"]], 1), np.stack([b["y"], b["x"]], 1)
        ia, ib = match_centroids(pa, pb, MATCH_DISTANCE_UM / um_per_px)
        kinds = _type_at(cell_types, z, pa)
        matched = np.zeros(len(pa), dtype=bool)
        matched[ia] = True
        area = np.full(len(pa), np.nan)
        bright = np.full(len(pa), np.nan)
        area[ia] = b["area_um2"][ib] / a["area_um2"][ia]
        bright[ia] = b["brightness"][ib] / np.maximum(a["brightness"][ia], 1e-6)
        rows.extend(zip(kinds, matched, area, bright))
        unmatched_b = np.setdiff1d(np.arange(len(pb)), ib)
        for k in _type_at(cell_types, z, pb[unmatched_b]):
            added[k] = added.get(k, 0) + 1
    kinds = np.array([r[0] for r in rows], dtype=np.int64)
    matched = np.array([r[1] for r in rows], dtype=bool)
    area = np.array([r[2] for r in rows], dtype=np.float64)
    bright = np.array([r[3] for r in rows], dtype=np.float64)
    groups = {"all": np.ones(len(rows), dtype=bool)}
    if cell_types is not None:
        groups["background"] = kinds == 0
        groups.update({name: kinds == k + 1 for k, name in enumerate(type_names)})
    out = {}
    for name, sel in groups.items():
        n = int(sel.sum())
        index = None if name == "all" else (0 if name == "background" else list(type_names).index(name) + 1)
        n_added = sum(added.values()) if index is None else added.get(index, 0)
        out[name] = {
            "nuclei": n,
            "removed_fraction": float((~matched[sel]).mean()) if n else float("nan"),
            "added": int(n_added),
            "median_area_ratio": _median(area[sel & matched]),
            "median_brightness_ratio": _median(bright[sel & matched]),
        }
    return out


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")


def _type_at(cell_types: np.ndarray | None, z: int, points: np.ndarray) -> np.ndarray:
    if cell_types is None or len(points) == 0:
        return np.zeros(len(points), dtype=np.int64)
    h, w = cell_types.shape[1:]
    y = np.clip(np.round(points[:, 0]).astype(int), 0, h - 1)
    x = np.clip(np.round(points[:, 1]).astype(int), 0, w - 1)
    return cell_types[z, y, x].astype(np.int64)


def describe_morphology(changed: dict, floor: dict, margin: float = 0.1, min_nuclei: int = MIN_NUCLEI_TO_JUDGE) -> str:
    """One phrase for a cell type: what changed beyond the seed-to-seed variation (``margin`` = 10 points / 10 %).

    With fewer than ``min_nuclei`` nuclei of the type in the original the phrase says so instead of judging.
    """
    if not changed["nuclei"]:
        return "no nuclei"
    if changed["nuclei"] < min_nuclei:
        return f"too few nuclei to judge ({changed['nuclei']}, fewer than {min_nuclei})"
    words = []
    if changed["removed_fraction"] > floor["removed_fraction"] + margin:
        words.append(f"cells removed ({100 * changed['removed_fraction']:.0f}% of nuclei gone, noise floor "
                     f"{100 * floor['removed_fraction']:.0f}%)")
    for key, small, large in (("median_area_ratio", "shrunk", "enlarged"), ("median_brightness_ratio", "dimmer", "brighter")):
        value, base = changed[key], floor[key]
        if np.isfinite(value) and np.isfinite(base) and abs(value - 1) > abs(base - 1) + margin:
            words.append(f"{small if value < 1 else large} (median x{value:.2f}, noise floor x{base:.2f})")
    return "; ".join(words) or "no morphology change beyond the noise floor"


@dataclass
class KnockoutReport:
    """Original, perturbed and other-seed samples of one region and what the perturbation changed."""

    perturb: dict[str, float]
    seed: int
    noise_seed: int
    original: np.ndarray  # (Z, stains, H, W) in [-1, 1]
    perturbed: np.ndarray
    other_seed: np.ndarray
    changes: dict  # change_table per cell type / region / outside
    nuclei: dict = field(default_factory=dict)  # per cell type: perturbed vs original
    nuclei_noise_floor: dict = field(default_factory=dict)  # per cell type: other seed vs original
    morphology: dict = field(default_factory=dict)  # per cell type: one phrase

    @property
    def difference(self) -> np.ndarray:
        return self.perturbed - self.original

    def to_dict(self) -> dict:
        return {
            "perturb": self.perturb, "seed": self.seed, "noise_seed": self.noise_seed,
            "stains": ["DAPI", "PolyT", "both"], "changes": self.changes, "nuclei": self.nuclei,
            "nuclei_noise_floor": self.nuclei_noise_floor, "morphology": self.morphology,
            "min_nuclei_to_judge": MIN_NUCLEI_TO_JUDGE,
        }


def knockout_report(
    pipe: Any,
    genes: Any,
    gene_names: Sequence[str] | None,
    perturb: dict[str, float],
    *,
    seed: int = 0,
    noise_seed: int = 1,
    cell_types: np.ndarray | None = None,
    type_names: Sequence[str] = (),
    targeted: Sequence[str] = (),
    regions: np.ndarray | None = None,
    region_names: Sequence[str] = (),
    um_per_px: float | None = None,
    morphology: bool = True,
    original: np.ndarray | None = None,
    other_seed: np.ndarray | None = None,
    **pipe_kwargs: Any,
) -> KnockoutReport:
    """Sample original (``seed``), perturbed (``seed``) and other-seed (``noise_seed``) images and compare.

    ``cell_types`` / ``regions``: ``(Z, H, W)`` label images (cell types 1..K named ``type_names``, 0 =
    background; regions 0..R-1 named ``region_names``) of the generated sections. ``targeted`` names the cell
    types the perturbation aims at: the table then also has ``inside_targeted`` and ``outside_targeted``.
    ``um_per_px`` is needed for the nuclei (default: `teramind_hf.DEFAULT_MODEL_UM_PER_PX`). Extra keyword
    arguments (``num_inference_steps``, ``slices`` ...) go to the pipeline; without ``num_inference_steps`` the
    pipeline's default steps are used, as in a plain call. ``original`` / ``other_seed``
    (float ``(Z, 2, H, W)`` results of the same calls with ``seed`` / ``noise_seed``) skip those samples when
    several perturbations of one region are compared.
    """
    from ..constants import DEFAULT_MODEL_UM_PER_PX

    if seed == noise_seed:
        raise ValueError("noise_seed must differ from seed: the noise floor is another seed's sample")
    unknown = sorted(set(t.lower() for t in targeted) - {t.lower() for t in type_names})
    if unknown:
        raise ValueError(f"targeted cell type(s) {unknown} not among the label image's types {list(type_names)}")
    kwargs = {**pipe_kwargs, "output_type": "np"}
    names = None if gene_names is None else list(gene_names)
    if original is None:
        original = np.asarray(pipe(genes, gene_names=names, generator=seed, **kwargs).images)
    perturbed = np.asarray(pipe(genes, gene_names=names, generator=seed, perturb=perturb, **kwargs).images)
    if other_seed is None:
        other_seed = np.asarray(pipe(genes, gene_names=names, generator=noise_seed, **kwargs).images)
    other = other_seed
    z, _, h, w = original.shape
    for label, what in ((cell_types, "cell_types"), (regions, "regions")):
        if label is not None and label.shape != (z, h, w):
            raise ValueError(f"{what} must be (Z, H, W) = {(z, h, w)} like the generated sections, got {label.shape}")
    masks = {"all": np.ones((z, h, w), dtype=bool)}
    if cell_types is not None:
        masks["background"] = cell_types == 0
        masks.update({f"cell_type:{n}": cell_types == k + 1 for k, n in enumerate(type_names)})
        if targeted:
            lowered = [n.lower() for n in type_names]
            inside = np.isin(cell_types, [lowered.index(t.lower()) + 1 for t in targeted])
            masks["inside_targeted"], masks["outside_targeted"] = inside, ~inside
    if regions is not None:
        masks.update({f"region:{n}": regions == k for k, n in enumerate(region_names)})
    report = KnockoutReport(
        perturb=dict(perturb), seed=seed, noise_seed=noise_seed, original=original, perturbed=perturbed,
        other_seed=other, changes=change_table(original, perturbed, other, masks),
    )
    if morphology:
        um = um_per_px or DEFAULT_MODEL_UM_PER_PX
        report.nuclei = nucleus_changes(original, perturbed, cell_types, type_names, um)
        report.nuclei_noise_floor = nucleus_changes(original, other, cell_types, type_names, um)
        report.morphology = {k: describe_morphology(v, report.nuclei_noise_floor[k]) for k, v in report.nuclei.items()}
    return report
