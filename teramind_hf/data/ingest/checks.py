"""Input checks of `teramind ingest`, run on every batch of the scan pass (before anything is written)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def check_coordinates(values: np.ndarray, column: str, source: str) -> np.ndarray:
    """float64 coordinates; ValueError naming `source` and `column` for missing / NaN / non-numeric values."""
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numeric)
    if bad.any():
        raise ValueError(f"{source}: column {column!r} has {int(bad.sum())} missing/non-numeric/NaN/inf values")
    return numeric


def check_sections(values: np.ndarray, column: str, source: str) -> np.ndarray:
    z = check_coordinates(values, column, source)
    if (z < 0).any() or (z != np.round(z)).any():
        raise ValueError(f"{source}: column {column!r} must hold non-negative integer section indices")
    return z.astype(np.int64)


def check_grid(
    shape: tuple[int, int, int, int], max_store_bytes: int, source: str, why: str
) -> None:
    """Refuse, before anything is allocated, a dense gene grid larger than `max_store_bytes`."""
    nbytes = 4 * int(np.prod([int(n) for n in shape], dtype=object))
    if nbytes > max_store_bytes:
        raise ValueError(
            f"{source}: {why} gives a gene grid of shape (G, Z, Hb, Wb)={tuple(shape)} = {nbytes / 2**40:.3g} TiB of "
            f"float32, over the {max_store_bytes / 2**40:.3g} TiB limit; check the coordinate units / --um-per-px, "
            "or raise max_store_bytes (--max-store-gib)"
        )


ORIGINS = ("zero", "extent")


def _check_common(gene_bin: int, um_per_px: float | None, batch_rows: int, buffer_bins: int, origin: str) -> None:
    if gene_bin < 1:
        raise ValueError(f"gene_bin must be >= 1, got {gene_bin}")
    if um_per_px is not None and not (np.isfinite(um_per_px) and um_per_px > 0):
        raise ValueError(f"um_per_px must be a positive number, got {um_per_px}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if buffer_bins < 1:
        raise ValueError(f"buffer_bins must be >= 1, got {buffer_bins}")
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
