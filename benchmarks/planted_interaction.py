"""Planted gene interaction: fine-tune the embedded model on it, then ask whether attention singles the pair out.

    python benchmarks/planted_interaction.py --work /tmp/pi --steps 240          # fine-tune (resumable) + evaluate
    python benchmarks/planted_interaction.py --work /tmp/pi --evaluate_only      # evaluate an existing fine-tune

The tissue is the phantom with ``planted_interaction=True`` (training seed 5, 768 px x 4 sections; held-out seed 6):
Penk and Crym are each expressed by ~30 % of cells, independently, and only cells expressing both have larger,
brighter nuclei. Their co-expression (Pearson over gene bins) ranks well below the same-type marker pairs, so a
co-expression statistic does not single them out. The embedded model does not know either gene;
``--extend_panel`` adds both with fresh input weights and fine-tunes everything (x0 prediction, as the model).

Evaluation on the held-out region:
1. **did the model learn the interaction?** DAPI nucleus area and brightness of generated nuclei at cells
   expressing both genes vs one gene vs neither (per-nucleus, nuclei segmented in the generated DAPI);
2. **does attention single the pair out?** `teramind_hf.eval.attention_null.pair_significance` for the
   interaction pair and the planted co-expressed pairs, against random-weight models and gene-label permutations,
   plus the pair's rank among all pairs.
The last printed line is JSON with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN = dict(height=768, width=768, num_slices=4, seed=5)
HELD_OUT = dict(height=256, width=512, num_slices=2, seed=6)


def interaction_phantom(spec: dict, um_per_px: float):
    from teramind_hf.data import make_phantom

    return make_phantom(spec["height"], spec["width"], num_slices=spec["num_slices"], seed=spec["seed"],
                        um_per_px=um_per_px, planted_interaction=True)


def train_store(path: Path, um_per_px: float) -> Path:
    from teramind_hf.data.datasets import write_training_store

    if (path / "zarr.json").is_file():
        return path
    return write_training_store(interaction_phantom(TRAIN, um_per_px).to_volume(), path)


def fine_tune(work: Path, model: str, steps: int, threads: int, um_per_px: float) -> Path:
    from teramind_hf.training.train import parse_args, train

    data = train_store(work / f"interaction_train_{um_per_px:g}um.zarr", um_per_px)
    out = work / "finetuned"
    train(parse_args([
        "--data", str(data), "--output_dir", str(out), "--pretrained", model, "--extend_panel",
        "--max_train_steps", str(steps), "--train_batch_size", "4", "--learning_rate", "4e-4",
        "--lr_scheduler", "cosine", "--lr_warmup_steps", "20", "--use_ema", "--ema_decay", "0.99",
        "--checkpointing_steps", "50", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest",
        "--num_threads", str(threads), "--no_progress", "--no_validation", "--seed", "0", "--save_dtype", "fp16",
    ]))
    return out


def pipeline_from_checkpoint(checkpoint: Path, base_model: str, out: Path) -> Path:
    """A pipeline folder from a training checkpoint's raw (not EMA) weights, to evaluate a run before it ends."""
    import json

    from safetensors.torch import load_file

    from teramind_hf import TeraMindPipeline
    from teramind_hf.models.unet_genemorph_3d import GeneMorphUNet3DModel

    if (out / "model_index.json").is_file():
        return out
    config = json.loads((checkpoint / "training_config.json").read_text())["unet"]
    base = TeraMindPipeline.from_pretrained(base_model)
    unet = GeneMorphUNet3DModel.from_config({**base.unet.config, **config})
    unet.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    TeraMindPipeline(unet=unet, scheduler=base.scheduler).save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from teramind_hf import DEFAULT_MODEL_UM_PER_PX, default_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="pipeline folder to fine-tune (default: the embedded model)")
    parser.add_argument("--evaluate_only", action="store_true")
    parser.add_argument("--checkpoint", default=None, help="evaluate this training checkpoint (raw weights) instead")
    parser.add_argument("--null_models", type=int, default=39, help="random-weight models in the null")
    parser.add_argument("--sample_steps", type=int, default=4, help="denoising steps of the evaluation samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    um = DEFAULT_MODEL_UM_PER_PX
    model = args.model or str(default_model_path())
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        out = pipeline_from_checkpoint(checkpoint, model, work / f"pipeline_{checkpoint.name}")
    elif args.evaluate_only:
        out = work / "finetuned"
    else:
        out = fine_tune(work, model, args.steps, args.threads, um)
    result = evaluate(out, model, um, args.null_models, args.sample_steps)
    print(json.dumps(result))
    return 0


def coexpression_rank(genes, names: list[str], pair: tuple[str, str]) -> tuple[int, int]:
    """Rank (1 = most) of a pair's Pearson correlation over gene bins among all pairs, and the pair count."""
    import numpy as np

    corr = np.corrcoef(genes.reshape(len(names), -1))
    a, b = names.index(pair[0]), names.index(pair[1])
    upper = corr[np.triu_indices(len(names), k=1)]
    return int((upper > corr[a, b]).sum()) + 1, int(upper.size)


def nuclei_by_group(images, tissue, um_per_px: float) -> dict:
    """Median area (um^2) and DAPI brightness of the nucleus found at each true cell, per interaction group.

    ``images`` ``(Z, 2, H, W)`` in [-1, 1]; a cell's nucleus is the segmented nucleus whose centroid lies within
    5 um of the true centre (one-to-one matching); cells without one count as missing.
    """
    import numpy as np

    from teramind_hf.data.phantom import INTERACTION_PAIR
    from teramind_hf.eval.knockout import MATCH_DISTANCE_UM, _nuclei
    from teramind_hf.eval.nuclei import match_centroids

    cells = tissue.cells
    expresses = cells[[f"expresses_{g}" for g in INTERACTION_PAIR]].sum(axis=1).to_numpy()
    groups = {"both": expresses == 2, "one": expresses == 1, "neither": expresses == 0}
    area = np.full(len(cells), np.nan)
    bright = np.full(len(cells), np.nan)
    for z in range(images.shape[0]):
        table = _nuclei((images[z, 0] + 1) / 2, um_per_px)
        rows = np.flatnonzero(cells["z"].to_numpy() == z)
        centres = cells[["y", "x"]].to_numpy()[rows]
        ia, ib = match_centroids(centres, np.stack([table["y"], table["x"]], 1), MATCH_DISTANCE_UM / um_per_px)
        area[rows[ia]] = table["area_um2"][ib]
        bright[rows[ia]] = table["brightness"][ib]
    out = {}
    for name, sel in groups.items():
        found = sel & np.isfinite(area)
        out[name] = {"cells": int(sel.sum()), "found": int(found.sum()),
                     "median_area_um2": float(np.median(area[found])) if found.any() else float("nan"),
                     "median_brightness": float(np.median(bright[found])) if found.any() else float("nan")}
    return out


def evaluate(finetuned: Path, pretrained: str, um_per_px: float, null_models: int, steps: int = 4) -> dict:
    import numpy as np

    from teramind_hf import TeraMindPipeline
    from teramind_hf.data.phantom import INTERACTION_PAIR, PLANTED_PAIRS
    from teramind_hf.eval.attention_null import pair_significance

    tissue = interaction_phantom(HELD_OUT, um_per_px)
    names = list(tissue.panel)
    pipe = TeraMindPipeline.from_pretrained(str(finetuned))
    pipe.set_progress_bar_config(disable=True)
    result: dict = {"held_out": HELD_OUT, "pair": list(INTERACTION_PAIR),
                    "coexpression_rank": coexpression_rank(tissue.genes, names, INTERACTION_PAIR)}
    # 1. did the fine-tuned model learn the joint effect on nuclei? (and does removing one gene undo it?)
    truth = tissue.images.transpose(1, 0, 2, 3).astype(np.float32) / 127.5 - 1
    kwargs = dict(gene_names=names, generator=0, num_inference_steps=steps, output_type="np")
    samples = {"truth": truth, "finetuned": pipe(tissue.genes, **kwargs).images}
    samples[f"finetuned_{INTERACTION_PAIR[0]}=0"] = pipe(tissue.genes, perturb={INTERACTION_PAIR[0]: 0}, **kwargs).images
    result["nuclei"] = {k: nuclei_by_group(v, tissue, um_per_px) for k, v in samples.items()}
    # 2. does attention single the pair out, above the random-weight null?
    scores = pair_significance(pipe, tissue.genes, names, None, random_models=null_models, permutations=5)
    by_pair = {frozenset(s.pair): s for s in scores}
    named = [tuple(INTERACTION_PAIR), *PLANTED_PAIRS]
    result["attention_all_pairs_bh"] = {"-".join(p): by_pair[frozenset(p)].to_dict() for p in named}
    result["attention_named_pairs"] = {
        "-".join(s.pair): s.to_dict()
        for s in pair_significance(pipe, tissue.genes, names, named, random_models=null_models, permutations=5)
    }
    ranked = sorted((s for s in scores if s.rank > 0), key=lambda s: s.rank)
    result["top_pairs_by_specificity"] = [("-".join(s.pair), round(s.specificity, 3)) for s in ranked[:5]]
    for key, row in result["nuclei"].items():
        print(key, {g: (v["found"], round(v["median_area_um2"], 1), round(v["median_brightness"], 3)) for g, v in row.items()})
    for key, row in result["attention_named_pairs"].items():
        rw = row["random_weights"]
        print(f"{key}: rank {row['rank']}/{row['pairs_ranked']}, z {rw['z']:.2f}, p {rw['p']:.3f}, learned {row['learned']}")
    return result


if __name__ == "__main__":
    sys.exit(main())
