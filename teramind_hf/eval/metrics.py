"""All realism and fidelity metrics of a generated volume against the true one, per section and averaged.

Volumes are ``(Z, 2, H, W)`` (stain 0 DAPI, stain 1 PolyT), uint8 or float in [-1, 1]. Keys are flat so they
tabulate and average: ``nuclei_*`` (DAPI nuclei, :mod:`.nuclei`), ``{stain}_psnr`` etc. (:mod:`.fidelity`),
``{stain}_spectrum_distance``, ``{stain}_hf_ratio``, ``{stain}_histogram_distance`` (:mod:`.spectrum`), and
``border_{period}`` / ``border_{period}_truth``: the worst-2-D-phase grid-line score (:func:`.grid.worst_phase_border_score`) of the
generated and the true section, both stains, at the model's patch (64 px) and default tile (256 px) periods.
"""

from __future__ import annotations

import numpy as np

from ..constants import STAIN_NAMES
from .fidelity import fidelity_metrics
from .grid import step_profile
from .nuclei import MATCH_DISTANCE_UM, nuclei_metrics
from .spectrum import high_frequency_ratio, intensity_histogram_distance, power_spectrum_distance

BORDER_PERIODS = (64, 256)


def check_volumes(generated, truth) -> tuple[np.ndarray, np.ndarray]:
    generated, truth = np.asarray(generated), np.asarray(truth)
    if generated.shape != truth.shape:
        raise ValueError(f"generated volume shape {generated.shape} != truth shape {truth.shape}")
    if generated.ndim != 4 or generated.shape[1] != len(STAIN_NAMES):
        raise ValueError(f"volumes must be (Z, 2, H, W) with stains DAPI, PolyT; got shape {generated.shape}")
    return generated, truth


def stain_metrics(generated: np.ndarray, truth: np.ndarray, stain: str) -> dict[str, float]:
    """Fidelity and texture metrics of one 2-D stain, keys prefixed with the stain's name."""
    values = dict(fidelity_metrics(generated, truth))
    values["spectrum_distance"] = power_spectrum_distance(generated, truth)
    values["hf_ratio"] = high_frequency_ratio(generated, truth)
    values["histogram_distance"] = intensity_histogram_distance(generated, truth)
    return {f"{stain}_{key}": value for key, value in values.items()}


def border_metrics(generated: np.ndarray, truth: np.ndarray, periods=BORDER_PERIODS) -> dict[str, float]:
    """Worst-phase border scores of a generated and a true ``(..., H, W)`` image at each period that fits."""
    out = {}
    profiles = {"": step_profile(generated), "_truth": step_profile(truth)}
    for period in periods:
        if period >= min(generated.shape[-2:]):
            continue
        for suffix, profile in profiles.items():
            out[f"border_{period}{suffix}"] = profile.worst_phase_2d(period)[0]
    return out


def section_metrics(
    generated: np.ndarray, truth: np.ndarray, um_per_px: float, match_distance_um: float = MATCH_DISTANCE_UM
) -> dict[str, float]:
    """Every metric of one section ``(2, H, W)``."""
    out = {f"nuclei_{k}": v for k, v in nuclei_metrics(generated[0], truth[0], um_per_px, match_distance_um).items()}
    for index, stain in enumerate(STAIN_NAMES):
        out.update(stain_metrics(generated[index], truth[index], stain.lower()))
    out.update(border_metrics(generated, truth))
    return out


def mean_of(sections: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean over sections (non-finite values, e.g. PSNR of identical images, propagate)."""
    return {key: float(np.mean([section[key] for section in sections])) for key in sections[0]}


def realism_metrics(
    generated, truth, um_per_px: float, match_distance_um: float = MATCH_DISTANCE_UM
) -> dict[str, object]:
    """``{"sections": [per-section dict, ...], "mean": dict}`` for two ``(Z, 2, H, W)`` volumes."""
    generated, truth = check_volumes(generated, truth)
    sections = [section_metrics(g, t, um_per_px, match_distance_um) for g, t in zip(generated, truth)]
    return {"sections": sections, "mean": mean_of(sections)}
