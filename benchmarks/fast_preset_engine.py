"""The fast preset against the official sampler, through the sampling engine (the pipeline), on held-out regions.

For each held-out phantom region (seeds >= 2: the embedded model trained on seed 0 and was validated on seed 1)
it samples with ``preset="official"`` (DDIM, 15 steps) and each candidate, scores every sample against the
phantom's truth with :func:`teramind_hf.eval.metrics.realism_metrics`, and prints the means over regions with
the issue-12 criteria against the official sampler: nuclei F1 at most 5 % lower, nucleus-area Wasserstein
distance at most 5 % higher, high-frequency energy ratio (power above 1/8 cycle/px, generated over truth) within
10 % for each stain, PSNR and SSIM (mean of the stains) not lower, at least 3x fewer model calls per tile.

    python benchmarks/fast_preset_engine.py --seeds 2 3 4 --size 256 --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline
from teramind_hf.data.phantom import make_phantom
from teramind_hf.eval.metrics import realism_metrics
from teramind_hf.sampling.presets import PRESETS, Preset

KEYS = ("nuclei_f1", "nuclei_area_wasserstein_um2", "dapi_hf_ratio", "polyt_hf_ratio", "psnr", "ssim", "border_64")


def summary(metrics: dict) -> dict[str, float]:
    m = metrics["mean"]
    return {
        **{k: m[k] for k in KEYS if k in m},
        "psnr": (m["dapi_psnr"] + m["polyt_psnr"]) / 2,
        "ssim": (m["dapi_ssim"] + m["polyt_ssim"]) / 2,
    }


def verdict(candidate: dict, reference: dict, calls: int, reference_calls: int) -> list[str]:
    fails = []
    if candidate["nuclei_f1"] < 0.95 * reference["nuclei_f1"]:
        fails.append("F1")
    if candidate["nuclei_area_wasserstein_um2"] > 1.05 * reference["nuclei_area_wasserstein_um2"]:
        fails.append("area")
    for stain in ("dapi", "polyt"):
        if abs(candidate[f"{stain}_hf_ratio"] / reference[f"{stain}_hf_ratio"] - 1) > 0.10:
            fails.append(f"{stain} HF")
    if candidate["psnr"] < reference["psnr"]:
        fails.append("PSNR")
    if candidate["ssim"] < reference["ssim"]:
        fails.append("SSIM")
    if 3 * calls > reference_calls:
        fails.append("calls")
    return fails


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--candidates", nargs="+", default=["fast", "unipc:3", "unipc:5", "dpm:4", "dpm:5"],
                        help="preset names or SCHEDULER:STEPS (official grid)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = TeraMindPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)

    def preset_of(name: str) -> Preset:
        if name in PRESETS:
            return PRESETS[name]
        solver, steps = name.split(":")
        return Preset(solver, int(steps), "official")

    names = ["official", *args.candidates]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for seed in args.seeds:
        tissue = make_phantom(args.size, args.size, num_slices=2, seed=seed, um_per_px=DEFAULT_MODEL_UM_PER_PX)
        truth = tissue.images.transpose(1, 0, 2, 3)  # (Z, 2, H, W) uint8
        for name in names:
            out = pipe(tissue.genes, gene_names=list(tissue.panel), preset=preset_of(name),
                       generator=args.noise_seed, output_type="uint8")  # fmt: skip
            results[name].append(summary(realism_metrics(out.images, truth, DEFAULT_MODEL_UM_PER_PX)))
            print(f"  region seed {seed}: sampled {name}", flush=True)

    mean = {n: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for n, rs in results.items()}
    calls = {n: preset_of(n).num_inference_steps for n in names}  # official grid: one model call per tile-step
    print(f"{len(args.seeds)} held-out regions (seeds {args.seeds}), {args.size} px x 2 sections, noise seed "
          f"{args.noise_seed}; means over regions; reference: the official preset (DDIM 15)")  # fmt: skip
    header = ("candidate", "calls", "F1", "areaW", "dHF", "pHF", "PSNR", "SSIM", "b64", "verdict")
    print("{:<10} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {}".format(*header))
    for n in names:
        m = mean[n]
        fails = [] if n == "official" else verdict(m, mean["official"], calls[n], calls["official"])
        text = "reference" if n == "official" else ("PASS" if not fails else "fails " + ",".join(fails))
        print(f"{n:<10} {calls[n]:>5} {m['nuclei_f1']:6.3f} {m['nuclei_area_wasserstein_um2']:6.2f} "
              f"{m['dapi_hf_ratio']:6.3f} {m['polyt_hf_ratio']:6.3f} {m['psnr']:6.2f} {m['ssim']:6.3f} "
              f"{m.get('border_64', float('nan')):6.2f}  {text}")  # fmt: skip


if __name__ == "__main__":
    main()
