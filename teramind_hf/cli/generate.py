"""`teramind generate [--genes STORE|MERSCOPE|SDATA] --out OUT.ome.zarr ...`: streamed, resumable, multi-process
generation; without --genes, the main job (a held-out phantom region, scored against its truth)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..constants import DEFAULT_SECTION_SPACING_UM, DEFAULT_SHARD_TILES, DEFAULT_STEP_BUFFER_LIMIT, MERSCOPE_UM_PER_PX
from ._args import (
    DEVICE_HELP, add_origin_arguments, blend_steps_arg, int_tuple, local_model, origin_arguments, process_device,
)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import torch

    from ..output_guard import check_output_location, check_replaceable
    from ..pipelines.gene_source import open_gene_source
    from ..pipelines.preflight import check_generate_arguments, check_output_path, check_report_location
    from ..pipelines.sampling_run import check_sampling_arguments
    from ..pipelines.streaming import distributed_state, generate_to_zarr

    from ..sampling.presets import resolve_preset
    from ..sampling.schedule import GridSchedule, resolve_grid

    device = process_device(args.device, "generate")  # first: a refused device leaves nothing behind
    # what can be checked without the model, before loading it (the rest: generate_to_zarr, before any write)
    region = int_tuple(args.region, 4, "region") if args.region else None
    slices = int_tuple(args.slices, 2, "slices") if args.slices else None
    origin_um = origin_arguments(args)
    grid = resolve_grid(args.grid) if args.grid else None
    if args.blend_offsets or args.blend_steps:
        if not (args.blend_offsets and args.blend_steps):
            raise ValueError("--blend-offsets and --blend-steps go together (e.g. '0,0;0,16;16,0;16,16' and 1)")
        offsets = tuple(int_tuple(o, 2, "blend-offsets") for o in args.blend_offsets.split(";"))
        base = grid or resolve_grid(None)
        grid = GridSchedule(shifts=base.shifts, blend_offsets=offsets, blend_steps=args.blend_steps)
    if args.preset:
        preset = resolve_preset(args.preset)  # an unknown preset fails here, before anything is written
        if preset.model is not None and args.model is None:  # a student's preset samples its own weights
            from .. import packaged_model_path

            args.model = str(packaged_model_path(preset.model))
    # steps: --steps, else the preset's, else the model's own default (resolved by the pipeline's sampling plan)
    check_sampling_arguments(num_inference_steps=args.steps, batch_size=args.batch_size, exact=args.exact, region=region)
    check_generate_arguments(
        memory_limit_bytes=args.memory_limit_mb * 2**20, um_per_px=args.um_per_px,
        section_spacing_um=args.section_spacing_um, seed=args.seed, threads=args.threads,
        min_gene_overlap=args.min_gene_overlap,
    )
    check_output_path(args.out)
    inputs = _inputs(args)
    check_output_location(args.out, inputs, "--out")
    if args.overwrite:
        check_replaceable(args.out, ["generate"], "--out")  # a foreign folder is refused before the model loads
    check_report_location(args.report_json)  # a folder or a missing folder named first
    check_output_location(args.report_json, inputs, "--report-json")
    if args.spatialdata:
        from ..data.export import check_export_target

        check_export_target(args.spatialdata, "teramind", args.overwrite, inputs={**inputs, "--out": args.out},
                            argument="--spatialdata")
    pipe = _check_raw_region(args, region, slices, device)
    genes, truth = _gene_input(args)
    open_gene_source(genes)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = pipe or _load_pipeline(args, device)
    report = generate_to_zarr(
        pipe,
        genes,
        args.out,
        region=region,
        slices=slices,
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
        min_gene_overlap=args.min_gene_overlap,
        shard_tiles=args.shard_tiles or None,
        origin_um=origin_um,
        origin_unknown=args.origin_unknown,
        require_origin=True,
    )
    if distributed_state().is_main_process:
        print(report.summary())
        if args.report_json:
            summary = json.dumps({**asdict(report), "voxels_per_second": report.voxels_per_second})
            try:
                Path(args.report_json).write_text(summary)
            except OSError as err:  # a failed write() names no file: name it (full disk, quota)
                raise OSError(err.errno, err.strerror, args.report_json) from err
        _after_generate(args, genes, truth)
    return 0


def _inputs(args: argparse.Namespace) -> dict:
    """What `teramind generate` reads, so that nothing it writes lands on, over or inside them."""
    return {"--genes": args.genes, "--model": local_model(args.model)}


def _check_raw_region(args: argparse.Namespace, region, slices, device):
    """A MERSCOPE folder given to --genes with --region/--slices: check them against the mosaics (the model's tile
    grid) before the folder is ingested beside --out. Returns the pipeline if it was loaded for that, else None."""
    from ..data.ingest.auto import raw_kind

    if args.genes is None or (region is None and slices is None) or raw_kind(args.genes) != "merscope":
        return None
    from ..data.ingest.merscope import merscope_extent, merscope_runs
    from ..pipelines.preflight import check_region

    pipe = _load_pipeline(args, device)
    gene_bin = pipe.unet.config.gene_bin
    sections, height, width = merscope_extent(merscope_runs(args.genes), gene_bin)
    check_region((0, sections, height // gene_bin, width // gene_bin), gene_bin, pipe.config["tile_size"], region,
                 slices, f"MERSCOPE runs {args.genes}")
    return pipe


def _gene_input(args: argparse.Namespace) -> tuple[str, str | None]:
    """(gene source, truth store or None): no --genes = the main job on the bundled phantom; a MERSCOPE folder
    or SpatialData store is ingested beside the output first."""
    from ..pipelines.streaming import distributed_state

    state = distributed_state()
    if args.genes is None:
        from ..eval.truth import main_job_truth

        truth = str(main_job_truth(args.out)) if state.is_main_process else None
        state.wait_for_everyone()
        truth = truth or str(main_job_truth(args.out))
        if state.is_main_process:
            print(f"main job: genes and truth of a held-out phantom region in {truth}")
        return truth, truth
    from ..data.ingest.auto import gene_store_for

    if state.is_main_process:
        genes, message = gene_store_for(args.genes, args.out, um_per_px=args.um_per_px, progress_bar=not args.quiet)
        if message:
            print(message)
    state.wait_for_everyone()
    genes, _ = gene_store_for(args.genes, args.out, um_per_px=args.um_per_px, progress_bar=False)
    return genes, None


def _after_generate(args: argparse.Namespace, genes: str, truth: str | None) -> None:
    print(f"output: {args.out}")
    if truth is not None:
        from ..eval.truth import format_scores, score_against_truth

        print(f"scores against the phantom's truth: {format_scores(score_against_truth(args.out, truth))}")
    if args.spatialdata:
        from ..data.export import export_spatialdata
        from ..data.ingest.auto import raw_kind

        like = args.genes if args.genes and raw_kind(args.genes) == "spatialdata" else None
        names = export_spatialdata(args.out, args.spatialdata, like=like, overwrite=args.overwrite,
                                  origin_unknown=args.origin_unknown)
        print(f"SpatialData: image element(s) {', '.join(names)} in {args.spatialdata}")


def _load_pipeline(args: argparse.Namespace, device):
    """The pipeline with the requested scheduler, precision, device and compilation; --quiet hides diffusers'
    "Loading pipeline components" bar."""
    from diffusers.utils import logging as diffusers_logging

    from ..pipelines.streaming import load_pipeline

    enabled = diffusers_logging.is_progress_bar_enabled()
    if args.quiet:
        diffusers_logging.disable_progress_bar()
    try:
        return load_pipeline(args.model, args.scheduler, dtype=args.dtype, compile=args.compile, device=device)
    finally:
        if enabled:
            diffusers_logging.enable_progress_bar()


DTYPE_HELP = ("model precision (default: the checkpoint's as loaded, fp32; state, step buffers and scheduler stay "
              "float32): bf16 or fp16 is the fast path on a GPU (the official run used fp16); changes the bytes")
EPILOG = """several processes / GPUs (one process per GPU; also N CPU processes on a CPU machine):
  accelerate launch --multi_gpu --num_processes N -m teramind_hf.cli generate --genes STORE --out OUT.ome.zarr
