"""The main job's truth: a region of the bundled phantom as a store, and one function scoring an output on it.

`teramind generate --out OUT` with no `--genes` writes `main_job_truth(OUT)` (a held-out phantom region: seed 2,
at the embedded model's 0.5 um/px, genes + DAPI/PolyT) beside the output, generates from it and prints
`score_against_truth(OUT, truth)`. Everything scored goes through that one function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..constants import DEFAULT_MODEL_UM_PER_PX
from ..data.ingest.auto import sibling

MAIN_JOB_PHANTOM = {"height": 256, "width": 512, "num_slices": 2, "seed": 2, "um_per_px": DEFAULT_MODEL_UM_PER_PX}


def main_job_truth(out: str | Path, phantom: dict | None = None) -> Path:
    """Write (or reuse, if it holds the same phantom) the truth store beside `out`; returns its path."""
    import zarr

    from ..data.datasets import write_training_store
    from ..data.phantom import make_phantom

    params = {**MAIN_JOB_PHANTOM, **(phantom or {})}
    path = sibling(out, ".truth.zarr")
    if path.exists():
        try:
            if dict(zarr.open_group(str(path), mode="r").attrs).get("phantom") == params:
                return path
        except Exception:  # not a readable store: refused below, like any other foreign folder
            pass
        raise FileExistsError(f"{path} exists and is not this main job's phantom truth; remove it or pick another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    p = dict(params)
    tissue = make_phantom(p.pop("height"), p.pop("width"), p.pop("num_slices"), p.pop("seed"), um_per_px=p.pop("um_per_px"))
    write_training_store(tissue.to_volume(), path)
    zarr.open_group(str(path), mode="r+").attrs["phantom"] = params
    return path


def score_against_truth(out: str | Path, truth: str | Path) -> dict[str, float]:
    """Scores of a generate output against a store's DAPI/PolyT over the output's region and sections.

    Seam score (no truth needed; lower is more seamless) and PSNR / SSIM per stain (they reward blur: read
    them next to realism metrics, never alone).
    """
    import zarr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from .seams import seam_score

    group = zarr.open_group(str(out), mode="r")
    run = dict(group.attrs["teramind"])["run"]
    y0, x0, h, w = run["region_yxhw"]
    z0, z1 = run["slices"]
    generated = np.asarray(group["0"][...])  # (c, z, y, x)
    real = np.asarray(zarr.open_group(str(truth), mode="r")["images"][:, z0:z1, y0 : y0 + h, x0 : x0 + w])
    scores: dict[str, float] = {"seam_score": float(seam_score(str(out)).score)}
    for stain, name in enumerate(("dapi", "polyt")):
        a, b = real[stain].astype(np.float64), generated[stain].astype(np.float64)
        scores[f"{name}_psnr_db"] = float(peak_signal_noise_ratio(a, b, data_range=255))
        scores[f"{name}_ssim"] = float(np.mean([structural_similarity(a[k], b[k], data_range=255) for k in range(len(a))]))
    return scores


def format_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
