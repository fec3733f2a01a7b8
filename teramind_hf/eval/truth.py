"""The main job's truth: a region of the bundled phantom as a store, and one function scoring an output on it.

`teramind generate --out OUT` with no `--genes` writes `main_job_truth(OUT)` (a held-out phantom region: seed 2,
at the embedded model's 0.5 um/px, genes + DAPI/PolyT) beside the output, generates from it and prints
`score_against_truth(OUT, truth)` (the evaluation report with the mean-image control, written beside the
output as `region.eval/`). Everything scored goes through that one function.
"""

from __future__ import annotations

from pathlib import Path


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


SUMMARY_KEYS = ("nuclei_f1", "dapi_hf_ratio", "dapi_psnr", "dapi_ssim", "polyt_psnr", "polyt_ssim")


def score_against_truth(out: str | Path, truth: str | Path, report_dir: str | Path | None = None) -> dict:
    """Scores of a generate output against a store's DAPI/PolyT (the main job's one scoring call).

    Runs `evaluation_report` with the mean-image control (no extra generation) and writes its report.json /
    report.png to `report_dir` (default: beside `out`, `region.eval/`). Returns the seam score, the model row's
    main metrics (`SUMMARY_KEYS`), the report folder and the printed table (model vs mean image: PSNR/SSIM
    favour the blurred mean, nuclei F1 and the high-frequency ratio do not).
    """
    from .report import evaluation_report
    from .seams import seam_score

    report_dir = Path(report_dir) if report_dir is not None else sibling(out, ".eval")
    report = evaluation_report(out, truth, controls=("mean_image",), seeds=1, out_dir=report_dir, progress=False)
    model = report.row("model")
    scores = {"seam_score": float(seam_score(str(out)).score), **{k: model[k] for k in SUMMARY_KEYS if k in model}}
    return {**scores, "report": str(report_dir), "table": report.table()}


def format_scores(scores: dict) -> str:
    numbers = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
    return f"{numbers}\n{scores['table']}\nreport: {scores['report']}/report.json, report.png"