without --multi_gpu, accelerate starts ONE process on a machine with fewer than 2 GPUs (a warning says so)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate morphology from a gene store into a resumable OME-Zarr image (multi-process with accelerate)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--genes", default=None,
        help="gene store (zarr with 'genes' + gene_names, .npy, .npz), a MERSCOPE folder or a SpatialData store "
        "(ingested beside --out); omitted: the main job, a held-out phantom region scored against its truth",
    )
    p.add_argument("--out", required=True, help="output OME-Zarr folder (path or fsspec URL)")
    p.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--region", default=None, help="y0,x0,h,w in image px, whole tiles (default: everything); a negative "
                   "first value needs no quoting (--region -256,0,...)")
    p.add_argument("--slices", default=None, help="a,b image sections [a, b) (default: all)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, else the model's: 8 for the embedded model, else 15)")
    p.add_argument("--scheduler", default=None,
                   help="default: the model's own (embedded model: dpm-sde); ddim (official), dpm (DPM-Solver++ multistep), dpm-sde (its SDE variant), unipc, euler, or a diffusers scheduler class name")
    p.add_argument("--preset", default=None, help="official (DDIM 15 steps, official grid), seamless (DPM-Solver++ SDE, 8 steps, diagonal grid: the embedded model's default), fast (DPM-Solver++, 5 log-SNR-uniform steps), fastest (UniPC, 4 steps) or turbo (the embedded model's distilled 3-step student with TCD: 4 model calls per tile; loads its own weights, teramind_hf/turbo_model, unless --model is given): scheduler, steps and grid schedule")
    p.add_argument("--exact", action="store_true",
                   help="with --region: add the margin the steps' dependency cone needs, so the region equals the same pixels of the full run")
    p.add_argument("--grid", default=None, help="grid schedule (default: the model's; the embedded model's is diagonal): official (parity), diagonal (2 grids blended at every step: removes most of the 64-px patch grid, 2x the model calls), blend (4 grid offsets blended at the last 2 steps), blend4 (at the last step), diagonal-last (the diagonal pair at the last step only), diagonal-last-shifted (the same with the first of 3 steps half a patch off: the turbo student's)")
    p.add_argument("--blend-offsets", default=None, help="grid offsets y,x px blended at the last --blend-steps steps, ';'-separated")
    p.add_argument("--blend-steps", type=blend_steps_arg, default=0, help="number of last steps that blend --blend-offsets, or 'all'")
    p.add_argument("--tile-order", default="raster", choices=("raster", "reverse"), help="tile visiting order (no effect on bytes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4, help="tile canvases per model call")
    p.add_argument("--overwrite", action="store_true", help="replace an output from a different run")
    p.add_argument("--no-halo", action="store_true", help="naive tiling baseline: each tile alone, no neighbour halo")
    p.add_argument("--um-per-px", type=float, default=None, help=f"pixel size (default: gene store attribute, else {MERSCOPE_UM_PER_PX})")
    p.add_argument("--section-spacing-um", type=float, default=None, help=f"z spacing (default: attribute, else {DEFAULT_SECTION_SPACING_UM})")
    add_origin_arguments(p, "default: the gene store's origin_um (written by `teramind ingest`)")
    p.add_argument("--memory-limit-mb", type=float, default=DEFAULT_STEP_BUFFER_LIMIT / 2**20, help="step buffers above this go to disk")
    p.add_argument("--shard-tiles", type=int, default=DEFAULT_SHARD_TILES,
                   help="level-0 zarr shard = work unit of N x N tiles (one writer each); 0: unsharded, tiles split one by one")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"), help=DTYPE_HELP)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (first tile-steps compile)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch default)")
    p.add_argument("--report-json", default=None, help="also write the run summary as JSON here")
    p.add_argument("--min-gene-overlap", type=float, default=0.5, help="least fraction of the model panel the genes must cover")
    p.add_argument("--spatialdata", default=None, metavar="SDATA.zarr", help="also write the output as SpatialData images here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
