"""Nuclei in DAPI: segmentation and detection/shape statistics of generated against true nuclei.

Every size is physical (microns), so the same parameters hold at any pixel size, and the same parameters segment
the truth and the generated image (the threshold itself is Otsu's, found on each image). Defaults come from
nucleus biology, not from any score: mouse brain nuclei are ~6-11 um across (the phantom's cell types too), so

* ``smoothing_um = 0.5``: Gaussian denoising well below a nucleus radius;
* ``min_area_um2 = 10``: a blob smaller than a ~3.6 um disc is not a nucleus (the smallest are ~28 um^2);
* ``split_depth_um = 1``: two touching nuclei are split when the neck between them is >= 1 um narrower than
  their radii (h-maxima of the distance transform), so an oval nucleus is not cut in two;
* ``match_distance_um = 5``: a detection counts as finding a true nucleus when its centroid lies within a
  nucleus radius (~4-5 um) of the true centroid; this is under half the ~16 um cell spacing, so a detection
  cannot be credited to a neighbour.
"""

from __future__ import annotations

import numpy as np

from ._image import as_unit_float, check_shapes

SMOOTHING_UM = 0.5
MIN_AREA_UM2 = 10.0
SPLIT_DEPTH_UM = 1.0
MATCH_DISTANCE_UM = 5.0
CELLPOSE_DIAMETER_UM = 8.0


