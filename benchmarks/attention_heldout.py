"""Gene-pair attention of the embedded model against the random-weight null, over held-out phantom regions.

For each held-out phantom seed (512 x 512 px, 2 sections, 0.5 um/px, the store `teramind phantom --formats store`
writes, read back as `teramind attention` reads it) runs `pair_significance` of the embedded pipeline for the
given pairs and prints, per region and pair: expressed patches, z, p, BH-adjusted p, the learned call and the
effect (observed specificity minus the null mean) with its 95 % interval from the null's quantiles. Then, per
pair over regions: the mean effect +- SD, a 95 % t-interval over regions and how many regions call it learned.

Seeds 0 and 1 trained and validated the embedded model and are refused. Each region's result is cached as JSON
in ``--cache`` (written atomically), so an interrupted run resumes where it stopped.

    OMP_NUM_THREADS=1 python benchmarks/attention_heldout.py --regions 2 3 4 5 6 7 --random-models 99 \\
        --cache /tmp/attention_cache --json /tmp/attention_heldout.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAINING_SEEDS = (0, 1)  # training and validation phantoms of the embedded model
DEFAULT_PAIRS = ("Slc17a6,Slc17a7", "Nr4a2,Th", "Serpine2,Th")


def _t_quantile(q: float, dof: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(q, dof))
    except ImportError:  # scipy is optional: the quantile of many seeded t draws (3 decimals)
        draws = np.random.default_rng(0).standard_t(dof, size=2_000_000)
        return float(np.quantile(draws, q))


def _region_settings(args: argparse.Namespace, seed: int) -> dict:
    return {
        "seed": seed, "size_px": args.size, "sections": args.sections, "um_per_px": args.um_per_px,
        "pairs": [list(p) for p in args.pairs], "random_models": args.random_models,
        "permutations": args.permutations, "null_seed": args.null_seed, "alpha": args.alpha,
    }


def run_region(pipe, args: argparse.Namespace, seed: int) -> dict:
    """One held-out region: phantom -> training store -> `read_gene_region` -> `pair_significance`."""
    import torch

    from teramind_hf.data.phantom import make_phantom
    from teramind_hf.data.phantom_io import write_phantom
    from teramind_hf.eval.attention_null import pair_significance
    from teramind_hf.eval.maps import read_gene_region

    phantom = make_phantom(args.size, args.size, num_slices=args.sections, seed=seed, um_per_px=args.um_per_px)
    with tempfile.TemporaryDirectory() as tmp:
        write_phantom(phantom, Path(tmp) / "ph", ("store",))
        genes, names, _ = read_gene_region(Path(tmp) / "ph" / "store.zarr")
    wall, cpu = time.perf_counter(), time.process_time()
    results = pair_significance(
        pipe, genes, names, args.pairs, random_models=args.random_models, permutations=args.permutations,
        alpha=args.alpha, seed=args.null_seed,
    )
    return {
        "settings": _region_settings(args, seed), "torch_threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
        "pairs": [r.to_dict() for r in results],
    }


def _write_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def pooled(regions: dict[int, dict], alpha: float) -> list[dict]:
    """Per pair over regions: mean effect +- SD, its 95 % t-interval and the number of regions calling it learned."""
    rows = []
    first = next(iter(regions.values()))
    for i, entry in enumerate(first["pairs"]):
        per = [r["pairs"][i] for r in regions.values()]
        effects = np.array([p["random_weights"]["effect"] for p in per], dtype=np.float64)
        effects = effects[np.isfinite(effects)]
        n = int(effects.size)
        mean = float(effects.mean()) if n else float("nan")
        sd = float(effects.std(ddof=1)) if n > 1 else float("nan")
        half = _t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
        rows.append({
            "pair": entry["pair"], "regions": n, "effect_mean": mean, "effect_sd": sd,
            "effect_t_interval": [mean - half, mean + half],
            "z_mean": float(np.nanmean([p["random_weights"]["z"] for p in per])),
            "learned_regions": int(sum(p["learned"] for p in per)),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7], help="held-out phantom seeds")
    parser.add_argument("--pair", action="append", default=None,
                        help="A,B (repeatable; default: %s)" % " ".join(DEFAULT_PAIRS))
    parser.add_argument("--random-models", type=int, default=99)
    parser.add_argument("--permutations", type=int, default=0, help="gene-label permutations (p is 1 by construction)")
    parser.add_argument("--null-seed", type=int, default=0, help="first random-model seed")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--size", type=int, default=512, help="region size in px (square)")
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--um-per-px", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cache", type=Path, default=None, help="folder of per-region JSON results (resume)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    refused = sorted(set(args.regions) & set(TRAINING_SEEDS))
    if refused:
        parser.error(f"--regions {refused}: seeds {TRAINING_SEEDS} trained/validated the embedded model, not held out")
    args.pairs = [tuple(p.strip() for p in text.split(",")) for text in (args.pair or DEFAULT_PAIRS)]
    if any(len(p) != 2 for p in args.pairs):
        parser.error("--pair: expected A,B")
    from teramind_hf.eval.attention_null import check_significance_arguments

    try:
        check_significance_arguments(threshold=5.0, random_models=args.random_models, permutations=args.permutations,
                                     alpha=args.alpha)
    except ValueError as error:
        parser.error(str(error))

    import torch

    from teramind_hf import TeraMindPipeline

    torch.set_num_threads(args.threads)
    pipe = TeraMindPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    regions: dict[int, dict] = {}
    print("region | pair | expressed patches | z | p | BH p | learned | effect [95 % interval] | wall s | cpu s")
    for seed in args.regions:
        cached = args.cache / f"region_{seed}.json" if args.cache else None
        result = None
        if cached is not None and cached.exists():
            result = json.loads(cached.read_text())
            if result.get("settings") != _region_settings(args, seed):
                print(f"# {cached}: other settings, recomputing", file=sys.stderr)
                result = None
        if result is None:
            result = run_region(pipe, args, seed)
            if cached is not None:
                _write_atomic(cached, result)
        regions[seed] = result
        for p in result["pairs"]:
            null = p["random_weights"]
            low, high = null["effect_interval"]
            print(f"{seed} | {'-'.join(p['pair'])} | {p['patches']} | {null['z']:.2f} | {null['p']:.3f} | "
                  f"{p['p_adjusted']:.3f} | {'yes' if p['learned'] else 'no'} | "
                  f"{null['effect']:+.3f} [{low:+.3f}, {high:+.3f}] | {result['wall_s']:.0f} | {result['cpu_s']:.0f}",
                  flush=True)
    summary = pooled(regions, args.alpha)
    print("\npair | regions | effect mean +- SD | 95 % t-interval over regions | mean z | learned in")
    for row in summary:
        lo, hi = row["effect_t_interval"]
        print(f"{'-'.join(row['pair'])} | {row['regions']} | {row['effect_mean']:+.3f} +- {row['effect_sd']:.3f} | "
              f"[{lo:+.3f}, {hi:+.3f}] | {row['z_mean']:.2f} | {row['learned_regions']}/{len(regions)}")
    if args.json:
        _write_atomic(args.json, {"regions": {str(k): v for k, v in regions.items()}, "pooled": summary})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
