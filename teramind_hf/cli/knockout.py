"""`teramind knockout --genes STORE --set Th=0,Nr4a2=0 [--scale Gene=0.5] [--cell-type NAME] --out DIR`."""

from __future__ import annotations

import argparse

from ._args import DEVICE_HELP, int_tuple, process_device


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..eval.knockout import knockout_report
    from ..eval.maps import read_gene_region, save_panels, write_ome_zarr_layers
    from ..eval.perturb import cell_type_markers, parse_gene_factors
    from ..output_guard import check_can_create, check_output_location
    from ..eval.report import write_json
    from ..pipelines.preflight import check_generate_arguments
    from ..pipelines.pipeline_teramind import TeraMindPipeline
    from ._args import local_model

    perturb: dict[str, float] = {}
    for text in args.set or []:
        zeros = parse_gene_factors(text, "--set")
        nonzero = {g: f for g, f in zeros.items() if f != 0}
        if nonzero:
            raise ValueError(f"--set only zeroes genes (GENE=0); use --scale GENE=FACTOR for {nonzero}")
        perturb.update(zeros)
    for text in args.scale or []:
        perturb.update(parse_gene_factors(text, "--scale"))
    targeted = list(args.cell_type or [])
    for name in targeted:
        perturb.update({g: 0.0 for g in cell_type_markers(name)})
    if not perturb:
        raise ValueError("nothing to perturb: give --set, --scale or --cell-type")
    out = Path(args.out)
    inputs = {"--genes": args.genes, "--model": local_model(args.model), "--labels": args.labels, "--regions": args.regions}
    check_output_location(out, inputs, "--out")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty")
    check_can_create(out, "--out")  # before sampling, not after
    if args.seed == args.noise_seed:
        raise ValueError("--noise-seed must differ from --seed (the noise floor is another seed's sample)")
    check_generate_arguments(num_inference_steps=args.steps, batch_size=args.batch_size, um_per_px=args.um_per_px,
                             threads=args.threads, seed=args.seed)
    device = process_device(args.device, "knockout")
    if args.threads:
        torch.set_num_threads(args.threads)
    region = int_tuple(args.region, 4, "region") if args.region else None
    slices = int_tuple(args.slices, 2, "slices") if args.slices else None
    genes, names, attrs = read_gene_region(args.genes, region, slices, multiple=256)
    z0, y0, x0 = attrs["origin_px"]
    z, h, w = genes.shape[1], genes.shape[2] * attrs["gene_bin"], genes.shape[3] * attrs["gene_bin"]
    window = (slice(z0, z0 + z), slice(y0, y0 + h), slice(x0, x0 + w))
    cell_types, type_names = _labels(args.labels, args.genes, "cell_types.tif", window)
    regions, region_names = _labels(args.regions, args.genes, "regions.tif", window)
    if targeted and cell_types is None:
        raise ValueError("--cell-type needs a cell-type label image: --labels cell_types.tif (phantom: ground_truth/)")
    pipe = TeraMindPipeline.from_pretrained(args.model).to(device)
    pipe.set_progress_bar_config(disable=args.quiet)
    panel = {n.lower() for n in pipe.unet.config.gene_names or []}
    unknown = [g for g in perturb if g.lower() not in panel]
    if unknown:  # before sampling: the pipeline would refuse them too, after the first sample
        raise ValueError(f"gene(s) {unknown} not in the model panel ({', '.join(pipe.unet.config.gene_names or [])})")
    um = float(args.um_per_px or attrs.get("um_per_px") or 0.5)
    # --steps, else the model's own default: resolved by the pipeline's sampling plan, as in `teramind generate`
    _, steps, _ = pipe.sampling_plan(args.steps, None, None)
    report = knockout_report(
        pipe, genes, names, perturb, seed=args.seed, noise_seed=args.noise_seed, cell_types=cell_types,
        type_names=type_names, targeted=targeted, regions=regions, region_names=region_names, um_per_px=um,
        num_inference_steps=steps, batch_size=args.batch_size,
    )
    out.mkdir(parents=True, exist_ok=True)
    spacing = attrs.get("section_spacing_um")
    for name, volume in (("original", report.original), ("perturbed", report.perturbed), ("difference", report.difference)):
        layers = {"DAPI": volume[:, 0], "PolyT": volume[:, 1]}  # [-1, 1] -> 0..255 (difference: 127.5 = none)
        write_ome_zarr_layers(out / f"{name}.ome.zarr", layers, um_per_px=um, section_spacing_um=spacing, value_range=(-1.0, 1.0))
    diff, floor = report.difference, report.other_seed - report.original
    style = {"cmap": "RdBu_r", "vmin": -1, "vmax": 1}
    save_panels(
        [(report.original[0, 0], "original DAPI", {"vmin": -1, "vmax": 1}),
         (report.perturbed[0, 0], "perturbed DAPI", {"vmin": -1, "vmax": 1}),
         (diff[0, 0], "DAPI change", style), (floor[0, 0], "DAPI: another seed (noise floor)", style),
         (report.original[0, 1], "original PolyT", {"vmin": -1, "vmax": 1}),
         (report.perturbed[0, 1], "perturbed PolyT", {"vmin": -1, "vmax": 1}),
         (diff[0, 1], "PolyT change", style), (floor[0, 1], "PolyT: another seed (noise floor)", style)],
        out / "knockout.png", columns=4,
    )
    summary = {"genes": str(args.genes), "model": args.model or "embedded default", "steps": steps,
               "region_origin_px": [z0, y0, x0], "targeted_cell_types": targeted, **report.to_dict()}
    write_json(out / "knockout.json", summary)
    for key, row in report.changes.items():
        c, f, r = row["change"][-1], row["noise_floor"][-1], row["ratio"][-1]
        print(f"{key:32s} |change| {c:.4f}  noise floor {f:.4f}  ratio {r:5.2f}  ({row['pixels']:,} px)")
    for key, phrase in report.morphology.items():
        print(f"nuclei {key:25s} {phrase}")
    print(f"wrote {out}/original.ome.zarr, perturbed.ome.zarr, difference.ome.zarr, knockout.png, knockout.json")
    return 0