def segment_nuclei(
    dapi,
    um_per_px: float,
    method: str = "watershed",
    *,
    smoothing_um: float = SMOOTHING_UM,
    min_area_um2: float = MIN_AREA_UM2,
    split_depth_um: float = SPLIT_DEPTH_UM,
    threshold: float | None = None,
) -> np.ndarray:
    """Label image ``(H, W)`` int32 of the nuclei in a DAPI image (0 = background, 1..N nuclei).

    ``method="watershed"``: Otsu threshold of the smoothed image, holes filled, then a distance-transform
    watershed seeded by the h-maxima of the distance (see the module docstring for the physical parameters).
    ``method="cellpose"``: Cellpose's nuclei model (``pip install cellpose``; it needs its weights locally).
    ``threshold``: a fixed threshold of the smoothed [0, 1] image instead of this image's Otsu threshold (the
    block-wise report uses one threshold per section, found from the section's histogram).
    """
    if not um_per_px > 0:
        raise ValueError(f"um_per_px must be > 0, got {um_per_px}")
    image = as_unit_float(dapi)
    if image.ndim != 2:
        raise ValueError(f"segment_nuclei expects a 2-D (H, W) DAPI image, got shape {image.shape}")
    if method == "cellpose":
        return _segment_cellpose(image, um_per_px)
    if method != "watershed":
        raise ValueError(f"unknown nuclei segmentation method {method!r} (expected 'watershed' or 'cellpose')")
    from scipy import ndimage as ndi
    from skimage import filters, morphology, segmentation

    smooth = smoothed(image, um_per_px, smoothing_um)
    if threshold is None and float(smooth.max() - smooth.min()) < 1e-4:  # flat: no nuclei (and no Otsu threshold)
        return np.zeros(image.shape, dtype=np.int32)
    min_area_px = max(int(round(min_area_um2 / um_per_px**2)), 1)
    mask = smooth > (filters.threshold_otsu(smooth) if threshold is None else threshold)
    mask = ndi.binary_fill_holes(morphology.remove_small_objects(mask, max_size=min_area_px - 1))
    if not mask.any():
        return np.zeros(image.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(mask)
    peaks = morphology.h_maxima(distance, split_depth_um / um_per_px).astype(bool) & mask
    eight = np.ones((3, 3), dtype=bool)  # a maximum's pixels may touch only diagonally
    markers, count = ndi.label(peaks, structure=eight)
    components, num_components = ndi.label(mask)
    # a component too thin for any h-maximum still gets one seed (its own label)
    seeded = np.zeros(num_components + 1, dtype=bool)
    seeded[np.unique(components[peaks])] = True
    unseeded = ~seeded[components] & mask
    markers[unseeded] = components[unseeded] + count
    labels = segmentation.watershed(-distance, markers, mask=mask)
    labels = morphology.remove_small_objects(labels, max_size=min_area_px - 1)
    relabelled, _, _ = segmentation.relabel_sequential(labels)
    return relabelled.astype(np.int32)


def smoothed(unit: np.ndarray, um_per_px: float, smoothing_um: float = SMOOTHING_UM) -> np.ndarray:
    """The [0, 1] DAPI image as the watershed segmentation thresholds it (Gaussian, sigma in um)."""
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(unit, smoothing_um / um_per_px) if smoothing_um > 0 else unit


def otsu_from_histogram(counts: np.ndarray) -> float | None:
    """Otsu's threshold of a histogram of [0, 1] values in ``len(counts)`` equal bins (None when flat)."""
    from skimage.filters import threshold_otsu

    if np.count_nonzero(counts) < 2:
        return None
    centres = (np.arange(len(counts)) + 0.5) / len(counts)
    return float(threshold_otsu(hist=(counts, centres)))


def _segment_cellpose(image: np.ndarray, um_per_px: float) -> np.ndarray:
    try:
        from cellpose import models
    except ImportError as err:
        raise ValueError(
            "method='cellpose' needs the cellpose package (pip install cellpose) and its nuclei weights; "
            "use method='watershed' otherwise"
        ) from err
    model = models.Cellpose(model_type="nuclei") if hasattr(models, "Cellpose") else models.CellposeModel()
    masks = model.eval(image, diameter=CELLPOSE_DIAMETER_UM / um_per_px, channels=[0, 0])[0]
    return np.asarray(masks, dtype=np.int32)


def nucleus_table(labels: np.ndarray, um_per_px: float) -> dict[str, np.ndarray]:
    """Per nucleus: ``label``, centroid ``y``/``x`` (px), ``area_um2`` and ``eccentricity`` of a label image."""
    from skimage.measure import regionprops_table

    if labels.max() == 0:
        empty = np.zeros(0)
        return {"label": empty.astype(np.int32), "y": empty, "x": empty, "area_um2": empty, "eccentricity": empty}
    props = regionprops_table(labels, properties=("label", "centroid", "area", "eccentricity"))
    return {
        "label": props["label"].astype(np.int32),
        "y": props["centroid-0"],
        "x": props["centroid-1"],
        "area_um2": props["area"] * um_per_px**2,
        "eccentricity": props["eccentricity"],
    }


def match_centroids(points_a: np.ndarray, points_b: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two ``(N, 2)`` point sets: the most pairs within ``max_distance``, then the
    smallest total distance (Hungarian algorithm per connected group of candidate pairs, so it scales).
    Returns the matched indices into ``points_a`` and ``points_b``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    none = np.zeros(0, dtype=np.int64)
    if len(points_a) == 0 or len(points_b) == 0:
        return none, none
    close = cKDTree(points_a).sparse_distance_matrix(cKDTree(points_b), max_distance, output_type="coo_matrix")
    if close.nnz == 0:
        return none, none
    n_a = len(points_a)
    # candidate pairs as a bipartite graph (a: 0..n_a-1, b: n_a..): groups of mutually reachable points
    graph = coo_matrix((np.ones(close.nnz), (close.row, close.col + n_a)), shape=(n_a + len(points_b),) * 2)
    _, group = connected_components(graph, directed=False)
    matched_a, matched_b = [], []
    pair_group = group[close.row]
    order = np.argsort(pair_group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pair_group[order]) != 0])
    for block in np.split(order, starts[1:]):
        rows, row_index = np.unique(close.row[block], return_inverse=True)
        cols, col_index = np.unique(close.col[block], return_inverse=True)
        # pairs beyond max_distance cost more than any set of real pairs, so the count of real pairs is maximal
        forbidden = max_distance * (len(rows) + len(cols) + 1) + 1.0
        cost = np.full((len(rows), len(cols)), forbidden)
        cost[row_index, col_index] = np.maximum(close.data[block], 0.0)
        r, c = linear_sum_assignment(cost)
        real = cost[r, c] < forbidden
        matched_a.append(rows[r[real]])
        matched_b.append(cols[c[real]])
    return np.concatenate(matched_a), np.concatenate(matched_b)


