"""`teramind attention --genes STORE --pair A,B [--pair C,D] --out DIR`: gene-pair attention against a null."""

from __future__ import annotations

import argparse

from ._args import DEVICE_HELP, int_tuple, process_device


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from ..eval.attention_null import DEFAULT_THRESHOLD, check_significance_arguments, model_gene_tensor, pair_significance
    from ..eval.maps import pathway_map, read_gene_region, save_panels, write_ome_zarr_layers
    from ..output_guard import check_can_create, check_output_location
    from ..eval.report import write_json
    from ..pipelines.preflight import check_generate_arguments
    from ..pipelines.pipeline_teramind import TeraMindPipeline
    from ._args import local_model

    pairs = [_parse_pair(p) for p in args.pair]
    out = Path(args.out)
    check_output_location(out, {"--genes": args.genes, "--model": local_model(args.model)}, "--out")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty")
    threshold = args.threshold if args.threshold is not None else DEFAULT_THRESHOLD
    check_significance_arguments(threshold=threshold, random_models=args.random_models, permutations=args.permutations,
                                 alpha=args.alpha)
    check_generate_arguments(num_inference_steps=None, um_per_px=args.um_per_px, threads=args.threads, seed=args.seed)
    check_can_create(out, "--out")  # before the null models are computed, not after
    device = process_device(args.device, "attention")  # the model and the random-weight null models
    if args.threads:
        torch.set_num_threads(args.threads)
    region = int_tuple(args.region, 4, "region") if args.region else None
    slices = int_tuple(args.slices, 2, "slices") if args.slices else None
    genes, names, attrs = read_gene_region(args.genes, region, slices)
    pipe = TeraMindPipeline.from_pretrained(args.model).to(device)
    pipe.set_progress_bar_config(disable=True)
    panel = list(pipe.unet.config.gene_names or [])
    results = pair_significance(
        pipe, genes, names, pairs, threshold=threshold,
        random_models=args.random_models, permutations=args.permutations, alpha=args.alpha, seed=args.seed,
    )
    model_genes = model_gene_tensor(pipe, genes, names)
    attention = pipe.gene_attention(model_genes)
    um = float(args.um_per_px or attrs.get("um_per_px") or 0.5)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        a, b = r.pair
        maps = pathway_map(attention, model_genes, panel, a, b, pipe.unet.config)
        write_ome_zarr_layers(out / f"pathway_{a}-{b}.ome.zarr", maps, um_per_px=um * pipe.unet.config.gene_bin,
                              section_spacing_um=attrs.get("section_spacing_um"))
        null = r.random_weights
        low, high = null["effect_interval"]
        save_panels(
            [(maps["attention"][0], f"attention {a}-{b} (patch)", {"cmap": "viridis"}),
             (maps["expression"][0], f"sqrt({a} x {b}) counts", {"cmap": "magma"}),
             (maps["pathway"][0], f"attention x expression\nz={null['z']:.2f} vs random weights, p={null['p']:.3f}",
              {"cmap": "inferno"})],
            out / f"pathway_{a}-{b}.png",
        )
        print(f"{a}-{b}: {r.patches} expressed patches, specificity {r.specificity:.2f} (rank {r.rank}/{r.pairs_ranked}); "
              f"vs random weights z {null['z']:.2f}, p {null['p']:.3f} (BH {r.p_adjusted:.3f}, learned={r.learned}), "
              f"effect {null['effect']:+.3f} [{low:+.3f}, {high:+.3f}] specificity units; "
              f"vs label permutation p {r.label_permutation['p']:.3f}")
    summary = {
        "genes": str(args.genes), "model": args.model or "embedded default", "threshold": threshold,
        "random_models": args.random_models, "permutations": args.permutations, "alpha": args.alpha,
        "region_origin_px": list(attrs["origin_px"]), "shape": list(np.shape(genes)),
        "pairs": [r.to_dict() for r in results],
    }
    write_json(out / "attention.json", summary)
    print(f"wrote {out}/attention.json, pathway_*.ome.zarr, pathway_*.png")
    return 0


def _parse_pair(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0].lower() == parts[1].lower():
        raise ValueError(f"--pair: expected two different genes A,B, got {text!r}")
    return parts[0], parts[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attention", help="gene-pair attention against random-weight and label-permutation nulls")
    p.add_argument("--genes", required=True, help="gene source: zarr group with 'genes' + gene_names, .npy or .npz")
    p.add_argument("--pair", action="append", required=True, help="two genes A,B of the model panel (repeatable)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--region", default=None, help="y0,x0,h,w in image px, multiples of 64 (default: everything)")
    p.add_argument("--slices", default=None, help="a,b sections [a, b) (default: all)")
    p.add_argument("--threshold", type=float, default=None, help="a gene is expressed in a patch above this many transcripts (default 5)")
    p.add_argument("--random-models", type=int, default=39, help="random-weight models in the null (>= 19 for p <= 0.05)")
    p.add_argument("--permutations", type=int, default=19, help="gene-label permutations in the second null")
    p.add_argument("--alpha", type=float, default=0.05, help="false discovery rate for the 'learned' call")
    p.add_argument("--seed", type=int, default=0, help="first random-model seed")
    p.add_argument("--um-per-px", type=float, default=None, help="pixel size (default: gene store attribute, else 0.5)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.set_defaults(func=run)
