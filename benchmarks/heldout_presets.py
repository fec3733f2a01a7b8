"""Presets (and other pipeline folders) on held-out phantom regions, over several noise seeds (issue 21 item 4).

For every preset of the embedded pipeline, and every ``LABEL=DIR[:PRESET]`` pipeline folder given with
``--pipelines`` (e.g. a distilled student with its own preset), the script samples each held-out phantom region
(seeds 2-7 by default; the embedded model trained on seed 0 and was validated on seed 1, so those two are
refused) with each noise seed, through ``TeraMindPipeline`` (the one tile engine), and prints per candidate:

* calls per tile on the grid it actually runs, counted through the real engine with a forward hook on a narrow
  model of the same geometry and sampling plan (as tests/test_preset_call_counts.py does);
* the worst-2-D-phase border score (:func:`teramind_hf.eval.grid.worst_phase_border_score`) at 64 and 256 px,
  both stains, every section, pooled over the regions, and the truth's;
* nuclei F1, nucleus-area Wasserstein distance, high-frequency power per stain relative to the truth and to the
  reference (DDIM-15 on the official grid), PSNR and SSIM (means of the two stains), each the mean over regions;

each as mean ± spread over the noise seeds (spread: the standard deviation over seeds, ddof 1), and a verdict on
every criterion of issue 21 item 2 against the reference:

* ``b64`` / ``b256``: pooled border score at most the truth's + 0.15;
* ``F1``, ``PSNR``, ``SSIM``: not lower than the reference by more than the seed-to-seed spread;
* ``area``: Wasserstein not higher than the reference's by more than the seed-to-seed spread (the noise floor);
* ``dapi HF`` / ``polyt HF``: within 10 % of the reference's.

The spread used is the larger of the candidate's and the reference's. Samples are cached as .npy (by preset,
the sampling pipeline's weights and configs, region, size and noise seed) so an interrupted run resumes;
``--json`` gets every number.

    OMP_NUM_THREADS=1 python benchmarks/heldout_presets.py --regions 2 3 4 5 6 7 --noise-seeds 0 1 --size 512 \\
        --presets official seamless fast fastest --json heldout_presets.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from teramind_hf import DEFAULT_MODEL_UM_PER_PX, GeneMorphUNet3DModel, TeraMindPipeline, packaged_model_path  # noqa: E402
from teramind_hf.data.phantom import make_phantom  # noqa: E402
from teramind_hf.eval.grid import step_profile, worst_phase_border_score  # noqa: E402
from teramind_hf.eval.metrics import realism_metrics  # noqa: E402
from teramind_hf.pipelines.run_record import model_fingerprint  # noqa: E402
from teramind_hf.sampling.presets import PRESETS, resolve_preset  # noqa: E402

TRAINING_REGIONS = (0, 1)  # the embedded model's training (0) and validation (1) phantom seeds
PERIODS = (64, 256)
TRUTH_MARGIN = 0.15
HF_TOLERANCE = 0.10
REFERENCE = "official"
# a cheaper model of the pipeline's geometry: the call count depends on the sampling plan, not the model's width
NARROW = dict(block_out_channels=(2, 4, 8, 16), time_embed_dim=16, gene_map_channels=(4, 4, 2), layers_per_block=1,
              attention_levels=())
METRICS = ("nuclei_f1", "nuclei_area_wasserstein_um2", "dapi_hf_ratio", "polyt_hf_ratio", "psnr", "ssim")


def student_folder(preset) -> str | None:
    """The shipped weights a student's preset needs (``Preset.model``), or None for any other preset (or none)."""
    return resolve_preset(preset).model if preset is not None else None


