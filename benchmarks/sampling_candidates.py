"""Sampling candidates (solver, steps, grid schedule) through the engine, on held-out phantom regions (issue 12).

For each held-out phantom region (seeds >= 2: the embedded model trained on seed 0 and was validated on seed 1)
every candidate is sampled with ``TeraMindPipeline`` (the one tile engine) and scored against the phantom's truth:

* patch grid: the worst-2-D-phase border score at 64 px (the model's patches) and 256 px (the default tiles), both
  stains, every section, pooled over the regions, next to the truth's own score computed the same way
  (:meth:`teramind_hf.eval.grid.StepProfile.worst_phase_2d`). ``grid`` passes when both are at most 0.15 above
  the truth's and PSNR, SSIM and nuclei F1 are no lower than the ``--baseline`` (today's samples);
* realism against ``--reference`` (the fast-preset criteria): nuclei F1 at most 5 % lower, nucleus-area
  Wasserstein distance at most 5 % higher, high-frequency energy ratio of each stain within 10 %, PSNR and SSIM
  not lower (one noise seed: `benchmarks/heldout_presets.py` judges against the seed-to-seed spread);
* calls: model calls per 256-px tile on the grid the candidate actually runs, counted through the real engine
  with a call-counting stand-in of the UNet (`heldout_presets.calls_per_tile`, as
  tests/test_preset_call_counts.py does), and the ratio to the reference's. No preset today makes fewer than
  half the reference's calls on the embedded model's "diagonal" grid (docs/seams-research.md).

A candidate is a preset name (``official``, ``fast``) or ``LABEL=SCHEDULER:STEPS:GRID[:key=value,...]`` with
GRID a named grid schedule or ``blendK`` / ``blendall`` (offsets {0,16}^2 at the last K / every step) or
``diagK`` / ``diagall`` (offsets (0,0) and (16,16)); key=value pairs go to the scheduler. Samples are cached.

    python benchmarks/sampling_candidates.py --seeds 2 3 4 --size 512 --candidates official blend seamless
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline
from teramind_hf.data.phantom import make_phantom
from teramind_hf.eval.grid import step_profile
from teramind_hf.eval.metrics import realism_metrics
from teramind_hf.sampling.presets import PRESETS, Preset
from teramind_hf.sampling.schedule import GRID_SCHEDULES, GridSchedule

from heldout_presets import cached_sample, calls_per_tile, preset_pipeline, summary  # noqa: E402  (this script's folder is on sys.path)

FOUR = ((0, 0), (0, 16), (16, 0), (16, 16))
DIAGONAL = ((0, 0), (16, 16))
TRUTH_MARGIN = 0.15


def grid_of(text: str, steps: int) -> GridSchedule:
    if text in GRID_SCHEDULES:
        return GRID_SCHEDULES[text]
    if text == "diagalt":  # the diagonal pair and the anti-diagonal pair on alternate steps
        return GridSchedule(shifts=((0, 0), (0, 16)), blend_offsets=DIAGONAL, blend_steps="all")
    text, _, power = text.partition("^")  # e.g. diagall^2: tent weights squared
    for prefix, offsets in (("blend", FOUR), ("diag", DIAGONAL)):
        if text.startswith(prefix):
            tail = text[len(prefix):]
            return GridSchedule(blend_offsets=offsets, blend_steps=steps if tail == "all" else int(tail),
                                blend_power=float(power or 1))
    raise ValueError(f"unknown grid {text!r}")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def candidate(spec: str) -> tuple[str, Preset]:
    if spec in PRESETS:
        return spec, PRESETS[spec]
    label, _, body = spec.partition("=")
    if not body:
        label, body = spec, spec
    parts = body.split(":")
    scheduler, steps = parts[0], int(parts[1])
    grid = grid_of(parts[2] if len(parts) > 2 else "official", steps)
    options = dict(kv.split("=", 1) for kv in parts[3].split(",")) if len(parts) > 3 and parts[3] else {}
    return label, Preset(scheduler, steps, grid, {k: parse_value(v) for k, v in options.items()})


def sample(pipe, tissue, preset: Preset, noise_seed: int, cache: Path) -> np.ndarray:
    return cached_sample(pipe, tissue, preset, noise_seed, cache,
                         (preset, noise_seed, pipe.config.fill_value, pipe.config.grid))


def realism_fails(c: dict, ref: dict) -> list[str]:
    fails = []
    if c["nuclei_f1"] < 0.95 * ref["nuclei_f1"]:
        fails.append("F1")
    if c["nuclei_area_wasserstein_um2"] > 1.05 * ref["nuclei_area_wasserstein_um2"]:
        fails.append("area")
    for stain in ("dapi", "polyt"):
        if abs(c[f"{stain}_hf_ratio"] / ref[f"{stain}_hf_ratio"] - 1) > 0.10:
            fails.append(f"{stain} HF")
    if c["psnr"] < ref["psnr"]:
        fails.append("PSNR")
    if c["ssim"] < ref["ssim"]:
        fails.append("SSIM")
    return fails


def grid_fails(c: dict, baseline: dict, truth: dict) -> list[str]:
    fails = [f"b{p}" for p in (64, 256) if f"b{p}" in c and not c[f"b{p}"] <= truth[f"b{p}"] + TRUTH_MARGIN]
    fails += [k for k in ("psnr", "ssim", "nuclei_f1") if c[k] < baseline[k]]
    return fails


def print_preset_calls(pipe) -> None:
    """Every preset's model calls per 256-px tile on the embedded pipeline: on the grid it runs there, and the same
    solver and steps forced onto the official grid (``--grid official``)."""
    from dataclasses import replace

    print("preset       calls/tile (grid it runs)  calls/tile (--grid official)")
    for name in [None, *PRESETS]:
        preset = PRESETS.get(name)
        own = preset_pipeline(name, pipe)  # a student's preset runs on its own weights
        runs = calls_per_tile(own, name)
        official = calls_per_tile(own, replace(preset, grid="official")) if preset else float("nan")
        print(f"{name or 'default':<12} {runs:>25}  {official:>28}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--candidates", nargs="+", default=["official", "fast"])
    parser.add_argument("--baseline", default="official", help="today's samples, for the grid verdict")
    parser.add_argument("--reference", default=None, help="the DDIM-15 reference of the realism verdict (default: --baseline)")
    parser.add_argument("--fill-value", type=float, default=None, help="x_t outside the region (pipeline config; official -1)")
    parser.add_argument("--cache", default="/tmp/teramind_candidates_cache")
    parser.add_argument("--png", default=None, help="write truth | candidates (region of the first seed, section 0)")
    parser.add_argument("--calls", action="store_true",
                        help="only print every preset's model calls per tile, on the grid it runs and on the official grid")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = TeraMindPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    if args.calls:
        print_preset_calls(pipe)
        return
    if args.fill_value is not None:
        pipe.register_to_config(fill_value=args.fill_value)
    baseline = candidate(args.baseline)[0]
    reference = candidate(args.reference)[0] if args.reference else baseline
    specs = dict(candidate(s) for s in dict.fromkeys([args.baseline, args.reference or args.baseline, *args.candidates]))
    names = list(specs)

    results = {n: [] for n in names}
    profiles = {n: None for n in ["truth", *names]}
    pictures = {}
    for seed in args.seeds:
        cache = Path(args.cache) / f"r{seed}_s{args.size}"
        cache.mkdir(parents=True, exist_ok=True)
        tissue = make_phantom(args.size, args.size, num_slices=2, seed=seed, um_per_px=DEFAULT_MODEL_UM_PER_PX)
        truth = tissue.images.transpose(1, 0, 2, 3)  # (Z, 2, H, W) uint8
        profiles["truth"] = step_profile(truth) + profiles["truth"] if profiles["truth"] else step_profile(truth)
        pictures.setdefault("truth", truth[0])
        for name in names:
            images = sample(pipe, tissue, specs[name], args.noise_seed, cache)
            pictures.setdefault(name, images[0])
            results[name].append(summary(realism_metrics(images, truth, DEFAULT_MODEL_UM_PER_PX)))
            profiles[name] = step_profile(images) + profiles[name] if profiles[name] else step_profile(images)
            print(f"  region seed {seed}: {name}", flush=True)

    rows = {"truth": {}}
    for name in ["truth", *names]:
        row = rows.setdefault(name, {})
        if name != "truth":
            row.update({k: float(np.mean([r[k] for r in results[name]])) for k in results[name][0]})
        for period in (64, 256):
            if args.size >= 2 * period:  # a region needs an inner line at this period
                row[f"b{period}"], row[f"phase{period}"] = profiles[name].worst_phase_2d(period)
                row[f"null{period}"] = float(np.median(profiles[name].shuffled_null(period)))
    calls = {n: calls_per_tile(pipe, specs[n]) for n in names}
    print(f"{len(args.seeds)} held-out regions (seeds {args.seeds}), {args.size} px x 2 sections, noise seed "
          f"{args.noise_seed}; means over regions; b64/b256 worst 2-D phase pooled over regions; grid verdict vs "
          f"{baseline} and truth + {TRUTH_MARGIN}; realism verdict vs {reference}")
    print("null64/null256: median worst-phase score of the same image with its line positions shuffled (no period)")
    print("calls: model calls per 256-px tile on the grid each candidate runs (counted through the engine)")
    for n in names:
        print(f"  {n}: {calls[n]} calls per tile, {calls[n] / calls[reference]:.2f}x the reference's ({reference})")
    print("{:<14} {:>5} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:<22} {}".format(
        "candidate", "calls", "b64", "null64", "b256", "null256", "F1", "areaW", "dHF", "pHF", "PSNR", "SSIM", "grid", "realism"))
    t = rows["truth"]
    print(f"{'truth':<14} {'':>5} {t.get('b64', np.nan):6.3f} {t.get('null64', np.nan):6.3f} {t.get('b256', np.nan):6.3f} "
          f"{t.get('null256', np.nan):7.3f}")
    for n in names:
        r = rows[n]
        g = grid_fails(r, rows[baseline], t)
        f = [] if n == reference else realism_fails(r, rows[reference])
        print(f"{n:<14} {calls[n]:>5} {r.get('b64', np.nan):6.3f} {r.get('null64', np.nan):6.3f} {r.get('b256', np.nan):6.3f} "
              f"{r.get('null256', np.nan):7.3f} {r['nuclei_f1']:6.3f} "
              f"{r['nuclei_area_wasserstein_um2']:6.2f} {r['dapi_hf_ratio']:6.3f} {r['polyt_hf_ratio']:6.3f} "
              f"{r['psnr']:6.2f} {r['ssim']:6.3f}  {'PASS' if not g else 'fails ' + ','.join(g):<22} "
              f"{'reference' if n == reference else ('PASS' if not f else 'fails ' + ','.join(f))}")
    if args.png:
        write_png(pictures, ["truth", *names], args.png)


def write_png(pictures: dict[str, np.ndarray], names: list[str], path: str, crop: int = 192) -> None:
    """Rows: DAPI of the whole region, a zoomed crop around a 256-px tile corner, the crop with its dark
    background stretched 4x (where a faint grid shows first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(names), figsize=(3.2 * len(names), 9.6), squeeze=False)
    for j, name in enumerate(names):
        dapi = pictures[name][0].astype(np.float32)
        c0 = max(0, min(dapi.shape[-1] // 2 - crop // 2, dapi.shape[-1] - crop))
        zoom = dapi[c0 : c0 + crop, c0 : c0 + crop]
        for i, (image, vmax) in enumerate(((dapi, 255), (zoom, 255), (zoom, 64))):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(name)
    axes[1, 0].set_ylabel(f"crop {crop} px at the centre")
    axes[2, 0].set_ylabel("crop, background x4")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
