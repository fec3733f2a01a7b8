"""Tera-scale generation: stream the synchronous tile-grid sampling of Tera-MIND into an OME-Zarr image.

The in-memory :class:`TeraMindPipeline` holds a whole region; this module produces the same bytes for regions
of any size with memory independent of the region:

* **Step buffers.** Only two states are alive: ``x_t`` (read) and ``x_{t-1}`` (written), each a zarr array
  ``(1, stains, 2 slices, H, W)`` float32 with one chunk per tile. The independent 2-slice z chunks are
  generated one after another, so the buffers hold one z chunk whatever the number of sections. Small regions keep them in a zarr
  ``MemoryStore``; larger ones (or several processes) in a chunked store inside the output folder.
* **One read per tile and step.** A tile's canvas (tile + halo from its 8 neighbours, ``fill_value`` outside
  the region) is one slice of ``x_t``; its gene canvas is read lazily from the gene source.
* **Resume.** ``progress[z chunk, row, col]`` holds how many stages a tile has completed (0: initial noise
  written, i + 1: step i written). A tile's record is written after its data chunk; zarr writes each chunk
  object atomically (local: temp file + rename), so a half-written chunk is never taken as done and is simply
  redone. The last step writes uint8 straight into level 0 of the output.
* **Scale-out.** Under ``accelerate launch`` each stage's tiles are split across processes with
  ``PartialState().split_between_processes``, with a barrier between stages (every canvas of step i reads the
  state all tiles reached after step i - 1).

Results do not depend on batch size, number of processes, tile order or interruption: each tile's initial
noise is seeded by ``(seed, z chunk, row, col)``, the model is batch-invariant for a scalar timestep, and the
DDIM update is elementwise.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import DEFAULT_SHARD_TILES
from ..constants import DEFAULT_STEP_BUFFER_LIMIT as DEFAULT_MEMORY_LIMIT
from .acceleration import is_compiled
from .gene_source import GeneSource, RegionGenes, open_gene_source
from .ome_zarr import (
    DEFAULT_SECTION_SPACING_UM,
    DEFAULT_UM_PER_PX,
    PhysicalScale,
    build_level,
    create_image,
    level_blocks,
)
from .pipeline_teramind import TeraMindPipeline, _draw_seed, _to_output_type, z_chunks
from .preflight import check_region, preflight_generate, probe_writable

RECORD_FORMAT = "teramind-generate/1"
STEP_STORE = "_teramind_steps"  # child of the output group holding step buffers and progress
STATELESS_SCHEDULERS = ("DDIMScheduler",)


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

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (
            f"{self.voxels:,} voxels ({self.tiles} tiles x {self.steps} steps, {self.num_processes} process(es), "
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


# ---------------------------------------------------------------------------------------------- validation
def resolve_region(
    source: GeneSource, gene_bin: int, tile_size: int, region: tuple[int, int, int, int] | None,
    slices: tuple[int, int] | None,
) -> Region:  # fmt: skip
    """Check the requested region against the gene data (named errors) and fill defaults (everything)."""
    return Region(*check_region(source.shape, gene_bin, tile_size, region, slices, source.location))


def check_streamable_scheduler(pipe: TeraMindPipeline) -> None:
    """Streaming steps tiles independently, which needs a stateless elementwise update (DDIM)."""
    inner = type(pipe.scheduler.inner).__name__
    if inner not in STATELESS_SCHEDULERS:
        raise ValueError(
            f"streaming generation supports the stateless DDIM update only, not {inner}: multistep schedulers "
            "(DPM-Solver, UniPC, ...) keep per-sample history and a step counter inside the scheduler object, "
            "which tiles stepped in separate batches and processes would corrupt. Use --scheduler ddim, or the "
            "in-memory TeraMindPipeline for small regions."
        )


def model_fingerprint(unet: torch.nn.Module) -> str:
    """sha256 of the weights (sorted names, raw bytes): a resumed run must use the very same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_record(
    pipe: TeraMindPipeline, source: GeneSource, region: Region, seed: int, steps: int, halo: bool,
    scale: PhysicalScale,
) -> dict:  # fmt: skip
    """What determines the output bytes; stored in the output and compared on resume."""
    record = {
        "format": RECORD_FORMAT,
        "model_sha256": model_fingerprint(pipe.unet),
        "model_config": dict(pipe.unet.config),
        "model_dtype": str(pipe.unet.dtype).removeprefix("torch."),  # the bytes depend on it (and on compiling)
        "model_compiled": is_compiled(pipe.unet),
        "scheduler_config": dict(pipe.scheduler.config),
        "num_inference_steps": steps,
        "seed": seed,
        "region_yxhw": [region.y0, region.x0, region.height, region.width],
        "slices": [region.start, region.stop],
        "halo": halo,
        "genes": {"location": source.location, "shape": list(source.shape), "gene_names": source.gene_names},
        "um_per_px": scale.um_per_px,
        "section_spacing_um": scale.section_spacing_um,
    }
    return json.loads(json.dumps(record, default=str))


