"""Metrics for the prototype seam and fast-preset studies: PSNR/SSIM, nuclei F1 / area distance and
high-frequency energy ratio (border scores: ``teramind_hf.eval.grid.StepProfile``).

Uses ``teramind_hf.eval`` (nuclei, spectrum) when present; the fallbacks here are simple stand-ins so the
study can run before that API lands.
"""

from __future__ import annotations

import numpy as np


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
