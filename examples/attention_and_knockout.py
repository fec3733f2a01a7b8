"""Read the model's gene-gene attention against a null, and run an in-silico knockout against the noise floor.

    python examples/attention_and_knockout.py                   # embedded default model
    python examples/attention_and_knockout.py --steps 2 --out /tmp/ak

1. Attention: the phantom plants co-expressed pairs (Slc17a6-Slc17a7, Nr4a2-Th). Co-expressed genes attend to each
   other under ANY weights, so a pair's rank alone says little. Each pair is summarised over the patches where
   both genes are expressed and scored against the same architecture with random weights (z, permutation p,
   Benjamini-Hochberg "learned" call) and against gene-label permutations.
2. Knockout: zeroing a cell type's markers (`perturb=`) and sampling from the same seed; the change inside that
   type's cells and outside them is compared with the noise floor (another seed, unperturbed), and nuclei are
   matched to say what changed (removed, shrunk, dimmer).

Writes ``attention_matrix.png``, ``pair_map.png``, ``knockout.png`` and ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MODEL_UM_PER_PX, save_panels  # noqa: E402

from teramind_hf import TeraMindPipeline  # noqa: E402
from teramind_hf.pipelines.device import resolve_device  # noqa: E402
from teramind_hf.data import make_phantom  # noqa: E402
from teramind_hf.data.phantom import CELL_TYPES, PLANTED_PAIRS  # noqa: E402
from teramind_hf.eval.attention_null import (  # noqa: E402
    expressed_mask, expressed_pair_attention, model_gene_tensor, pair_significance, pair_specificity,
)
from teramind_hf.eval.knockout import knockout_report  # noqa: E402
from teramind_hf.eval.maps import pathway_map  # noqa: E402
from teramind_hf.eval.perturb import cell_type_markers  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: embedded model)")
    parser.add_argument("--size", type=int, default=256, help="region side in px (multiple of 256)")
    parser.add_argument("--steps", type=int, default=15, help="denoising steps for the knockout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-models", type=int, default=19, help="random-weight models in the attention null")
    parser.add_argument("--cell-type", default="dopaminergic", help="cell type whose markers are knocked out")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:INDEX or mps (default: cuda if available, else mps, else cpu)")
    parser.add_argument("--out", default="attention_out", help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = TeraMindPipeline.from_pretrained(args.model).to(resolve_device(args.device))  # random-weight nulls follow it
    pipe.set_progress_bar_config(disable=True)
    names = list(pipe.unet.config.gene_names)  # rows/cols of the attention, in the model's order
    tissue = make_phantom(args.size, args.size, num_slices=2, seed=2, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    data_names = list(tissue.panel)

    # 1. gene-gene attention on expressed patches, against random weights
    lower = {n.lower() for n in names}
    pairs = [(a, b) for a, b in PLANTED_PAIRS if a.lower() in lower and b.lower() in lower]
    summary: dict = {"genes": names, "planted_pairs": {}}
    for r in pair_significance(pipe, tissue.genes, data_names, pairs, random_models=args.random_models, permutations=2):
        rw = r.random_weights
        summary["planted_pairs"]["-".join(r.pair)] = {"rank": r.rank, "of": r.pairs_ranked, **r.to_dict()}
        print(f"planted pair {'-'.join(r.pair)}: {r.patches} expressed patches, rank {r.rank} of {r.pairs_ranked}; "
              f"vs {rw['n']} random-weight models z {rw['z']:.2f}, p {rw['p']:.3f}, learned={r.learned}")
    model_genes = model_gene_tensor(pipe, tissue.genes, data_names)
    attention = pipe.gene_attention(model_genes)
    means, _ = expressed_pair_attention(attention, expressed_mask(model_genes, pipe.unet.config))
    spec = pair_specificity(means)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100, layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(spec, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("expressed-patch attention, z over pairs (blank: never co-expressed)")
    fig.colorbar(shown, ax=ax)
    FigureCanvasAgg(fig).print_png(str(out / "attention_matrix.png"))

    a, b = pairs[0] if pairs else (names[0], names[1])
    maps = pathway_map(attention, model_genes, names, a, b, pipe.unet.config)
    save_panels([(maps["attention"][0], f"attention {a}-{b}"), (maps["pathway"][0], "attention x expression")],
                out / "pair_map.png", cmap="viridis")

    # 2. in-silico knockout of a cell type's markers, same seed, against the noise floor (another seed)
    markers = {g: 0.0 for g in cell_type_markers(args.cell_type) if g.lower() in lower}
    report = knockout_report(
        pipe, tissue.genes, data_names, markers, seed=args.seed, noise_seed=args.seed + 1,
        cell_types=tissue.cell_types, type_names=[t.name for t in CELL_TYPES], targeted=[args.cell_type],
        um_per_px=DEFAULT_MODEL_UM_PER_PX, num_inference_steps=args.steps,
    )
    diff = report.difference
    save_panels(
        [(diff[0, 0], "DAPI change"), (diff[0, 1], "PolyT change"),
         (report.other_seed[0, 1] - report.original[0, 1], "PolyT: another seed (noise floor)")],
        out / "knockout.png", cmap="RdBu_r", vmin=-1, vmax=1,
    )
    inside, outside = report.changes["inside_targeted"], report.changes["outside_targeted"]
    summary["knockout"] = {"gene": sorted(markers), "cell_type": args.cell_type, **report.to_dict()}
    print(f"knockout of {args.cell_type} markers {sorted(markers)}: |change| / noise floor inside those cells "
          f"{inside['ratio'][-1]:.2f}, outside {outside['ratio'][-1]:.2f}; nuclei: {report.morphology.get(args.cell_type)}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"wrote {out}/attention_matrix.png, pair_map.png, knockout.png, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