# ---------------------------------------------------------------------------------------------- output folder
def _filesystem(out: str):
    import fsspec

    return fsspec.core.url_to_fs(out)


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def check_writable(out: str) -> None:
    """Fail early (PermissionError) if the output location cannot be written, before anything is touched."""
    fs, path = _filesystem(out)
    if not _is_local(fs):
        return
    probe_dir = Path(path)
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise FileExistsError(f"{probe_dir} exists and is not a folder: cannot write {out}")
    probe_writable(probe_dir, f"cannot write {out}: output location")


def read_existing_record(out: str) -> tuple[bool, dict | None]:
    """(exists, teramind attributes or None if it is not one of our outputs)."""
    import zarr

    fs, path = _filesystem(out)
    if not fs.exists(path):
        return False, None
    try:
        group = zarr.open_group(out, mode="r")
    except Exception:
        return True, None
    state = group.attrs.get("teramind")
    return True, dict(state) if isinstance(state, dict) else None


def describe_difference(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if key == "genes" and isinstance(a, dict) and isinstance(b, dict):
            sub = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            parts.append(f"genes ({', '.join(sub)})")
        elif isinstance(a, (dict, list)) or isinstance(b, (dict, list)) or key == "model_sha256":
            parts.append(key)
        else:
            parts.append(f"{key} ({a!r} -> {b!r})")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- sampler
class StreamingTileSampler:
    """Run the stages (initial noise, then each denoising step) of one region into an output group."""

    def __init__(
        self, pipe: TeraMindPipeline, genes: RegionGenes, region: Region, seed: int, steps: int, halo: bool,
        batch_size: int, step_group, image, state, progress_bar: bool, unit_tiles: int = 1,
    ):  # fmt: skip
        cfg, sched = pipe.unet.config, pipe.scheduler
        self.pipe, self.genes, self.region, self.seed, self.steps, self.halo = pipe, genes, region, seed, steps, halo
        self.batch_size, self.state, self.show_progress = batch_size, state, progress_bar
        self.tile, self.halo_px, self.fill = sched.config.tile_size, sched.config.halo, sched.config.fill_value
        self.gene_bin = cfg.gene_bin
        self.rows, self.cols = sched.tile_grid(region.height, region.width)
        self.chunk_starts = z_chunks(region.start, region.stop, cfg.num_slices)
        self.stains, self.slices_per_chunk = cfg.out_channels, cfg.num_slices
        self.step_buffers = (step_group["x_a"], step_group["x_b"])
        self.progress = step_group["progress"]
        self.image = image
        self.unit_tiles = unit_tiles

    @property
    def tiles(self) -> int:
        return len(self.chunk_starts) * self.rows * self.cols

    # -- geometry
    def _tile_slices(self, row: int, col: int) -> tuple[slice, slice]:
        t = self.tile
        return slice(row * t, (row + 1) * t), slice(col * t, (col + 1) * t)

    def read_canvas(self, buffer, k: int, row: int, col: int, timestep) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input canvas (stains, 2, canvas, canvas), current tile state (stains, 2, tile, tile))."""
        t, h = self.tile, self.halo_px
        if not self.halo:
            ys, xs = self._tile_slices(row, col)
            x_tile = torch.from_numpy(np.asarray(buffer[0, :, :, ys, xs]))
            scaled = self.pipe.scheduler.scale_model_input(x_tile, timestep)
            return F.pad(scaled, (h, h, h, h), value=self.fill), x_tile
        y0, x0 = row * t - h, col * t - h
        ya, yb = max(y0, 0), min(y0 + t + 2 * h, self.region.height)
        xa, xb = max(x0, 0), min(x0 + t + 2 * h, self.region.width)
        window = torch.from_numpy(np.asarray(buffer[0, :, :, ya:yb, xa:xb]))
        x_tile = window[..., row * t - ya : row * t - ya + t, col * t - xa : col * t - xa + t]
        scaled = self.pipe.scheduler.scale_model_input(window, timestep)
        pad = (xa - x0, x0 + t + 2 * h - xb, ya - y0, y0 + t + 2 * h - yb)
        return F.pad(scaled, pad, value=self.fill), x_tile

    def gene_canvas(self, k: int, row: int, col: int) -> torch.Tensor:
        tile_bins, halo_bins = self.tile // self.gene_bin, self.halo_px // self.gene_bin
        canvas = self.genes.canvas(
            self.chunk_starts[k], row * tile_bins - halo_bins, col * tile_bins - halo_bins, tile_bins + 2 * halo_bins
        )
        if not self.halo:  # naive tiling: the tile alone, as if it were a one-tile region
            inside = torch.zeros_like(canvas)
            inside[..., halo_bins:-halo_bins, halo_bins:-halo_bins] = 1
            canvas = canvas * inside
        return canvas

    # -- stages
    def work_units(self) -> list[list[tuple[int, int]]]:
        """Blocks of ``unit_tiles x unit_tiles`` tiles (raster order, clipped at the region edge): the unit split
        across processes, and the level-0 shard its owner alone writes."""
        u = self.unit_tiles
        return [
            [(r, c) for r in range(r0, min(r0 + u, self.rows)) for c in range(c0, min(c0 + u, self.cols))]
            for r0 in range(0, self.rows, u)
            for c0 in range(0, self.cols, u)
        ]

    def stage_jobs(self, k: int, stage: int, snapshot: np.ndarray | None) -> list[tuple[int, int, int]]:
        """This process's tiles of z chunk ``k`` at a stage, without those the snapshot (rows, cols) records done."""
        with distributed_state().split_between_processes(self.work_units()) as mine:
            tiles = [(k, r, c) for unit in mine for r, c in unit]
        if snapshot is not None:
            tiles = [(k, r, c) for k, r, c in tiles if snapshot[r, c] < stage + 1]
        return tiles

    def chunk_plan(self, snapshot: np.ndarray | None) -> list[tuple[int, int]]:
        """(z chunk, first stage to run) of the chunks not finished; chunks run one after another, so the step
        buffers hold one z chunk and their size does not grow with the number of sections."""
        plan = []
        for k in range(len(self.chunk_starts)):
            first = -1 if snapshot is None else int(snapshot[k].min())
            if first < self.steps:
                plan.append((k, first))
        return plan

    def run_initial_noise(self, jobs: list[tuple[int, int, int]], bar) -> None:
        scheduler = self.pipe.scheduler
        for k, r, c in jobs:
            noise = scheduler.initial_noise(
                self.seed, (self.chunk_starts[k], r, c), (self.stains, self.slices_per_chunk, self.tile, self.tile)
            )
            ys, xs = self._tile_slices(r, c)
            self.step_buffers[0][0, :, :, ys, xs] = noise.numpy()
            self.progress[k, r, c] = 0
            bar.update(1)

    def run_step(self, step: int, jobs: list[tuple[int, int, int]], bar) -> None:
        scheduler, unet = self.pipe.scheduler, self.pipe.unet
        t = scheduler.timesteps[step]
        source = self.step_buffers[step % 2]
        last = step == self.steps - 1
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b : b + self.batch_size]
            canvases, states = zip(*(self.read_canvas(source, k, r, c, t) for k, r, c in batch))
            gene_batch = torch.stack([self.gene_canvas(k, r, c) for k, r, c in batch])
            device, dtype = self.pipe._execution_device, unet.dtype
            eps = unet(
                torch.stack(canvases).to(device=device, dtype=dtype), t, gene_batch.to(device=device, dtype=dtype),
                path="collage",
            ).sample.float().cpu()  # fmt: skip
            prev = scheduler.step(eps, t, torch.stack(states)).prev_sample
            for (k, r, c), tile_state in zip(batch, prev):
                if last:
                    self._write_output_tile(k, r, c, tile_state)
                else:
                    ys, xs = self._tile_slices(r, c)
                    self.step_buffers[(step + 1) % 2][0, :, :, ys, xs] = tile_state.numpy()
                self.progress[k, r, c] = step + 1
            bar.update(len(batch))

    def _write_output_tile(self, k: int, row: int, col: int, tile_state: torch.Tensor) -> None:
        """uint8 of the final state into level 0 (c, z, y, x), trimming a chunk that overhangs the stop."""
        z_out = self.chunk_starts[k] - self.region.start
        keep = min(self.slices_per_chunk, self.region.stop - self.region.start - z_out)
        pixels = _to_output_type(tile_state[:, :keep].clamp(-1, 1), "uint8")
        ys, xs = self._tile_slices(row, col)
        self.image[:, z_out : z_out + keep, ys, xs] = pixels

    def run(self, snapshot: np.ndarray | None) -> tuple[int, int | None]:
        """All stages not yet done; returns (tile-stages computed here, first stage that had work if resumed)."""
        from tqdm.auto import tqdm

        state = distributed_state()
        plan = self.chunk_plan(snapshot)
        resumed = None
        if snapshot is not None and snapshot.max() >= 0 and plan:
            resumed = plan[0][1]
        total = sum(
            len(self.stage_jobs(k, first, None if snapshot is None else snapshot[k])) + (self.steps - 1 - first) * len(self.stage_jobs(k, 0, None))
            for k, first in plan
        )
        bar = tqdm(total=total, desc="teramind generate (stage x tile)", unit="tile", disable=not self.show_progress)
        self.pipe.scheduler.set_timesteps(self.steps)
        was_training = self.pipe.unet.training
        self.pipe.unet.eval()
        done = 0
        with torch.no_grad():
            for k, first in plan:
                for stage in range(first, self.steps):
                    jobs = self.stage_jobs(k, stage, snapshot[k] if snapshot is not None and stage == first else None)
                    if stage == -1:
                        self.run_initial_noise(jobs, bar)
                    else:
                        self.run_step(stage, jobs, bar)
                    done += len(jobs)
                    state.wait_for_everyone()  # step i + 1 reads what every process wrote at step i
        bar.close()
        self.pipe.unet.train(was_training)
        return done, resumed


