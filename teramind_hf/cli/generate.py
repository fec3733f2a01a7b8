"""`teramind generate --genes STORE --out OUT.ome.zarr ...`: streamed, resumable, multi-process generation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..constants import DEFAULT_SECTION_SPACING_UM, DEFAULT_SHARD_TILES, DEFAULT_STEP_BUFFER_LIMIT, MERSCOPE_UM_PER_PX
from ._args import int_tuple


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import torch

    from ..pipelines.streaming import distributed_state, generate_to_zarr, load_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, args.scheduler, dtype=args.dtype, compile=args.compile)
    report = generate_to_zarr(
        pipe,
        args.genes,
        args.out,
        region=int_tuple(args.region, 4, "region") if args.region else None,
        slices=int_tuple(args.slices, 2, "slices") if args.slices else None,
        num_inference_steps=args.steps,
        generator=args.seed,
        batch_size=args.batch_size,
        halo=not args.no_halo,
        overwrite=args.overwrite,
        memory_limit_bytes=int(args.memory_limit_mb * 2**20),
        um_per_px=args.um_per_px,
        section_spacing_um=args.section_spacing_um,
        progress_bar=not args.quiet,
        shard_tiles=args.shard_tiles or None,
    )
    if distributed_state().is_main_process:
        print(report.summary())
        if args.report_json:
            Path(args.report_json).write_text(json.dumps({**asdict(report), "voxels_per_second": report.voxels_per_second}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate morphology from a gene store into a resumable OME-Zarr image (multi-process with accelerate)",
    )
    p.add_argument("--genes", required=True, help="gene source: zarr group with 'genes' (G,Z,Hb,Wb) + gene_names, .npy or .npz")
    p.add_argument("--out", required=True, help="output OME-Zarr folder (path or fsspec URL)")
    p.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--region", default=None, help="y0,x0,h,w in image px, whole tiles (default: everything)")
    p.add_argument("--slices", default=None, help="a,b image sections [a, b) (default: all)")
    p.add_argument("--steps", type=int, default=15, help="denoising steps (15 official)")
    p.add_argument("--scheduler", default="ddim", choices=("ddim", "dpm"), help="ddim (dpm is refused: see docs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4, help="tile canvases per model call")
    p.add_argument("--overwrite", action="store_true", help="replace an output from a different run")
    p.add_argument("--no-halo", action="store_true", help="naive tiling baseline: each tile alone, no neighbour halo")
    p.add_argument("--um-per-px", type=float, default=None, help=f"pixel size (default: gene store attribute, else {MERSCOPE_UM_PER_PX})")
    p.add_argument("--section-spacing-um", type=float, default=None, help=f"z spacing (default: attribute, else {DEFAULT_SECTION_SPACING_UM})")
    p.add_argument("--memory-limit-mb", type=float, default=DEFAULT_STEP_BUFFER_LIMIT / 2**20, help="step buffers above this go to disk")
    p.add_argument("--shard-tiles", type=int, default=DEFAULT_SHARD_TILES,
                   help="level-0 zarr shard = work unit of N x N tiles (one writer each); 0: unsharded, tiles split one by one")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="model precision (state, step buffers and scheduler stay float32); changes the bytes")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (first tile-steps compile)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch default)")
    p.add_argument("--report-json", default=None, help="also write the run summary as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
