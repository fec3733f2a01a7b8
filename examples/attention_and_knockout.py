"""Read the model's gene-gene attention and run an in-silico knockout.

    python examples/attention_and_knockout.py                   # embedded default model
    python examples/attention_and_knockout.py --steps 2 --out /tmp/ak

1. The gene branch attends gene to gene in every 64-px patch; averaging over the tissue gives a panel-wide
   matrix. The phantom plants co-expressed pairs (Slc17a6-Slc17a7, Nr4a2-Th): their rank among all pairs
   says whether a model learned the co-expression (a random model ranks them anywhere).
2. Knocking a gene out (zero counts) and sampling again from the same seed shows what the model ties to
   that gene; the difference image is the gene's effect on DAPI and PolyT.

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
from teramind_hf.data import make_phantom  # noqa: E402
from teramind_hf.data.phantom import NULL_GENE, PLANTED_PAIRS  # noqa: E402
from teramind_hf.eval.attention import in_silico_knockout, mean_attention, pair_attention_map, pair_rank  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: embedded model)")
    parser.add_argument("--size", type=int, default=256, help="region side in px (multiple of 256)")
    parser.add_argument("--steps", type=int, default=15, help="denoising steps for the knockout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knockout", default=None, help="gene to zero (default: Th, else the first model gene)")
    parser.add_argument("--out", default="attention_out", help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = TeraMindPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    names = list(pipe.unet.config.gene_names)  # rows/cols of the attention, in the model's order
    tissue = make_phantom(args.size, args.size, num_slices=2, seed=2, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    data_names = list(tissue.panel)

    # 1. gene-gene attention
    attention = pipe.gene_attention(tissue.genes, data_names)  # (chunks, patches_h, patches_w, G, G)
    matrix = mean_attention(attention)
    summary: dict = {"genes": names, "planted_pairs": {}}
    lower = {n.lower() for n in names}
    pairs = [(a, b) for a, b in PLANTED_PAIRS if a.lower() in lower and b.lower() in lower]
    for a, b in pairs:
        rank, total = pair_rank(matrix, names, a, b)
        summary["planted_pairs"][f"{a}-{b}"] = {"rank": rank, "of": total}
        print(f"planted pair {a}-{b}: rank {rank} of {total} gene pairs by mean attention")
    if NULL_GENE.lower() in lower:
        null = names[[n.lower() for n in names].index(NULL_GENE.lower())]
        others = [n for n in names if n != null]
        summary["null_gene_mean_rank"] = float(np.mean([pair_rank(matrix, names, null, o)[0] for o in others]))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100, layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("mean gene-gene attention (row: query gene)")
    fig.colorbar(shown, ax=ax)
    FigureCanvasAgg(fig).print_png(str(out / "attention_matrix.png"))

    a, b = pairs[0] if pairs else (names[0], names[1])
    pair = pair_attention_map(attention, names, a, b)[0]
    save_panels([(pair, f"attention {a}-{b} per patch")], out / "pair_map.png", cmap="viridis")

    # 2. in-silico knockout, same seed
    gene = args.knockout or ("Th" if "th" in lower else names[0])
    result = in_silico_knockout(pipe, tissue.genes, data_names, gene, seed=args.seed, num_inference_steps=args.steps)
    diff = result.difference
    limit = max(float(np.abs(diff[0]).max()), 1e-3)
    save_panels(
        [(diff[0, 0], f"DAPI change ({gene} KO)"), (diff[0, 1], f"PolyT change ({gene} KO)")],
        out / "knockout.png", cmap="RdBu_r", vmin=-limit, vmax=limit,
    )  # fmt: skip
    dapi, polyt = result.mean_abs_change
    summary["knockout"] = {"gene": gene, "mean_abs_change_dapi": dapi, "mean_abs_change_polyt": polyt}
    print(f"knockout of {gene}: mean |change| DAPI {dapi:.4f}, PolyT {polyt:.4f} (images in [-1, 1])")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}/attention_matrix.png, pair_map.png, knockout.png, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