# ---------------------------------------------------------------------------------------------- entry point
def generate_to_zarr(
    pipe: TeraMindPipeline,
    genes: str | Path | Any,
    out: str | Path,
    *,
    region: tuple[int, int, int, int] | None = None,
    slices: tuple[int, int] | None = None,
    num_inference_steps: int = 15,
    generator: torch.Generator | int = 0,
    batch_size: int = 4,
    halo: bool = True,
    overwrite: bool = False,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    um_per_px: float | None = None,
    section_spacing_um: float | None = None,
    min_gene_overlap: float = 0.5,
    progress_bar: bool = True,
    shard_tiles: int | None = DEFAULT_SHARD_TILES,
) -> GenerateReport:
    """Generate the morphology of a region of a gene source into an OME-Zarr image at ``out``, resumably.

    Args:
        pipe: a loaded :class:`TeraMindPipeline` with a DDIM scheduler.
        genes: gene source (zarr group with ``genes`` + ``gene_names``, ``.npy``, ``.npz``, or a 4-D array).
        out: output folder (local path or fsspec URL), e.g. ``brain.ome.zarr``. If it holds an unfinished run
            with the same model, config, seed and region, that run continues; a different run is refused unless
            ``overwrite`` (which always starts afresh).
        region: ``(y0, x0, h, w)`` in image px, whole tiles (default: all of the gene data).
        slices: ``(start, stop)`` image sections (default: all).
        generator: int seed or ``torch.Generator`` (one seed is drawn, as in the pipeline).
        batch_size: tile canvases per model call (no effect on the bytes).
        halo: False for the naive-tiling baseline (each tile alone, no neighbour halo).
        memory_limit_bytes: step buffers up to this size stay in memory (single process only), else on disk.
        um_per_px, section_spacing_um: physical scale; default from the gene source attributes, else
            0.108 um/px and 150 um.
        shard_tiles: level 0 (and the pyramid) in zarr v3 shards of ``shard_tiles x shard_tiles`` tiles x 2
            sections x all stains; the tiles are split across processes in these blocks (work units), so each
            shard has one writer. None: unsharded, tiles split one by one. No effect on the pixel bytes.
    Returns:
        a :class:`GenerateReport` (voxels, time, voxels/s, peak RSS).
    """
    import zarr

    started = time.perf_counter()
    state = distributed_state()
    out = str(out)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    check_streamable_scheduler(pipe)
    cfg, sched = pipe.unet.config, pipe.scheduler
    source = open_gene_source(genes)
    reg = Region(*preflight_generate(pipe, source, out, region, slices, num_inference_steps, batch_size, memory_limit_bytes, um_per_px, section_spacing_um, generator, min_gene_overlap, progress_bar))
    region_genes = RegionGenes(
        source, cfg, (reg.y0 // cfg.gene_bin, reg.x0 // cfg.gene_bin),
        (reg.height // cfg.gene_bin, reg.width // cfg.gene_bin), min_gene_overlap,
    )  # fmt: skip
    scale = PhysicalScale(
        um_per_px=float(um_per_px or source.attrs.get("um_per_px") or DEFAULT_UM_PER_PX),
        section_spacing_um=float(section_spacing_um or source.attrs.get("section_spacing_um") or DEFAULT_SECTION_SPACING_UM),
        origin_px=(reg.start, reg.y0, reg.x0),
    )
    seed = _draw_seed(generator)
    if shard_tiles is not None and shard_tiles < 1:
        raise ValueError(f"shard_tiles must be >= 1 or None (unsharded), got {shard_tiles}")
    record = {**run_record(pipe, source, reg, seed, num_inference_steps, halo, scale), "shard_tiles": shard_tiles}

    # decide what to do with the output folder: every process decides the same, only the main one mutates
    exists, previous = read_existing_record(out)
    resume = False
    if exists and not overwrite:
        if previous is None or previous.get("run") != record:
            why = "it is not a teramind output" if previous is None else f"it differs in {describe_difference(previous.get('run', {}), record)}"
            raise FileExistsError(f"{out} exists and {why}; pass --overwrite (overwrite=True) to replace it")
        resume = True
    check_writable(out)
    state.wait_for_everyone()  # all have decided before the main process touches the folder

    shape = (cfg.out_channels, reg.stop - reg.start, reg.height, reg.width)
    chunks = len(z_chunks(reg.start, reg.stop, cfg.num_slices))
    buffer_shape = (1, cfg.out_channels, cfg.num_slices, reg.height, reg.width)  # one z chunk at a time
    buffer_bytes = 2 * 4 * int(np.prod(buffer_shape))
    # a step store left by an interrupted run is resumed whatever the memory limit says now
    on_disk = state.num_processes > 1 or buffer_bytes > memory_limit_bytes or (resume and _step_store_exists(out))

    if state.is_main_process and not resume:
        if exists:
            fs, path = _filesystem(out)
            fs.rm(path, recursive=True)
        group = zarr.open_group(out, mode="w")
        create_image(group, shape, sched.config.tile_size, scale, shard_tiles, shard_slices=cfg.num_slices)
        group.attrs["teramind"] = {"run": record, "complete": False, "pyramid_levels_done": 0}
    state.wait_for_everyone()
    group = zarr.open_group(out, mode="r+")
    teramind_state = dict(group.attrs["teramind"])
    levels = [group[d["path"]] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]

    tiles = chunks * (reg.height // sched.config.tile_size) * (reg.width // sched.config.tile_size)
    computed, resumed_from, sampling_seconds = 0, None, 0.0
    if not teramind_state["complete"]:
        step_group = _open_step_store(out, buffer_shape, chunks, sched.config.tile_size, on_disk, state, shard_tiles)
        snapshot = None
        if on_disk and "progress" in step_group:
            snapshot = np.asarray(step_group["progress"][...])
            if snapshot.min() < 0 and snapshot.max() < 0:
                snapshot = None
        state.wait_for_everyone()  # everyone has its snapshot before anyone writes progress
        sampler = StreamingTileSampler(
            pipe, region_genes, reg, seed, num_inference_steps, halo, batch_size, step_group, levels[0],
            state, progress_bar and state.is_local_main_process, shard_tiles or 1,
        )  # fmt: skip
        sampling_started = time.perf_counter()
        computed, resumed_from = sampler.run(snapshot)
        sampling_seconds = time.perf_counter() - sampling_started
        _build_pyramid(group, levels, teramind_state.get("pyramid_levels_done", 0), state)
        if state.is_main_process:
            group.attrs["teramind"] = {**teramind_state, "complete": True, "pyramid_levels_done": len(levels)}
            _remove_step_store(out)
        state.wait_for_everyone()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return GenerateReport(
        out=out, voxels=int(np.prod(shape)), tiles=tiles, steps=num_inference_steps, tile_steps_run=computed,
        seconds=time.perf_counter() - started, sampling_seconds=sampling_seconds, peak_rss_mb=peak_mb, step_buffers="disk" if on_disk else "memory",
        resumed_from_stage=resumed_from, num_processes=state.num_processes,
    )  # fmt: skip


def _open_step_store(out: str, buffer_shape: tuple, num_chunks: int, tile: int, on_disk: bool, state, unit_tiles=None):
    """The two step buffers and the progress record (created once; reopened on resume)."""
    import zarr

    chunk = (1, buffer_shape[1], buffer_shape[2], tile, tile)
    progress_shape = (num_chunks, buffer_shape[3] // tile, buffer_shape[4] // tile)
    if not on_disk:
        group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    else:
        location = f"{out.rstrip('/')}/{STEP_STORE}"
        if state.is_main_process:
            group = zarr.open_group(location, mode="a")
            if "progress" not in group:
                _create_step_arrays(group, buffer_shape, chunk, progress_shape, unit_tiles)
        state.wait_for_everyone()
        return zarr.open_group(location, mode="r+")
    _create_step_arrays(group, buffer_shape, chunk, progress_shape, unit_tiles)
    return group


def _create_step_arrays(group, buffer_shape, chunk, progress_shape, unit_tiles=None) -> None:
    for name in ("x_a", "x_b"):
        group.create_array(name, shape=buffer_shape, chunks=chunk, dtype="float32", fill_value=0.0, compressors=None)
    # progress last: its presence means the buffers exist
    # one record per tile; sharded by work unit (its owner is the only writer), ~190 k objects for a whole brain
    # instead of ~3 M. The step buffers stay one object per tile: a sharded buffer would rewrite its whole
    # shard for every tile written, at every step.
    shards = None if unit_tiles is None else (1, min(unit_tiles, progress_shape[1]), min(unit_tiles, progress_shape[2]))
    group.create_array("progress", shape=progress_shape, chunks=(1, 1, 1), shards=shards, dtype="int32", fill_value=-1,
                       compressors=None)  # fmt: skip


def _step_store_exists(out: str) -> bool:
    fs, path = _filesystem(out)
    return fs.exists(f"{path.rstrip('/')}/{STEP_STORE}/progress")


def _remove_step_store(out: str) -> None:
    fs, path = _filesystem(out)
    target = f"{path.rstrip('/')}/{STEP_STORE}"
    if fs.exists(target):
        fs.rm(target, recursive=True)


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
    model: str | None, scheduler: str = "ddim", dtype: str | torch.dtype | None = None, compile: bool = False
) -> TeraMindPipeline:
    """The pipeline from a folder / Hub repo (default: the embedded model), with the requested scheduler, the
    model in ``dtype`` (fp32, bf16, fp16; state and scheduler stay float32) and optionally compiled."""
    from .acceleration import cast_unet

    pipe = TeraMindPipeline.from_pretrained(model)
    cast_unet(pipe.unet, dtype)  # (from_pretrained's keyword for it differs across diffusers versions)
    if compile:
        pipe.enable_compile()
    if scheduler == "dpm":
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.inner.config)
    elif scheduler != "ddim":
        raise ValueError(f"--scheduler must be ddim or dpm, got {scheduler!r}")
    return pipe


