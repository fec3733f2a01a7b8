"""`teramind eval seams OUT [--tile-size N]` and `teramind eval report GENERATED --truth TRUTH --out DIR`."""

from __future__ import annotations

import argparse

from ._args import DEVICE_HELP, eval_subparsers, process_device


def run_seams(args: argparse.Namespace) -> int:
    from ..eval.seams import seam_score

    result = seam_score(args.out, args.tile_size)
    print(
        f"seam score {result.score:.4f} (border |grad| {result.border_gradient:.3f} / interior |grad| "
        f"{result.interior_gradient:.3f}, tile {result.tile_size} px, {result.border_pairs:,} border pairs)"
    )
    print(
        f"border band ratio {result.band_ratio:.4f} (mean intensity within {result.band} px of inner tile borders / "
        "elsewhere; dark bands lower it: compare runs on the same genes)"
    )
    print(
        f"worst-phase border score {result.worst_phase_score:.4f} (worst 2-D phase y {result.worst_phases[0]}, "
        f"x {result.worst_phases[1]} of period {result.tile_size} px: the measure `eval report` and the docs quote)"
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    import torch

    from ..eval.report import CONTROLS, evaluation_report

    if args.threads:
        torch.set_num_threads(args.threads)
    device = process_device(args.device, "eval report")  # for the generated controls
    report = evaluation_report(
        args.generated,
        args.truth,
        labels=args.labels,
        um_per_px=args.um_per_px,
        controls=() if args.no_controls else CONTROLS,
        seeds=args.seeds,
        out_dir=args.out,
        model=args.model,
        genes=args.genes,
        block=args.block,
        match_distance_um=args.match_distance_um,
        progress=not args.quiet,
        device=device,
    )
    print(report.table())
    print(f"wrote {report.json_path} and {report.png_path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    group = eval_subparsers(subparsers)
    p = group.add_parser("seams", help="seam score of an OME-Zarr output (lower is more seamless)")
    p.add_argument("out", help="OME-Zarr folder written by `teramind generate`")
    p.add_argument("--tile-size", type=int, default=None, help="tile edge in px (default: from the run record, else 256)")
    p.set_defaults(func=run_seams)

    p = group.add_parser(
        "report",
        help="realism + fidelity metrics against the truth, with controls (shuffled genes, mean image, noise seeds)",
    )
    p.add_argument("generated", help="OME-Zarr written by `teramind generate` (or an image store / (2,Z,H,W) TIFF)")
    p.add_argument("--truth", required=True, help="true images: image store (e.g. a phantom's store.zarr), OME-Zarr or TIFF")
    p.add_argument("--labels", default=None, help="region label image (Z,H,W) in the truth's pixels, e.g. ground_truth/regions.tif")
    p.add_argument("--out", required=True, help="folder for report.json, report.png (and controls/)")
    p.add_argument("--no-controls", action="store_true", help="no shuffled-gene / mean-image controls and one seed")
    p.add_argument("--seeds", type=int, default=None, help="model samples over noise seeds (default 2 with controls, else 1)")
    p.add_argument("--model", default=None, help="pipeline folder of the run, for the controls (default: embedded model)")
    p.add_argument("--genes", default=None, help="gene source of the run, for the controls (default: from the run record)")
    p.add_argument("--um-per-px", type=float, default=None, help="pixel size (default: run record, else truth store)")
    p.add_argument("--match-distance-um", type=float, default=5.0, help="nucleus centroid match distance")
    p.add_argument("--block", type=int, default=1024, help="px per block read at once (bounds memory)")
    p.add_argument("--device", default=None, help="for the generated controls: " + DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)
