"""Tera-scale generation: stream the tile sampler of Tera-MIND into a resumable OME-Zarr image.

The sampling itself is :class:`teramind_hf.sampling.TileSampler`, the loop the in-memory
:class:`TeraMindPipeline` runs too; this module gives it a zarr state backend and an output:

* **Step buffers.** x_t / x_{t-1} (and each tile's solver history for multistep solvers) as zarr arrays of one
  z chunk (chunks run one after another), one zarr chunk per tile: a zarr ``MemoryStore`` for small regions,
  a chunked store inside the output folder for larger ones or several processes.
* **Output.** The last step writes uint8 straight into level 0 of an OME-Zarr image; the pyramid follows.
* **Resume.** The run record (model hash, scheduler, steps, seed, region, grid schedule, ...) is stored in the
  output; an unfinished output with the same record continues from the progress record of the step store.
* **Scale-out.** Under ``accelerate launch`` the work units are split across processes, with a barrier per step.
* **Exact sub-regions.** ``exact=True`` computes the region plus the dependency-cone margin and writes only the
  region: its bytes equal the same pixels of a run over all the gene data.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..constants import DEFAULT_SHARD_TILES
from ..constants import DEFAULT_STEP_BUFFER_LIMIT as DEFAULT_MEMORY_LIMIT
from .gene_source import open_gene_source
from .ome_zarr import (
    DEFAULT_SECTION_SPACING_UM,
    DEFAULT_UM_PER_PX,
    PhysicalScale,
    build_level,
    create_image,
    level_blocks,
)
from ..sampling.grid import TileGrid
from ..sampling.presets import scheduler_from_name
from ..sampling.sampler import Processes
from ..sampling.schedule import GridSchedule
from ..sampling.state import open_zarr_state
from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler
from .pipeline_teramind import TeraMindPipeline
from .sampling_run import to_output_type
from .shard_files import block_writer
from ..output_guard import check_output_location, check_replaceable, remove_output
from .preflight import check_generate_arguments, preflight_generate, resolve_origin_um
from .run_record import (
    STEP_STORE,
    check_writable,
    describe_difference,
    read_existing_record,
    remove_step_store,
    run_record,
    step_store_exists,
)



@dataclass
class GenerateReport:
    """Summary of a :func:`generate_to_zarr` run (this process's view; totals are for the whole region)."""

    out: str
    voxels: int  # stains x sections x H x W written
    tiles: int  # z chunks x rows x cols
    steps: int
    tile_steps_run: int  # (stage, tile) units this process computed in this call (0 if already complete)
    seconds: float
    sampling_seconds: float  # of which in the stage loop (tiles), excluding setup, checks and the pyramid
    peak_rss_mb: float
    step_buffers: str  # "memory" or "disk"
    resumed_from_stage: int | None
    num_processes: int
    device: str = "cpu"  # where the model ran (this process)

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (
            f"{self.voxels:,} voxels ({self.tiles} tiles x {self.steps} steps, {self.num_processes} process(es) on "
            f"{self.device}, "
            f"step buffers in {self.step_buffers}) in {self.seconds:.1f} s = {self.voxels_per_second:,.0f} voxels/s; "
            f"peak RSS {self.peak_rss_mb:.0f} MB"
            + (f"; resumed at stage {self.resumed_from_stage}" if self.resumed_from_stage is not None else "")
        )


@dataclass(frozen=True)
class Region:
    """A region of the gene source in image px (whole tiles) and the image sections to generate."""

    y0: int
    x0: int
    height: int
    width: int
    start: int
    stop: int


def distributed_state():
    """accelerate's process state. Without CUDA it is built with ``cpu=True`` so that several processes started by
    ``accelerate launch --multi_gpu --num_processes N`` (torchrun) form a gloo group (MULTI_CPU)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


# ---------------------------------------------------------------------------------------------- entry point
def generate_to_zarr(
    pipe: TeraMindPipeline,
    genes: str | Path | Any,
    out: str | Path,
    *,
    region: tuple[int, int, int, int] | None = None,
    slices: tuple[int, int] | None = None,
    num_inference_steps: int | None = None,
    generator: torch.Generator | int = 0,
    batch_size: int = 4,
    tile_order: str = "raster",
    halo: bool = True,
    exact: bool = False,
    grid: GridSchedule | str | None = None,
    preset: str | None = None,
    overwrite: bool = False,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    um_per_px: float | None = None,
    section_spacing_um: float | None = None,
    min_gene_overlap: float = 0.5,
    callback_on_step_end: Callable | None = None,
    progress_bar: bool = True,
    shard_tiles: int | None = DEFAULT_SHARD_TILES,
    origin_um: tuple[float, float] | None = None,
    origin_unknown: bool = False,
    require_origin: bool = False,
) -> GenerateReport:
    """Generate the morphology of a region of a gene source into an OME-Zarr image at ``out``, resumably.

    Args:
        pipe: a loaded :class:`TeraMindPipeline` (any scheduler whose history can be kept per tile).
        genes: gene source (zarr group with ``genes`` + ``gene_names``, ``.npy``, ``.npz``, or a 4-D array).
        out: output folder (local path or fsspec URL), e.g. ``brain.ome.zarr``. If it holds an unfinished run
            with the same model, config, seed and region, that run continues; a different run is refused unless
            ``overwrite`` (which always starts afresh).
        region: ``(y0, x0, h, w)`` in image px, whole tiles (default: all of the gene data).
        slices: ``(start, stop)`` image sections (default: all).
        num_inference_steps: steps (default: the preset's, else the pipeline config's).
        generator: int seed or ``torch.Generator`` (one seed is drawn, as in the pipeline).
        batch_size, tile_order: tile canvases per model call and visiting order (no effect on the bytes).
        halo: False for the naive-tiling baseline (each tile alone, no neighbour halo).
        exact: compute ``region`` plus the dependency-cone margin, so its bytes equal the run over all the genes.
        grid, preset: grid schedule and preset, as in :meth:`TeraMindPipeline.__call__`.
        memory_limit_bytes: step buffers up to this size stay in memory (single process only), else on disk.
        um_per_px, section_spacing_um: physical scale; default from the gene source attributes, else
            0.108 um/px and 150 um.
        callback_on_step_end: ``fn(pipe, step_index, timestep, {"latents": ...})`` after each step of each z
            chunk, as in the pipeline (latents ``(1, stains, 2, h, w)`` of the computed region: small regions).
        shard_tiles: level 0 (and the pyramid) in zarr v3 shards of ``shard_tiles x shard_tiles`` tiles x 2
            sections x all stains; the tiles are split across processes in these blocks (work units,
            ``TileGrid.unit_tiles``), so each shard has one writer. None: unsharded, tiles split one by one. No
            effect on the pixel bytes.
        origin_um: micrometre position (y, x) of the gene source's pixel (0, 0); default: the store's
            ``origin_um`` attribute (``teramind ingest`` writes it). Level 0's index (y, x) is then at
            ``origin_um + (region origin + (y, x)) * um_per_px`` (the NGFF translation of every level).
        origin_unknown: say that the source has no known micron origin: the output is placed in the source's
            pixel frame and its run record says ``origin_um: null`` (``teramind export spatialdata`` then asks for
            one). Without either, a source with no origin (an array, a store without ``origin_um``) gets the same
            with a warning, or, with ``require_origin`` (the CLI), a ValueError before anything is written.
        require_origin: refuse a source with no origin unless ``origin_um`` or ``origin_unknown`` is given.
    Returns:
        a :class:`GenerateReport` (voxels, time, voxels/s, peak RSS).
    """
    import zarr
    from tqdm.auto import tqdm

    started = time.perf_counter()
    state = distributed_state()
    out = str(out)
    if isinstance(genes, (str, Path)):
        check_output_location(out, {"genes": genes}, "out")
    source = open_gene_source(genes)
    # the sampling run, checked once (as for the in-memory pipeline); work units = output shards, aligned to the
    # requested region (exact mode computes a margin around it)
    check_generate_arguments(memory_limit_bytes=memory_limit_bytes, um_per_px=um_per_px,
                             section_spacing_um=section_spacing_um, seed=generator, min_gene_overlap=min_gene_overlap)
    if shard_tiles is not None and (isinstance(shard_tiles, bool) or not isinstance(shard_tiles, int) or shard_tiles < 1):
        raise ValueError(f"shard_tiles must be >= 1 or None (unsharded), got {shard_tiles!r}")
    plan = pipe.prepare_sampling(
        source, region=region, slices=slices, num_inference_steps=num_inference_steps, generator=generator,
        batch_size=batch_size, tile_order=tile_order, halo=halo, exact=exact, grid=grid, preset=preset,
        min_gene_overlap=min_gene_overlap, unit_tiles=shard_tiles or 1,
    )
    preflight_generate(source, out, plan, progress_bar)
    origin = resolve_origin_um(source, origin_um, origin_unknown, required=require_origin)
    cfg, steps, schedule, seed, scheduler, solver = (pipe.unet.config, plan.num_inference_steps, plan.grid_schedule,
                                                     plan.seed, plan.scheduler, plan.solver)
    tile, tile_grid, sampler = pipe.config.tile_size, plan.tile_grid, plan.sampler
    reg = Region(*plan.region, *plan.sections)
    computed = Region(*plan.computed, *plan.sections)
    scale = PhysicalScale(
        um_per_px=float(um_per_px or source.attrs.get("um_per_px") or DEFAULT_UM_PER_PX),
        section_spacing_um=float(section_spacing_um or source.attrs.get("section_spacing_um") or DEFAULT_SECTION_SPACING_UM),
        origin_px=(reg.start, reg.y0, reg.x0),
        origin_um=origin or (0.0, 0.0),
    )
    record = {
        **run_record(pipe, scheduler, source, reg, seed, steps, halo, scale, schedule, exact), "shard_tiles": shard_tiles,
        # numbers, not a path to re-resolve: the export places the output from these alone
        "origin_um": list(origin) if origin is not None else None,
        "coordinate_system": str(source.attrs.get("coordinate_system") or "global"),
    }

    # decide what to do with the output folder: every process decides the same, only the main one mutates
    exists, previous = read_existing_record(out)
    resume = False
    if exists and previous is None:
        # not ours: refused, overwrite or not (an empty folder holds nothing to lose and is written afresh)
        check_replaceable(out, ["generate"], "out")
    elif exists and not overwrite:
        if isinstance(previous.get("run"), dict) and "origin_um" not in previous["run"]:
            raise FileExistsError(
                f"{out} was written by an older teramind whose run record has no micron origin (origin_um), so it "
                f"cannot be resumed or reused; pass --overwrite (overwrite=True) to generate it afresh"
            )
        if previous.get("run") != record:
            why = f"it differs in {describe_difference(previous.get('run', {}), record)}"
            raise FileExistsError(f"{out} exists and {why}; pass --overwrite (overwrite=True) to replace it")
        resume = True
    check_writable(out)
    state.wait_for_everyone()  # all have decided before the main process touches the folder

    shape = (cfg.out_channels, reg.stop - reg.start, reg.height, reg.width)
    buffers = 2 * (1 + len(solver.slots))  # two parities of x_t and of each history slot
    buffer_bytes = buffers * 4 * cfg.out_channels * cfg.num_slices * computed.height * computed.width
    # a step store left by an interrupted run is resumed whatever the memory limit says now
    on_disk = state.num_processes > 1 or buffer_bytes > memory_limit_bytes or (resume and step_store_exists(out))

    if state.is_main_process and not resume:
        if exists:
            remove_output(out, ["generate"], "out")
        group = zarr.open_group(out, mode="w")
        create_image(group, shape, tile, scale, shard_tiles, shard_slices=cfg.num_slices)
        group.attrs["teramind"] = {"run": record, "complete": False, "pyramid_levels_done": 0}
    state.wait_for_everyone()
    group = zarr.open_group(out, mode="r+")
    teramind_state = dict(group.attrs["teramind"])
    levels = [group[d["path"]] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]

    tiles = len(tile_grid.chunk_starts) * tile_grid.rows * tile_grid.cols
    resumed_from, sampling_seconds = None, 0.0
    if not teramind_state["complete"]:
        if on_disk:
            location = f"{out.rstrip('/')}/{STEP_STORE}"
            if state.is_main_process:
                open_zarr_state(location, tile_grid, solver.slots, cfg.out_channels, create=True)
            state.wait_for_everyone()
            store = open_zarr_state(location, tile_grid, solver.slots, cfg.out_channels, create=False)
        else:
            store = open_zarr_state(zarr.storage.MemoryStore(), tile_grid, solver.slots, cfg.out_channels, create=True)
        snapshot = store.snapshot() if on_disk else None
        state.wait_for_everyone()  # everyone has its snapshot before anyone writes progress
        if on_disk:
            sampler.processes = Processes(state)
        write_final = _output_writer(levels[0], tile_grid, reg)
        show = progress_bar and state.is_local_main_process
        sampling_started = time.perf_counter()
        resumed_from = sampler.run(
            store, snapshot=snapshot, chunks_together=False, write_final=write_final,
            progress_bar=lambda total: tqdm(total=total, desc="teramind generate (z chunk x step)", unit="step", disable=not show),
            callback=_stream_callback(pipe, callback_on_step_end),
        )
        sampling_seconds = time.perf_counter() - sampling_started
        _build_pyramid(group, levels, teramind_state.get("pyramid_levels_done", 0), state)
        if state.is_main_process:
            group.attrs["teramind"] = {**teramind_state, "complete": True, "pyramid_levels_done": len(levels)}
            remove_step_store(out)
        state.wait_for_everyone()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return GenerateReport(
        out=out, voxels=int(np.prod(shape)), tiles=tiles, steps=steps, tile_steps_run=sampler.tile_steps_run,
        seconds=time.perf_counter() - started, sampling_seconds=sampling_seconds, peak_rss_mb=peak_mb,
        step_buffers="disk" if on_disk else "memory", resumed_from_stage=resumed_from, num_processes=state.num_processes,
        device=str(sampler.device),
    )


def _output_writer(image, grid: TileGrid, region: Region) -> Callable:
    """Write a batch of tiles' final states as uint8 into level 0 (c, z, y, x): only tiles inside the requested
    region (exact mode computes a margin around it), trimming a z chunk that overhangs the stop. Tiles of one z
    chunk that fill a rectangle (a batch along a work-unit row) go in one write: one rewrite of their shard
    instead of one per tile, straight into the shard file where :mod:`.shard_files` allows it."""
    dy, dx = region.y0 - grid.origin[0], region.x0 - grid.origin[1]
    t = grid.tile
    write_block = block_writer(image)
    stains = slice(0, image.shape[0])

    def write(batch: list[tuple[int, int, int]], tile_states: torch.Tensor) -> None:
        by_chunk: dict[int, dict[tuple[int, int], np.ndarray]] = {}
        for (k, row, col), tile_state in zip(batch, tile_states):
            y, x = row * t - dy, col * t - dx
            if not (0 <= y < region.height and 0 <= x < region.width):
                continue
            keep = min(grid.num_slices, region.stop - grid.chunk_starts[k])
            by_chunk.setdefault(k, {})[(y // t, x // t)] = to_output_type(tile_state[:, :keep].clamp(-1, 1), "uint8")
        for k, tiles in by_chunk.items():
            z_out = grid.chunk_starts[k] - region.start
            rows, cols = sorted({r for r, _ in tiles}), sorted({c for _, c in tiles})
            rectangle = len(tiles) == len(rows) * len(cols) and rows == list(range(rows[0], rows[-1] + 1)) and cols == list(range(cols[0], cols[-1] + 1))
            if not rectangle:
                for (r, c), pixels in tiles.items():
                    write_block((stains, slice(z_out, z_out + pixels.shape[1]), slice(r * t, (r + 1) * t), slice(c * t, (c + 1) * t)), pixels)
                continue
            first = next(iter(tiles.values()))
            block = np.empty((*first.shape[:2], len(rows) * t, len(cols) * t), dtype=first.dtype)
            for (r, c), pixels in tiles.items():
                block[:, :, (r - rows[0]) * t : (r - rows[0] + 1) * t, (c - cols[0]) * t : (c - cols[0] + 1) * t] = pixels
            write_block((stains, slice(z_out, z_out + block.shape[1]), slice(rows[0] * t, (rows[-1] + 1) * t),
                         slice(cols[0] * t, (cols[-1] + 1) * t)), block)

    return write


def _stream_callback(pipe: TeraMindPipeline, callback_on_step_end: Callable | None) -> Callable | None:
    if callback_on_step_end is None:
        return None

    def callback(step, timestep, latents_fn, model_output_fn):
        out = callback_on_step_end(pipe, step, timestep, {"latents": latents_fn()}) or {}
        return out.get("latents")

    return callback


def _build_pyramid(group, levels: list, levels_done: int, state) -> None:
    """Levels 1.. as 2x2 means of the previous one, chunks split across processes, a barrier per level."""
    for level in range(max(levels_done, 1), len(levels)):
        target = levels[level]
        jobs = level_blocks(target)  # one writer per shard (or chunk)
        with state.split_between_processes(jobs) as mine:
            build_level(levels[level - 1], target, mine)
        state.wait_for_everyone()
        if state.is_main_process:
            attrs = dict(group.attrs["teramind"])
            group.attrs["teramind"] = {**attrs, "pyramid_levels_done": level + 1}


# ---------------------------------------------------------------------------------------------- CLI
def load_pipeline(
    model: str | None, scheduler: str | None = None, dtype: str | torch.dtype | None = None, compile: bool = False,
    device: str | torch.device | None = None,
) -> TeraMindPipeline:
    """The pipeline from a folder / Hub repo (default: the embedded model), with its own scheduler or the named one
    (``ddim``, ``dpm``, ``dpm-sde``, ``unipc``, ``euler`` or a diffusers scheduler class name), the model in
    ``dtype`` (fp32, bf16, fp16; None: as loaded, float32 as in diffusers; state and scheduler stay float32), on
    ``device`` (None: where it loads, the CPU; see :func:`teramind_hf.pipelines.device.resolve_device`) and
    optionally compiled."""
    from .acceleration import cast_unet

    pipe = TeraMindPipeline.from_pretrained(model)
    if dtype is not None:
        cast_unet(pipe.unet, dtype)  # (from_pretrained's keyword for it differs across diffusers versions)
    if device is not None:
        # nn.Module.to: diffusers' pipeline/ModelMixin ``to`` warn about half precision on the CPU on every move
        torch.nn.Module.to(pipe.unet, torch.device(device))
    if compile:
        pipe.enable_compile()
    official_ddim = isinstance(pipe.scheduler, BoundaryAwareScheduler) and pipe.scheduler.config.inner_scheduler == "DDIMScheduler"
    if scheduler is not None and not (scheduler == "ddim" and official_ddim):  # (an official DDIM is kept as saved)
        pipe.scheduler = scheduler_from_name(scheduler, pipe.scheduler)
    return pipe