def preset_pipeline(preset, default: TeraMindPipeline) -> TeraMindPipeline:
    """The pipeline a preset runs: its own shipped weights for a student's preset (``Preset.model``), else ``default``."""
    folder = student_folder(preset)
    if folder is None:
        return default
    pipe = TeraMindPipeline.from_pretrained(packaged_model_path(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def calls_per_tile(pipe: TeraMindPipeline, preset) -> int:
    """Model calls (canvases) the engine makes for one 256-px tile of 2 sections, on a narrow stand-in model; for a
    student's preset (``Preset.model``) on ``pipe`` itself, which must be that student (:func:`preset_pipeline`):
    the preset refuses any other weights."""
    if student_folder(preset) is not None:
        stand_in = pipe
    else:
        unet = GeneMorphUNet3DModel.from_config({**pipe.unet.config, **NARROW}).eval()
        stand_in = TeraMindPipeline(unet=unet, scheduler=pipe.scheduler, grid=pipe.config.grid,
                                    num_inference_steps=pipe.config.num_inference_steps)
        stand_in.set_progress_bar_config(disable=True)
    unet = stand_in.unet
    canvases: list[int] = []
    hook = unet.register_forward_pre_hook(lambda module, args: canvases.append(args[0].shape[0]))
    try:
        genes = np.random.default_rng(0).poisson(0.5, (unet.config.num_genes, 2, 16, 16)).astype(np.float32)
        stand_in(genes, preset=preset, generator=0, output_type="np")
    finally:
        hook.remove()
    return int(sum(canvases))


def cached_sample(pipe, tissue, preset, noise_seed: int, cache: Path, key: tuple) -> np.ndarray:
    """The pipeline's uint8 sample of ``tissue``, stored in ``cache`` under a hash of ``key`` (a stopped run resumes)."""
    path = cache / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    out = pipe(tissue.genes, gene_names=list(tissue.panel), preset=preset, generator=noise_seed, output_type="uint8")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # unique: runs side by side may sample the same key
    np.save(tmp, out.images)
    os.replace(tmp, path)
    return out.images


def pipeline_identity(pipe: TeraMindPipeline) -> str:
    """What a cached sample depends on besides its arguments: the weights (their sha256, as the run record has it)
    and the pipeline's and scheduler's configs. Without it, retrained weights in the same folder would be read from
    the cache."""
    configs = [sorted((k, v) for k, v in dict(c).items() if not k.startswith("_")) for c in (pipe.config, pipe.scheduler.config)]
    return model_fingerprint(pipe.unet) + repr(configs)


def sample(pipe, identity: str, preset, tissue, region: int, size: int, noise_seed: int, cache: Path) -> np.ndarray:
    return cached_sample(pipe, tissue, preset, noise_seed, cache, (identity, preset, region, size, noise_seed))


def summary(metrics: dict) -> dict[str, float]:
    m = metrics["mean"]
    keep = ("nuclei_f1", "nuclei_area_wasserstein_um2", "dapi_hf_ratio", "polyt_hf_ratio")
    return {**{k: float(m[k]) for k in keep}, "psnr": float(m["dapi_psnr"] + m["polyt_psnr"]) / 2,
            "ssim": float(m["dapi_ssim"] + m["polyt_ssim"]) / 2}


def mean_spread(values) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "spread": spread, "values": values.tolist()}


def verdicts(row: dict, ref: dict, truth: dict) -> dict[str, bool]:
    """Issue 21 item 2's criteria of one candidate against the reference row (both of mean/spread entries)."""
    def tol(key):
        spreads = [s for s in (row[key]["spread"], ref[key]["spread"]) if np.isfinite(s)]
        return max(spreads) if spreads else 0.0

    out = {f"b{p}": row[f"b{p}"]["mean"] <= truth[f"b{p}"] + TRUTH_MARGIN for p in PERIODS if f"b{p}" in row}
    for key, name in (("nuclei_f1", "F1"), ("psnr", "PSNR"), ("ssim", "SSIM")):
        out[name] = row[key]["mean"] >= ref[key]["mean"] - tol(key)
    key = "nuclei_area_wasserstein_um2"
    out["area"] = row[key]["mean"] <= ref[key]["mean"] + tol(key)
    for stain in ("dapi", "polyt"):
        out[f"{stain} HF"] = abs(row[f"{stain}_hf_vs_reference"]["mean"] - 1) <= HF_TOLERANCE
    return out


def parse_pipelines(specs: list[str]) -> list[tuple[str, str, str | None]]:
    out = []
    for spec in specs:
        label, sep, body = spec.partition("=")
        if not sep or not body:
            raise SystemExit(f"--pipelines: expected LABEL=DIR[:PRESET], got {spec!r}")
        folder, _, preset = body.partition(":")
        out.append((label, folder, preset or None))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7], help="phantom seeds (not 0, 1)")
    parser.add_argument("--noise-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", type=int, default=512, help="region side in px (2 sections), a whole number of 256-px tiles with at least one inner border: 512 and up")
    parser.add_argument("--presets", nargs="+", default=["official", "seamless", "fast", "fastest"])
    parser.add_argument("--pipelines", nargs="*", default=[], help="LABEL=DIR[:PRESET] pipeline folders")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="/tmp/teramind_heldout_cache")
    parser.add_argument("--json", default=None, help="write every number here")
    args = parser.parse_args(argv)
    if set(args.regions) & set(TRAINING_REGIONS):
        raise SystemExit(f"--regions: phantom seeds {TRAINING_REGIONS} trained / validated the model; use 2 and up")
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"--presets: unknown {unknown}; known: {sorted(PRESETS)}")
    if REFERENCE not in args.presets:
        args.presets = [REFERENCE, *args.presets]
    torch.set_num_threads(args.threads)
    embedded = TeraMindPipeline.from_pretrained()
    candidates = [(p, preset_pipeline(p, embedded), p) for p in args.presets]
    for label, folder, preset in parse_pipelines(args.pipelines):
        candidates.append((label, TeraMindPipeline.from_pretrained(folder), preset))
    for _, pipe, _ in candidates:
        pipe.set_progress_bar_config(disable=True)
    calls = {label: calls_per_tile(pipe, preset) for label, pipe, preset in candidates}
    identities = {label: pipeline_identity(pipe) for label, pipe, _ in candidates}

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    per_seed = {label: {s: [] for s in args.noise_seeds} for label, *_ in candidates}  # summaries over regions
    profiles = {label: {s: None for s in args.noise_seeds} for label, *_ in candidates}
    truth_profile = None
    for region in args.regions:
        tissue = make_phantom(args.size, args.size, num_slices=2, seed=region, um_per_px=DEFAULT_MODEL_UM_PER_PX)
        truth = tissue.images.transpose(1, 0, 2, 3)  # (Z, 2, H, W) uint8
        truth_profile = step_profile(truth) + truth_profile if truth_profile else step_profile(truth)
        for label, pipe, preset in candidates:
            for noise_seed in args.noise_seeds:
                wall, cpu = time.perf_counter(), time.process_time()
                images = sample(pipe, identities[label], preset, tissue, region, args.size, noise_seed, cache)
                values = summary(realism_metrics(images, truth, DEFAULT_MODEL_UM_PER_PX))
                per_seed[label][noise_seed].append(values)
                profile = step_profile(images)
                old = profiles[label][noise_seed]
                profiles[label][noise_seed] = profile + old if old else profile
                print(f"region {region} {label} noise seed {noise_seed}: "
                      + " ".join(f"{k} {v:.4g}" for k, v in values.items())
                      + f" ({time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s CPU)", flush=True)

    truth_row = {f"b{p}": worst_phase_border_score(truth_profile, p)[0] for p in PERIODS if args.size >= 2 * p}
    rows = {}
    for label, *_ in candidates:
        row = {"calls_per_tile": calls[label]}
        for key in METRICS:
            row[key] = mean_spread([np.mean([r[key] for r in per_seed[label][s]]) for s in args.noise_seeds])
        for p in PERIODS:
            if args.size >= 2 * p:
                row[f"b{p}"] = mean_spread([worst_phase_border_score(profiles[label][s], p)[0] for s in args.noise_seeds])
        rows[label] = row
    ref = rows[REFERENCE]
    for label, row in rows.items():
        for stain in ("dapi", "polyt"):
            key = f"{stain}_hf_ratio"
            row[f"{stain}_hf_vs_reference"] = mean_spread(
                [np.mean([r[key] for r in per_seed[label][s]]) / np.mean([r[key] for r in per_seed[REFERENCE][s]])
                 for s in args.noise_seeds])
        row["criteria"] = {} if label == REFERENCE else verdicts(row, ref, truth_row)

    print(f"\n{len(args.regions)} held-out regions (phantom seeds {args.regions}), {args.size} x {args.size} px x 2 "
          f"sections, noise seeds {args.noise_seeds}; mean ± spread (sd over noise seeds) of the means over regions; "
          f"b64/b256 worst 2-D phase pooled over regions; criteria against {REFERENCE} (DDIM-15, official grid)")
    print("truth: " + ", ".join(f"{k} {v:.3f}" for k, v in truth_row.items()))
    columns = [("calls", None), ("b64", "b64"), ("b256", "b256"), ("F1", "nuclei_f1"),
               ("areaW um2", "nuclei_area_wasserstein_um2"), ("DAPI HF/truth", "dapi_hf_ratio"),
               ("PolyT HF/truth", "polyt_hf_ratio"), ("DAPI HF/ref", "dapi_hf_vs_reference"),
               ("PolyT HF/ref", "polyt_hf_vs_reference"), ("PSNR", "psnr"), ("SSIM", "ssim")]
    print("| candidate | " + " | ".join(c for c, _ in columns) + " | criteria vs DDIM-15 |")
    print("|---" * (len(columns) + 2) + "|")
    for label, row in rows.items():
        cells = []
        for _, key in columns:
            if key is None:
                cells.append(str(row["calls_per_tile"]))
            elif key in row:
                digits = 2 if key in ("psnr", "nuclei_area_wasserstein_um2") else 3
                cells.append(f"{row[key]['mean']:.{digits}f} ± {row[key]['spread']:.{digits}f}")
            else:
                cells.append("–")
        failed = [k for k, ok in row["criteria"].items() if not ok]
        verdict = "reference" if label == REFERENCE else ("all pass" if not failed else "fails " + ", ".join(failed))
        print(f"| {label} | " + " | ".join(cells) + f" | {verdict} |")
    if args.json:
        result = {"regions": args.regions, "noise_seeds": args.noise_seeds, "size": args.size,
                  "reference": REFERENCE, "truth": truth_row, "rows": rows,
                  "per_seed": {label: {str(s): v for s, v in seeds.items()} for label, seeds in per_seed.items()}}
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
