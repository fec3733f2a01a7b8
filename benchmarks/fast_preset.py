"""Fast preset: which solver and how few steps match DDIM-15's *realism* on held-out phantom regions.

    python benchmarks/fast_preset.py --threads 1                         # seeds 2-4, seam methods official + blend1
    python benchmarks/fast_preset.py --solvers dpmpp unipc --steps 3 4 5 --seams blend1

For every solver x timestep spacing x step count x seam method, prints the metrics averaged over the regions
(PSNR, SSIM, nuclei F1, nucleus-area Wasserstein distance, high-frequency energy ratio = spectral power above
1/8 cycle/px generated over truth, worst-phase border scores) and the model calls per 256-px tile, against
DDIM-15 with the same seam method. A candidate passes when, against that reference: F1 is at most 5 % lower,
area distance at most 5 % higher, HF ratio within 10 %, PSNR and SSIM not lower, and it makes at least 3x
fewer model calls. PSNR/SSIM alone cannot choose: they rise as steps fall (smoother samples).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _metrics as M  # noqa: E402
from teramind_hf.eval.grid import step_profile  # noqa: E402
import _whole_canvas_sampler as S  # noqa: E402

SOLVERS = {
    "ddim": ("DDIMScheduler", {}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp3": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2}),
    "unipc3": ("UniPCMultistepScheduler", {"solver_order": 3}),
}
# seam method -> (blended last steps, shift, weights): offsets {0,16}^2 with tents, or "distance": (0,0) + (16,16)
SEAMS = {"official": (0, "none", "tent"), "blend1": (1, "none", "tent"), "blend2": (2, "none", "tent"), "diag1": (1, "none", "distance")}


def run_key(solver: str, spacing: str, steps: int, seam: str) -> str:
    return f"{solver}_{spacing}_n{steps}_{seam}"


def sample_all(pipe, args, candidates: list[tuple[str, str, int, str]]) -> list[dict[str, np.ndarray]]:
    """Samples of every candidate on every region (candidate by candidate, so early ones finish first);
    with ``--cached_only`` only candidates already sampled on every region."""
    regions = {seed: S.held_out_region(pipe, seed, args.size) for seed in args.seeds}
    caches = {seed: Path(args.cache) / f"fast_r{seed}_s{args.size}_noise{args.noise_seed}" for seed in args.seeds}
    samplers = {}
    out = {seed: {"truth": regions[seed].images} for seed in args.seeds}
    for solver, spacing, steps, seam in candidates:
        key = run_key(solver, spacing, steps, seam)
        paths = {seed: caches[seed] / f"{key}.npy" for seed in args.seeds}
        if args.cached_only and not all(p.is_file() for p in paths.values()):
            continue
        for seed, region in regions.items():
            if not paths[seed].is_file():
                sid = (seed, solver, spacing, steps)
                if sid not in samplers:  # seam variants of one run share the unblended steps
                    cls, inner = SOLVERS[solver]
                    sched = S.make_scheduler(pipe, cls, spacing, **inner)
                    noise = S.initial_noise(pipe, region, args.noise_seed)
                    samplers[sid] = S.RegionSampler(pipe.unet, sched, region.genes, noise, steps)
                caches[seed].mkdir(parents=True, exist_ok=True)
                plan = S.grid_plan(steps, *SEAMS[seam])
                S.save_atomic(paths[seed], S.to_images(samplers[sid].sample(plan), region.images.shape[0]))
                print(f"  region {seed}: sampled {key}", flush=True)
            out[seed][key] = np.load(paths[seed])
    return list(out.values())


def metrics(samples: list[dict], key: str) -> dict[str, float]:
    rows = []
    for s in samples:
        row = {**M.psnr_ssim(s[key], s["truth"]), **M.nuclei_metrics(s[key], s["truth"])}
        row["hf"] = M.high_frequency_ratio(s[key], s["truth"])
        rows.append(row)
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    for period in (64, 256):
        if samples[0][key].shape[-1] < 2 * period:  # no inner line at this period in a region this small
            out[f"b{period}"] = float("nan")
            continue
        pooled = sum((step_profile(s[key]) for s in samples[1:]), step_profile(samples[0][key]))
        out[f"b{period}"] = pooled.worst_phase_2d(period)[0]
    return out


def passes(m: dict, ref: dict, calls: int, ref_calls: int) -> list[str]:
    """The criteria a candidate fails against its reference (empty: it passes)."""
    failed = []
    if m["f1"] < 0.95 * ref["f1"]:
        failed.append("F1")
    if m["area_w1"] > 1.05 * ref["area_w1"]:
        failed.append("area")
    if abs(m["hf"] / ref["hf"] - 1) > 0.10:
        failed.append("HF")
    if m["psnr"] < ref["psnr"]:
        failed.append("PSNR")
    if m["ssim"] < ref["ssim"]:
        failed.append("SSIM")
    if 3 * calls > ref_calls:
        failed.append("calls")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4], help="held-out phantom seeds (>= 2)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--solvers", nargs="+", default=["dpmpp", "unipc"], choices=list(SOLVERS))
    parser.add_argument("--spacings", nargs="+", default=["official", "inner"], choices=["official", "inner"])
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--seams", nargs="+", default=["official", "blend1"], choices=list(SEAMS))
    parser.add_argument("--reference_steps", type=int, default=15, help="DDIM steps of the reference")
    parser.add_argument("--noise_seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/teramind_seams_cache")
    parser.add_argument("--cached_only", action="store_true", help="report only candidates already sampled")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    pipe = S.load_pipeline(args.threads)
    refs = [("ddim", "official", args.reference_steps, seam) for seam in args.seams]
    cands = [(so, sp, n, seam) for seam in args.seams for so in args.solvers for sp in args.spacings for n in args.steps]
    samples = sample_all(pipe, args, refs + cands)
    print(f"{len(args.seeds)} held-out regions (seeds {args.seeds}), {args.size} px x 2 sections; metrics are means over regions, "
          f"b64/b256 worst-phase border scores pooled; reference DDIM-{args.reference_steps} with the same seam method")
    print(f"{'candidate':34s} {'psnr':>6s} {'ssim':>6s} {'F1':>6s} {'areaW1':>7s} {'HF':>5s} {'b64':>5s} {'b256':>5s} {'calls':>5s}  dF1%  dArea%  dHF%  verdict")
    for seam in args.seams:
        ref_run = ("ddim", "official", args.reference_steps, seam)
        if run_key(*ref_run) not in samples[0]:
            continue
        ref = metrics(samples, run_key(*ref_run))
        ref_calls = S.calls_per_tile(S.grid_plan(args.reference_steps, *SEAMS[seam]))
        for run in [ref_run] + [c for c in cands if c[3] == seam and run_key(*c) in samples[0]]:
            m = metrics(samples, run_key(*run))
            calls = S.calls_per_tile(S.grid_plan(run[2], *SEAMS[seam]))
            failed = [] if run == ref_run else passes(m, ref, calls, ref_calls)
            verdict = "reference" if run == ref_run else ("PASS" if not failed else "fails " + ",".join(failed))
            print(
                f"{run_key(*run):34s} {m['psnr']:6.2f} {m['ssim']:6.3f} {m['f1']:6.3f} {m['area_w1']:7.1f} {m['hf']:5.2f} "
                f"{m['b64']:5.2f} {m['b256']:5.2f} {calls:5d} {100 * (m['f1'] / ref['f1'] - 1):+5.1f} "
                f"{100 * (m['area_w1'] / ref['area_w1'] - 1):+6.1f} {100 * (m['hf'] / ref['hf'] - 1):+5.1f}  {verdict}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