def merged_count(generated_labels: np.ndarray, truth_table: dict[str, np.ndarray]) -> int:
    """Generated nuclei that contain the centroids of two or more true nuclei (two nuclei rendered as one)."""
    if len(truth_table["y"]) == 0:
        return 0
    h, w = generated_labels.shape
    y = np.clip(np.round(truth_table["y"]).astype(int), 0, h - 1)
    x = np.clip(np.round(truth_table["x"]).astype(int), 0, w - 1)
    hits = generated_labels[y, x]
    hits = hits[hits > 0]
    return int((np.bincount(hits) >= 2).sum()) if hits.size else 0


def detection_scores(true_positives: int, count_generated: int, count_truth: int) -> dict[str, float]:
    """Count error (relative to truth), precision, recall and F1 of a matching."""
    precision = true_positives / count_generated if count_generated else float(count_truth == 0)
    recall = true_positives / count_truth if count_truth else float(count_generated == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    count_error = (count_generated - count_truth) / count_truth if count_truth else float(count_generated > 0)
    return {"count_error": float(count_error), "precision": float(precision), "recall": float(recall), "f1": float(f1)}


def shape_distances(generated_table: dict, truth_table: dict) -> dict[str, float]:
    """Wasserstein distances of nucleus areas (um^2) and eccentricities (nan when either side has no nuclei)."""
    from scipy.stats import wasserstein_distance

    out = {}
    for key, name in (("area_um2", "area_wasserstein_um2"), ("eccentricity", "eccentricity_wasserstein")):
        a, b = generated_table[key], truth_table[key]
        out[name] = float(wasserstein_distance(a, b)) if len(a) and len(b) else float("nan")
    return out


def nuclei_metrics(
    generated_dapi,
    truth_dapi,
    um_per_px: float,
    match_distance_um: float = MATCH_DISTANCE_UM,
    method: str = "watershed",
) -> dict[str, float]:
    """Nuclei of a generated DAPI image against the true one, both segmented with the same parameters.

    Keys: ``count_generated``, ``count_truth``, ``count_error`` ((generated - truth) / truth), ``precision``,
    ``recall``, ``f1`` (one-to-one centroid matching within ``match_distance_um``), ``area_wasserstein_um2``,
    ``eccentricity_wasserstein``, ``merged_rate`` (share of generated nuclei holding >= 2 true centroids),
    ``mean_area_generated_um2`` and ``mean_area_truth_um2``.
    """
    generated, truth = check_shapes(generated_dapi, truth_dapi)
    generated_labels = segment_nuclei(generated, um_per_px, method)
    truth_labels = segment_nuclei(truth, um_per_px, method)
    return nuclei_metrics_from_labels(generated_labels, truth_labels, um_per_px, match_distance_um)


def nuclei_metrics_from_labels(
    generated_labels: np.ndarray, truth_labels: np.ndarray, um_per_px: float, match_distance_um: float = MATCH_DISTANCE_UM
) -> dict[str, float]:
    """:func:`nuclei_metrics` from two label images already segmented."""
    generated_table = nucleus_table(generated_labels, um_per_px)
    truth_table = nucleus_table(truth_labels, um_per_px)
    matched, _ = match_centroids(
        np.column_stack([generated_table["y"], generated_table["x"]]),
        np.column_stack([truth_table["y"], truth_table["x"]]),
        match_distance_um / um_per_px,
    )
    n_gen, n_truth = len(generated_table["y"]), len(truth_table["y"])
    merged = merged_count(generated_labels, truth_table)
    return {
        "count_generated": n_gen,
        "count_truth": n_truth,
        **detection_scores(len(matched), n_gen, n_truth),
        **shape_distances(generated_table, truth_table),
        "merged_rate": merged / n_gen if n_gen else 0.0,
        "mean_area_generated_um2": float(np.mean(generated_table["area_um2"])) if n_gen else float("nan"),
        "mean_area_truth_um2": float(np.mean(truth_table["area_um2"])) if n_truth else float("nan"),
    }
