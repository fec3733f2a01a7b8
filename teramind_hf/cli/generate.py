"""`teramind generate --genes STORE --out OUT.ome.zarr ...`: streamed, resumable, multi-process generation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..constants import DEFAULT_SECTION_SPACING_UM, DEFAULT_STEP_BUFFER_LIMIT, MERSCOPE_UM_PER_PX
from ._args import int_tuple


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import torch

    from ..pipelines.streaming import distributed_state, generate_to_zarr, load_pipeline

    from ..sampling.schedule import GridSchedule, resolve_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.exact and not args.region:
        raise ValueError("--exact needs --region (the sub-region to generate exactly as in the full run)")
    grid = resolve_grid(args.grid) if args.grid else None
    if args.blend_offsets or args.blend_steps:
        if not (args.blend_offsets and args.blend_steps):
            raise ValueError("--blend-offsets and --blend-steps go together (e.g. '0,0;0,16;16,0;16,16' and 1)")
        offsets = tuple(int_tuple(o, 2, "blend-offsets") for o in args.blend_offsets.split(";"))
        base = grid or resolve_grid(None)
        grid = GridSchedule(shifts=base.shifts, blend_offsets=offsets, blend_steps=args.blend_steps)
    pipe = load_pipeline(args.model, args.scheduler or "ddim")
    report = generate_to_zarr(
        pipe,
        args.genes,
        args.out,
        region=int_tuple(args.region, 4, "region") if args.region else None,
        slices=int_tuple(args.slices, 2, "slices") if args.slices else None,
        num_inference_steps=args.steps,
        generator=args.seed,
        batch_size=args.batch_size,
        tile_order=args.tile_order,
        halo=not args.no_halo,
        exact=args.exact,
        grid=grid,
        preset=args.preset,
        overwrite=args.overwrite,
        memory_limit_bytes=int(args.memory_limit_mb * 2**20),
        um_per_px=args.um_per_px,
        section_spacing_um=args.section_spacing_um,
        progress_bar=not args.quiet,
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
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, else 15 official)")
    p.add_argument("--scheduler", default=None,
                   help="ddim (official), dpm (DPM-Solver++ multistep), unipc, euler, or a diffusers scheduler class name")
    p.add_argument("--preset", default=None, help="official (DDIM 15 steps) or fast: scheduler, steps and grid schedule")
    p.add_argument("--exact", action="store_true",
                   help="with --region: add the margin the steps' dependency cone needs, so the region equals the same pixels of the full run")
    p.add_argument("--grid", default=None, help="grid schedule name (official, blend4; default: the preset's, else official)")
    p.add_argument("--blend-offsets", default=None, help="grid offsets y,x px blended at the last --blend-steps steps, ';'-separated")
    p.add_argument("--blend-steps", type=int, default=0, help="number of last steps that blend --blend-offsets")
    p.add_argument("--tile-order", default="raster", choices=("raster", "reverse"), help="tile visiting order (no effect on bytes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4, help="tile canvases per model call")
    p.add_argument("--overwrite", action="store_true", help="replace an output from a different run")
    p.add_argument("--no-halo", action="store_true", help="naive tiling baseline: each tile alone, no neighbour halo")
    p.add_argument("--um-per-px", type=float, default=None, help=f"pixel size (default: gene store attribute, else {MERSCOPE_UM_PER_PX})")
    p.add_argument("--section-spacing-um", type=float, default=None, help=f"z spacing (default: attribute, else {DEFAULT_SECTION_SPACING_UM})")
    p.add_argument("--memory-limit-mb", type=float, default=DEFAULT_STEP_BUFFER_LIMIT / 2**20, help="step buffers above this go to disk")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch default)")
    p.add_argument("--report-json", default=None, help="also write the run summary as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
