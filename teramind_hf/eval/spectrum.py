"""Texture statistics that blur cannot fake: radial power spectra, high-frequency energy, intensity histograms.

PSNR and SSIM reward a smooth image (the mean of all plausible samples is closest to any one of them), while a
real micrograph keeps its edges and noise. Power at high spatial frequency measures that directly: a blurred
image has less of it than the truth, a noisy one more.

Spectra use a 2-D Hann window after removing the mean, so the image's own edges (which are not periodic) add no
spurious cross of high-frequency power; frequencies are in cycles per pixel (0.5 = Nyquist).
"""

from __future__ import annotations

import numpy as np

from ._image import as_unit_float, check_pair

HIGH_FREQUENCY_CUTOFF = 1 / 8  # cycles/px; above it lie edges and texture finer than 8 px
HISTOGRAM_LEVELS = 256


def _windowed_power(unit: np.ndarray) -> np.ndarray:
    """``|FFT|^2`` of the mean-removed, Hann-windowed last two axes of a [0, 1] image, averaged over leading axes."""
    image = unit.astype(np.float64)
    height, width = image.shape[-2:]
    window = np.outer(np.hanning(height), np.hanning(width))
    centred = image - image.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(centred * window)) ** 2 / (window**2).sum()
    return power.reshape(-1, height, width).mean(axis=0)


def _radius(height: int, width: int) -> np.ndarray:
    """Radial spatial frequency (cycles/px) of each 2-D FFT coefficient."""
    return np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])


def radial_power_spectrum(image) -> tuple[np.ndarray, np.ndarray]:
    """``(freq_cycles_per_px, power)``: mean power in rings of width ``1 / min(H, W)`` from 0 to Nyquist.

    ``image`` is ``(H, W)`` (or ``(..., H, W)``, averaged over the leading axes); frequencies are the ring
    centres; the DC ring (the mean, removed) is left out."""
    return _radial_spectrum(as_unit_float(image))


def _radial_spectrum(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ring_means(_windowed_power(unit))


def ring_means(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(freq, mean power)`` of a 2-D ``|FFT|^2`` in rings of width ``1 / min(H, W)``, DC ring left out."""
    height, width = power.shape
    step = 1.0 / min(height, width)
    ring = np.floor(_radius(height, width) / step + 0.5).astype(np.int64)  # ring k holds |f| in [(k-.5)s, (k+.5)s)
    rings = int(0.5 / step) + 1
    inside = ring < rings
    sums = np.bincount(ring[inside], weights=power[inside], minlength=rings)
    counts = np.bincount(ring[inside], minlength=rings)
    keep = np.arange(rings) > 0
    return np.arange(rings)[keep] * step, sums[keep] / np.maximum(counts[keep], 1)


def spectrum_of_block(unit: np.ndarray, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> tuple[np.ndarray, float]:
    """Ring-mean power and power above ``cutoff`` of one [0, 1] block: what the block-wise report sums
    (Welch's estimate: the spectrum of a large image as the mean of its blocks' spectra)."""
    power = _windowed_power(unit)
    return ring_means(power)[1], float(power[_radius(*power.shape) > cutoff].sum())


def log_spectrum_distance(power_a: np.ndarray, power_b: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over rings of ``|log10(power_a / power_b)|``."""
    return float(np.mean(np.abs(np.log10((power_a + eps) / (power_b + eps)))))


def power_spectrum_distance(generated, truth, eps: float = 1e-12) -> float:
    """Mean over frequency rings of ``|log10(P_generated / P_truth)|``: 0 for equal spectra, 1 for a 10x gap."""
    generated, truth = check_pair(generated, truth, ndim=None)
    return log_spectrum_distance(_radial_spectrum(generated)[1], _radial_spectrum(truth)[1], eps)


def high_frequency_power(image, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """Total spectral power at radial frequencies above ``cutoff`` cycles/px."""
    return _high_frequency_power(as_unit_float(image), cutoff)


def _high_frequency_power(unit: np.ndarray, cutoff: float) -> float:
    power = _windowed_power(unit)
    return float(power[_radius(*power.shape) > cutoff].sum())


def high_frequency_ratio(generated, truth, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """Spectral power above ``cutoff`` (default 1/8 cycle/px), generated over truth: < 1 blurred, > 1 noisier."""
    generated, truth = check_pair(generated, truth, ndim=None)
    truth_power = _high_frequency_power(truth, cutoff)
    return _high_frequency_power(generated, cutoff) / truth_power if truth_power > 0 else float("nan")


def intensity_histogram(image) -> np.ndarray:
    """Counts of the 256 uint8 intensity levels (floats in [-1, 1] are quantised to the nearest level)."""
    return _histogram(as_unit_float(image))


def _histogram(unit: np.ndarray) -> np.ndarray:
    levels = np.round(unit * (HISTOGRAM_LEVELS - 1)).astype(np.int64)
    return np.bincount(levels.ravel(), minlength=HISTOGRAM_LEVELS)


def histogram_wasserstein(generated_counts: np.ndarray, truth_counts: np.ndarray) -> float:
    """Wasserstein distance (in uint8 levels) between two intensity histograms (so blocks can be summed first)."""
    from scipy.stats import wasserstein_distance

    if generated_counts.sum() == 0 or truth_counts.sum() == 0:
        return float("nan")
    levels = np.arange(len(generated_counts), dtype=np.float64)
    return float(wasserstein_distance(levels, levels, generated_counts, truth_counts))


def intensity_histogram_distance(generated, truth) -> float:
    """Wasserstein distance of the two images' intensity distributions, in uint8 levels (0-255)."""
    generated, truth = check_pair(generated, truth, ndim=None)
    return histogram_wasserstein(_histogram(generated), _histogram(truth))
