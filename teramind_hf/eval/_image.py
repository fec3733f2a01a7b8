"""Image conventions shared by the metrics: 2-D ``(H, W)`` stains, uint8 (0-255) or float in [-1, 1]."""

from __future__ import annotations

import numpy as np


def as_unit_float(image) -> np.ndarray:
    """``image`` as float32 in [0, 1]: uint8 is divided by 255, floats are read as the model's [-1, 1] range."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0-255) or float in [-1, 1], got dtype {array.dtype}")
    return np.clip((array.astype(np.float32) + 1.0) * 0.5, 0.0, 1.0)


def check_shapes(generated, truth, ndim: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both images as arrays (not converted), after checking that their shapes agree (and have ``ndim`` axes)."""
    generated, truth = np.asarray(generated), np.asarray(truth)
    if generated.shape != truth.shape:
        raise ValueError(f"generated shape {generated.shape} != truth shape {truth.shape}")
    if ndim is not None and generated.ndim != ndim:
        raise ValueError(f"expected {ndim}-D images, got shape {generated.shape}")
    return generated, truth


def check_pair(generated, truth, ndim: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both images as unit floats, after :func:`check_shapes`."""
    generated, truth = check_shapes(generated, truth, ndim)
    return as_unit_float(generated), as_unit_float(truth)
