"""Metrics for the seam and fast-preset studies: worst-phase border score (pooled over regions), PSNR/SSIM,
nuclei F1 / area distance and high-frequency energy ratio.

Uses ``teramind_hf.eval`` (nuclei, spectrum) when present; the fallbacks here are simple stand-ins so the
study can run before that API lands.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------- border score


def border_phase_sums(images: np.ndarray, period: int) -> dict[str, np.ndarray]:
    """Sums of |step| between neighbour pixels, by the phase of the line they straddle.

    images ``(..., H, W)``; the pair (x-1, x) straddles the line of phase ``x % period``. Sums add over
    regions of one geometry (all start on the tile grid), so the score can be pooled over many pixels.
    """
    a = np.asarray(images, dtype=np.float64)
    dy = np.abs(np.diff(a, axis=-2)).reshape(-1, a.shape[-2] - 1, a.shape[-1]).sum(axis=(0, 2))
    dx = np.abs(np.diff(a, axis=-1)).reshape(-1, a.shape[-2], a.shape[-1] - 1).sum(axis=(0, 1))
    lines_y = np.arange(1, a.shape[-2]) % period
    lines_x = np.arange(1, a.shape[-1]) % period
    per_line_y = int(np.prod(a.shape[:-2])) * a.shape[-1]
    per_line_x = int(np.prod(a.shape[:-2])) * a.shape[-2]
    return {
        "sy": np.bincount(lines_y, dy, period), "ny": np.bincount(lines_y, minlength=period) * per_line_y,
        "sx": np.bincount(lines_x, dx, period), "nx": np.bincount(lines_x, minlength=period) * per_line_x,
    }


def add_sums(a: dict | None, b: dict) -> dict:
    return dict(b) if a is None else {k: a[k] + b[k] for k in a}


def worst_phase_score(sums: dict) -> tuple[float, tuple[int, int]]:
    """Max over grid phases (py, px) of mean |step| across that grid's lines / mean |step| elsewhere."""
    sy, ny, sx, nx = (sums[k][:, None] if k in ("sy", "ny") else sums[k][None, :] for k in ("sy", "ny", "sx", "nx"))
    total, count = sums["sy"].sum() + sums["sx"].sum(), sums["ny"].sum() + sums["nx"].sum()
    lines = ny + nx
    on = (sy + sx) / np.maximum(lines, 1)
    off = (total - sy - sx) / (count - lines)
    score = np.where(lines > 0, on / off, -np.inf)  # a phase with no line inside the region scores nothing
    py, px = np.unravel_index(np.argmax(score), score.shape)
    return float(score[py, px]), (int(py), int(px))


def worst_phase_border_score(images: np.ndarray, period: int) -> float:
    return worst_phase_score(border_phase_sums(images, period))[0]


# ---------------------------------------------------------------------------- fidelity and realism


def psnr_ssim(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from teramind_hf.training.validation import image_metrics

    return image_metrics(pred, truth)


def high_frequency_ratio(pred: np.ndarray, truth: np.ndarray, cutoff: float = 1 / 8) -> float:
    """Spectral power above ``cutoff`` cycles/px, generated over truth (``(Z, stains, H, W)``)."""
    try:
        from teramind_hf.eval.spectrum import high_frequency_ratio as shared
    except ImportError:
        shared = None
    if shared is not None:
        return float(shared(pred, truth))

    def power(a):
        a = np.asarray(a, dtype=np.float64)
        a = a - a.mean(axis=(-2, -1), keepdims=True)
        p = np.abs(np.fft.fft2(a)) ** 2
        fy = np.fft.fftfreq(a.shape[-2])[:, None]
        fx = np.fft.fftfreq(a.shape[-1])[None, :]
        return p[..., np.hypot(fy, fx) > cutoff].sum()

    return float(power(pred) / power(truth))


def segment_nuclei(dapi: np.ndarray) -> np.ndarray:
    """Labels of nuclei in one DAPI image in [-1, 1] (fallback: Otsu threshold + distance watershed)."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    smooth = gaussian(dapi, 1.0)
    mask = remove_small_objects(smooth > threshold_otsu(smooth), max_size=19)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=5, labels=ndi.label(mask)[0])
    markers = np.zeros_like(mask, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def nuclei_metrics(pred: np.ndarray, truth: np.ndarray, um_per_px: float = 0.5) -> dict[str, float]:
    """Nuclei F1 and nucleus-area Wasserstein distance (um^2) of DAPI (stain 0), mean over sections.

    ``teramind_hf.eval.nuclei.nuclei_metrics`` when present; else a fallback (Otsu + distance watershed,
    centroids matched within 5 um).
    """
    try:
        from teramind_hf.eval.nuclei import nuclei_metrics as shared
    except ImportError:
        shared = _fallback_nuclei_metrics
    rows = [shared(pred[z, 0], truth[z, 0], um_per_px) for z in range(pred.shape[0])]
    return {"f1": float(np.mean([r["f1"] for r in rows])), "area_w1": float(np.mean([r["area_wasserstein_um2"] for r in rows]))}


def _fallback_nuclei_metrics(pred: np.ndarray, truth: np.ndarray, um_per_px: float) -> dict[str, float]:
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    from scipy.stats import wasserstein_distance
    from skimage.measure import regionprops

    props_p, props_t = regionprops(segment_nuclei(pred)), regionprops(segment_nuclei(truth))
    cp = np.array([p.centroid for p in props_p]).reshape(-1, 2)
    ct = np.array([p.centroid for p in props_t]).reshape(-1, 2)
    tp = 0
    if len(cp) and len(ct):
        d = cdist(cp, ct)
        rows, cols = linear_sum_assignment(d)
        tp = int((d[rows, cols] <= 5.0 / um_per_px).sum())
    areas_p = [p.area * um_per_px**2 for p in props_p]
    areas_t = [p.area * um_per_px**2 for p in props_t]
    w1 = wasserstein_distance(areas_p, areas_t) if areas_p and areas_t else float("nan")
    return {"f1": 2 * tp / max(len(cp) + len(ct), 1), "area_wasserstein_um2": float(w1)}
