"""Pixel fidelity: PSNR, SSIM and MS-SSIM of a generated stain against the true one, also after 4x4 pooling.

These say how close each pixel is to the truth, not whether the image looks real: a generated cell in a slightly
different place costs twice (once where it is, once where it should be), while a blurred image of the truth
loses little, so blur *wins* on all three (see docs/evaluation.md). Read them next to the realism metrics.
Images are compared as [0, 1] floats (data range 1). SSIM is scikit-image's (7-px window); MS-SSIM is
torchmetrics' (11-px Gaussian window, the five weights of Wang et al. 2003, negative contrast terms clipped by
``normalize="relu"``). An image too small for five scales (torchmetrics needs side // (scales - 1)^2 > 10,
so 5 scales need > 160 px; 128 px after 4x4 pooling gets 4) uses as many scales as fit, with their weights
renormalised to sum to 1; ``ms_ssim`` is nan below two scales.
"""

from __future__ import annotations

import numpy as np

from ._image import check_pair

POOL = 4
MS_SSIM_KERNEL = 11
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def pooled(image: np.ndarray, factor: int = POOL) -> np.ndarray:
    """Mean over ``factor x factor`` blocks (the image cropped to a multiple of ``factor``)."""
    from skimage.measure import block_reduce

    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return block_reduce(image[:height, :width], (factor, factor), np.mean)


def ms_ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """Multi-scale SSIM of two [0, 1] images (torchmetrics), with as many of the five scales as the size allows."""
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    side = min(generated.shape)
    scales = len(MS_SSIM_BETAS)
    # torchmetrics' size rule: side // (scales - 1)^2 > kernel - 1, and side >= 2^scales
    while scales > 1 and (side // max(1, scales - 1) ** 2 <= MS_SSIM_KERNEL - 1 or side < 2**scales):
        scales -= 1
    if scales < 2:
        return float("nan")
    betas = np.asarray(MS_SSIM_BETAS[:scales])
    value = multiscale_structural_similarity_index_measure(
        torch.from_numpy(np.ascontiguousarray(generated, dtype=np.float32))[None, None],
        torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))[None, None],
        data_range=1.0,
        kernel_size=MS_SSIM_KERNEL,
        betas=tuple(float(b) for b in betas / betas.sum()),
        normalize="relu",
    )
    return float(value)


def _fidelity(generated: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    with np.errstate(divide="ignore"):  # identical images: PSNR is +inf
        psnr = float(peak_signal_noise_ratio(truth, generated, data_range=1.0))
    return {
        "psnr": psnr,
        "ssim": float(structural_similarity(truth, generated, data_range=1.0)),
        "ms_ssim": ms_ssim(generated, truth),
    }


def fidelity_metrics(generated, truth) -> dict[str, float]:
    """``psnr`` (dB), ``ssim``, ``ms_ssim`` of one 2-D stain ``(H, W)``, and the same after 4x4 mean pooling
    (``psnr_pool4``, ...), which forgives placement errors below ~4 px."""
    generated, truth = check_pair(generated, truth)
    if min(generated.shape) < 7 * POOL:
        raise ValueError(f"fidelity metrics need images of at least {7 * POOL} px a side, got {generated.shape}")
    out = _fidelity(generated, truth)
    out.update({f"{k}_pool{POOL}": v for k, v in _fidelity(pooled(generated), pooled(truth)).items()})
    return out