def _labels(path, genes_location, default_name: str, window):
    """A ``(Z, H, W)`` ground-truth label image cropped to the region, and its class names (phantom metadata)."""
    import json
    from pathlib import Path

    import numpy as np

    folder = Path(str(genes_location)).parent / "ground_truth"
    if path is None:
        path = folder / default_name if (folder / default_name).is_file() else None
        if path is None:
            return None, []
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label image not found: {path}")
    import tifffile

    labels = np.asarray(tifffile.imread(path))
    if labels.ndim == 2:
        labels = labels[None]
    crop = labels[window]
    if crop.shape != tuple(s.stop - s.start for s in window):
        raise ValueError(f"{path}: label image {labels.shape} does not cover the region {window}")
    meta_file = path.parent.parent / "phantom.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if default_name == "cell_types.tif":
        from ..data.phantom import CELL_TYPES

        names = [t["name"] for t in meta.get("cell_types", [])] or [t.name for t in CELL_TYPES]
    else:
        from ..data.phantom import REGIONS

        names = list(meta.get("regions", [])) or [r[0] for r in REGIONS]
    return crop, names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("knockout", help="in-silico knockout / perturbation against the noise floor")
    p.add_argument("--genes", required=True, help="gene source: zarr group with 'genes' + gene_names, .npy or .npz")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--set", action="append", help="genes to zero: GENE=0[,GENE=0...] (repeatable)")
    p.add_argument("--scale", action="append", help="genes to scale: GENE=FACTOR[,...] (repeatable)")
    p.add_argument("--cell-type", action="append", help="zero all markers of this (phantom) cell type (repeatable)")
    p.add_argument("--labels", default=None, help="cell-type label image (Z,H,W) tif (default: STORE/../ground_truth/cell_types.tif)")
    p.add_argument("--regions", default=None, help="region label image (default: STORE/../ground_truth/regions.tif)")
    p.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--region", default=None, help="y0,x0,h,w in image px, whole 256-px tiles (default: everything)")
    p.add_argument("--slices", default=None, help="a,b sections [a, b) (default: all)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, as in generate: 8 for the embedded model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the original and the perturbed sample")
    p.add_argument("--noise-seed", type=int, default=1, help="seed of the noise-floor sample")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--um-per-px", type=float, default=None, help="pixel size (default: gene store attribute, else 0.5)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
