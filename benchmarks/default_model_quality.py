"""Quality of the embedded default model on a held-out phantom region, against two controls.

    python benchmarks/default_model_quality.py                       # makes the held-out phantom itself
    python benchmarks/default_model_quality.py --model DIR --heldout STORE [--write_card --train_log LOG]

Prints PSNR / SSIM side by side for: the model given the region's genes; the same model and seed given
genes shuffled across bins; and the per-stain mean image. The held-out region is a phantom with a seed
the model never saw (seed 1; the default model was trained on seed 0). With ``--write_card`` the numbers
(and the training log) go into the model folder's README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def held_out_store(path: Path) -> Path:
    """The held-out phantom (seed 1, 512 x 512 px, 2 sections, the default model's scale) as a training store."""
    from teramind_hf import DEFAULT_MODEL_UM_PER_PX
    from teramind_hf.data import make_phantom
    from teramind_hf.data.datasets import write_training_store

    if not (path / "zarr.json").is_file():
        write_training_store(make_phantom(512, 512, num_slices=2, seed=1, um_per_px=DEFAULT_MODEL_UM_PER_PX).to_volume(), path)
    return path


def tile_step_seconds(pipe, repeats: int = 3) -> float:
    """Seconds of one model call on one 320-px tile canvas (one tile, one denoising step)."""
    cfg = pipe.unet.config
    canvas = torch.zeros(1, cfg.in_channels, cfg.num_slices, 320, 320)
    genes = torch.zeros(1, cfg.num_genes, cfg.gene_slices, 20, 20)
    with torch.no_grad():
        pipe.unet(canvas, 500, genes)
        start = time.perf_counter()
        for _ in range(repeats):
            pipe.unet(canvas, 500, genes)
    return (time.perf_counter() - start) / repeats


def _stage_summary(log: Path) -> dict:
    path = log.parent / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_card(
    model_dir: Path, tables: dict[int, dict], region_desc: str, train_log: Path | None, step_s: float,
    previous: list[Path] = (),
) -> None:
    """Write the model card (model folder and hub_cards/default_model) with one comparison table per step count."""
    from teramind_hf import DEFAULT_MODEL_UM_PER_PX
    from teramind_hf.training.card import card_data
    from teramind_hf.training.validation import format_comparison
    from huggingface_hub import ModelCard

    cfg = json.loads((model_dir / "unet" / "config.json").read_text())
    summary, losses = {}, []
    if train_log is not None:
        summary = _stage_summary(train_log)  # train_summary.json beside the log
        if train_log.is_file():
            records = [json.loads(line) for line in train_log.read_text().splitlines() if line.strip()]
            losses = [r for r in records if "loss" in r]
    stages = [_stage_summary(p) for p in previous] + [summary]
    total_steps = sum(int(s.get("steps") or 0) for s in stages)
    total_min = sum(float(s.get("seconds") or 0) for s in stages) / 60
    stage_text = " + ".join(f"{s.get('steps', '?')}" for s in stages)
    size_mb = sum(p.stat().st_size for p in model_dir.rglob("*.safetensors")) / 1e6
    if losses:
        first = sum(r["loss"] for r in losses[:20]) / len(losses[:20])
        last = sum(r["loss"] for r in losses[-20:]) / len(losses[-20:])
    else:  # a stage whose log is gone: the figures its summary kept
        first, last = summary.get("loss_start", float("nan")), summary.get("loss_end", float("nan"))
    verdicts = "\n".join(f"- {n} DDIM step(s): {comparison_verdict(t)}" for n, t in tables.items())
    one_step = " (one x0 prediction from pure noise: the model's estimate of the mean tissue given the genes)"
    results = "\n\n".join(
        f"{n} DDIM step(s){one_step if n == 1 else ''}:\n\n```\n{format_comparison(t)}\n```" for n, t in tables.items()
    )
    um = DEFAULT_MODEL_UM_PER_PX
    scale_note = (
        "- at this scale a gene bin holds about one cell: the genes say which cell type is in a bin, not where in it,\n"
        "  so samples follow the genes only weakly (see the numbers below)."
        if um >= 1.0
        else "- stages 1-3 were trained at 1.0 um/px (16-um bins: the genes say which cell type is in a bin, not where),\n"
        f"  stages 4-7 at {um:g} um/px, each from the previous stage's weights; the last one weights the 1-px edge ring\n"
        "  of each 64-px collage patch 5x in the collage loss (`--collage_edge_weight 5`) to fade the patch grid."
    )
    text = f"""---
{card_data(datasets=[f"synthetic-phantom-{um:g}um-seed0"]).to_yaml()}
---

# teramind-hf embedded default model (synthetic phantom, CPU-sized)

**Trained only on synthetic phantom tissue** (`teramind_hf.data.make_phantom`), not on real brain data.
It exists so that `teramind generate`, the demo and the tests work on a fresh machine without network.
It is *not* a model of real mouse-brain morphology; for that, convert the official Tera-MIND checkpoint
(`teramind convert-official`) or fine-tune on real data (`teramind train --pretrained ...`).

## What it was trained on
- phantom seed 0 at **{um:.1f} um/px** (`teramind_hf.DEFAULT_MODEL_UM_PER_PX`; the MERSCOPE mosaic is 0.108 um/px):
  nuclei are {6 / um:.0f}-{11 / um:.0f} px, a 16-px gene bin is {16 * um:g} um (cells are 16 um apart). Give the model
  tissue at this scale. Six cell types with marker genes, four layered
  regions; {cfg["num_genes"]}-gene panel: {", ".join(cfg["gene_names"])}.
{scale_note}
- official boundary-aware dual loss (collage + masked per-patch MSE), 256-px samples, random rot90/flip;
  stages 1-2 predict epsilon (official), later stages predict x0 (`--prediction_type sample`).

## How
- UNet widths {cfg["block_out_channels"]}, gene maps {cfg["gene_map_channels"]}, time embedding {cfg["time_embed_dim"]},
  dropout {cfg["dropout"]}; weights stored in fp16 ({size_mb:.1f} MB), loaded as float32.
- {total_steps} Adam steps ({stage_text}, in {sum(int(s.get("stages", 1)) for s in stages)} stages) x batch {summary.get("global_batch", "?")} on
  {summary.get("world", 1)} CPU process (1-2 threads, machine shared with other jobs), {total_min:.0f} min in all; stage 1 lr
  5e-4 (40 warm-up steps, cosine), later stages continue from the previous pipeline (lr 3e-4 to 8e-4, cosine, new
  data seed); grad clip 1.0; EMA (decay up to 0.999, warm-up power 0.75). Exact arguments:
  `scripts/train_default_model.py`.
- training loss of the last stage (mean of 20 steps): {first:.3f} at its start -> {last:.3f} at its end.
- re-make: `python scripts/train_default_model.py` (exact arguments in that script).

## Measured quality (held-out phantom, seed 1, never seen in training)
{region_desc}; seed 0; PSNR/SSIM on [-1, 1] images (data range 2), mean over sections and stains.

{results}

`shuffled_genes`: the same model and seed with gene bins shuffled across the region; `mean_image`: each stain
at the region's own mean value. Rows marked `@4x4` compare 4 x 4-px block means ({4 * um:g} um); plain rows compare
pixels. Made by `python benchmarks/default_model_quality.py`.

Against the controls (higher is better for both metrics):
{verdicts}

A sample places cells where the genes put them, but not pixel-exactly, so one sample is penalised twice
(its cells and the tissue's cells are both counted as errors); the constant mean image is the best a guess
without genes can do in PSNR, and it scores a high pixel SSIM on the dark background between cells.

Speed: one 256-px tile step (320-px canvas) takes {step_s:.2f} s on one CPU thread of the build machine.

## How to load

```python
from teramind_hf import TeraMindPipeline

pipe = TeraMindPipeline.from_pretrained()  # this embedded model; or a folder / Hub repo id
```

`diffusers.DiffusionPipeline.from_pretrained(folder)` does not load it: diffusers looks the pipeline class
(`TeraMindPipeline`) up among its own pipelines only. Use the line above (`import teramind_hf` first is not
enough).

## Limits
Synthetic data only; coarse scale; samples are plausible phantom-like nuclei/cell bodies placed where the
genes say, not real tissue. Use it for plumbing, demos and tests.
"""
    ModelCard(text).save(str(model_dir / "README.md"))
    hub = ROOT / "hub_cards" / "default_model"
    hub.mkdir(parents=True, exist_ok=True)
    (hub / "README.md").write_text(text)


def comparison_verdict(table: dict) -> str:
    """Which controls the model beats, per metric and scale, in words."""
    parts = []
    for suffix, scale in (("", "pixels"), *[(k[len("model"):], k[len("model@"):] + " blocks") for k in table if k.startswith("model@")]):
        model = table[f"model{suffix}"]
        for metric in ("psnr", "ssim"):
            beaten = [c for c in ("shuffled_genes", "mean_image") if model[metric] > table[f"{c}{suffix}"][metric]]
            parts.append(f"{metric.upper()} ({scale}) beats {' and '.join(beaten) if beaten else 'neither control'}")
    return "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline, default_model_path
    from teramind_hf.training.validation import format_comparison, quality_comparison, read_region

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: the embedded default model)")
    parser.add_argument("--heldout", default=None, help="held-out training store (default: made in /tmp at the model's scale)")
    parser.add_argument("--size", type=int, default=512, help="region size in px (multiple of 256)")
    parser.add_argument("--steps", type=int, nargs="+", default=[15, 1], help="DDIM step counts to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=4, help="also compare 4x4-px block means (the gene-bin scale)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write_card", action="store_true")
    parser.add_argument("--train_log", default=None, help="train_log.jsonl of the (last) training run")
    parser.add_argument("--previous_logs", nargs="*", default=[], help="train_log.jsonl of earlier stages")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model) if args.model else default_model_path()
    pipe = TeraMindPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    # the default path names the scale, so a store cached at another scale is never reused
    heldout = Path(args.heldout or f"/tmp/teramind_heldout_seed1_{DEFAULT_MODEL_UM_PER_PX:g}um.zarr")
    region = read_region(held_out_store(heldout), size=args.size, slices=2)
    tables = {n: quality_comparison(pipe, region, num_inference_steps=n, seed=args.seed, pool=args.pool) for n in args.steps}
    step_s = tile_step_seconds(pipe)
    for n, table in tables.items():
        print(f"model {model_dir}, held-out region {args.size}x{args.size} px x 2 sections, {n} steps")
        print(format_comparison(table))
        print(comparison_verdict(table))
    print(f"tile step (320-px canvas, {args.threads} thread(s)): {step_s:.3f} s")
    if args.write_card:
        desc = f"region {args.size} x {args.size} px x 2 sections"
        log = Path(args.train_log) if args.train_log else None
        write_card(model_dir, tables, desc, log, step_s, [Path(p) for p in args.previous_logs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
