"""Engine floor: the work outside the model per tile-step of `teramind generate`, in CPU ms (all threads) and wall ms.

The embedded model (``TeraMindPipeline.from_pretrained()``) keeps its config and weights, but its forward is an
instant stand-in that returns zeros of the collage output's shape, so everything the engine does around the model
is what is timed: canvases, gene canvases, the solver step, the step-buffer reads and writes (on disk: memory
limit 0), progress records and the output writer. The region is a 1024 x 1024 px x 2-section phantom saved as a
gene store; torch runs 1 thread. The samplers compared run interleaved (A B, then B A, ...) and medians are
printed:

* ``default``: the embedded model's own default (DPM-Solver++ 2M SDE, 8 steps, diagonal grid);
* ``official``: ``preset="official"`` (DDIM, 15 steps, official grid);
* ``default-diffusers-updates`` (not run unless named): the default with diffusers' own DPM-Solver++ update
  expressions instead of the in-place ones (``TileSolver.allow_in_place_updates = False``; same bytes).

A tile-step is one tile at one denoising step (the initial-noise stage is not counted), counted from the run
(``GenerateReport.tile_steps_run`` less the noise stage). Two figures per sampler:

* *loop*: CPU and wall time of the sampling loop (``TileSampler.run``) per tile-step: the engine floor a GPU
  run pays per tile-step on top of the model;
* *call*: the whole ``generate_to_zarr`` call (setup, checks, run record, pyramid) per tile-step.

The loop figure includes the stand-in's own forward (allocating and zeroing its output); that part is printed
too, as CPU time of the thread inside ``forward``.

    python benchmarks/engine_floor.py                       # default and official, 5 rounds
    python benchmarks/engine_floor.py --samplers default,default-diffusers-updates --rounds 6
    python benchmarks/engine_floor.py --samplers default --rounds 3 --profile /tmp/floor.prof
    python benchmarks/engine_floor.py --samplers default --rounds 3 --phases   # CPU ms per tile-step by phase

``--phases`` wraps the engine's phases (model inputs and, within them, the canvas copies from the cached tiles;
solver noise; history reads; model output with the blend; solver step; the write-behind jobs and, within them, the
x_{t-1} and history writes and the progress records; the gene canvases' loading, once per z chunk) with the CPU
time of the thread running them (``time.thread_time``), summed over the timed rounds of all samplers named; phases
nest, so they do not add up to the loop.
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import tempfile
import time
from pathlib import Path

import torch
import zarr

from _perf_common import machine_facts
from teramind_hf import DEFAULT_MODEL_UM_PER_PX, GeneMorphUNet3DModel, TeraMindPipeline
from teramind_hf.data.phantom import make_phantom
from teramind_hf.models.unet_genemorph_3d import GeneMorphUNet3DOutput
from teramind_hf.pipelines.streaming import generate_to_zarr
from teramind_hf.sampling.gene_canvas import GeneCanvases
from teramind_hf.sampling.model_inputs import ModelInputs
from teramind_hf.sampling.sampler import TileSampler
from teramind_hf.sampling.solver_state import TileSolver
from teramind_hf.sampling.state import ZarrState

TARGET_MS = 5.0
SAMPLERS = {"default": {}, "official": {"preset": "official"}, "default-diffusers-updates": {}}
DIFFUSERS_UPDATES = {"default-diffusers-updates"}  # the default with diffusers' own DPM-Solver++ update expressions


class InstantUNet(GeneMorphUNet3DModel):
    """The model with an instant forward: zeros of the collage output's shape (the canvas less half a patch on
    every side). Same config, weights and class hierarchy, so the engine runs exactly as with the real model."""

    canvases = 0  # canvases seen (model calls x batch), to cross-check the tile-step count
    cpu_s = 0.0  # CPU seconds of the calling thread inside forward: the stand-in's own work (its zeros)

    def forward(self, sample, timestep, genes, path="collage", return_dict=True, patch_ids=None):  # ids: no encoder here
        cpu = time.thread_time()
        half = self.config.sample_size // 2
        b, _, z, h, w = sample.shape
        InstantUNet.canvases += b
        out = torch.zeros(b, self.config.out_channels, z, h - 2 * half, w - 2 * half, dtype=sample.dtype, device=sample.device)
        InstantUNet.cpu_s += time.thread_time() - cpu
        return GeneMorphUNet3DOutput(sample=out) if return_dict else (out,)


def instant_pipeline() -> TeraMindPipeline:
    pipe = TeraMindPipeline.from_pretrained()
    instant = InstantUNet.from_config(pipe.unet.config)
    instant.load_state_dict(pipe.unet.state_dict())
    pipe.register_modules(unet=instant.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


class LoopTimer:
    """CPU and wall seconds spent in ``TileSampler.run`` (wrapped for the benchmark; the engine is unchanged)."""

    def __init__(self):
        self.cpu = self.wall = 0.0
        original = TileSampler.run

        def timed(sampler, *args, **kwargs):
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return original(sampler, *args, **kwargs)
            finally:
                self.cpu += time.process_time() - cpu
                self.wall += time.perf_counter() - wall

        TileSampler.run = timed

    def reset(self) -> None:
        self.cpu = self.wall = 0.0


class PhaseTimer:
    """CPU seconds of the thread running each wrapped engine method (``--phases``; the engine is unchanged)."""

    PHASES = (
        (TileSampler, "read_model_inputs"), (ModelInputs, "read_canvases"), (ModelInputs, "copy_within"),
        (ZarrState, "read_history_into"), (TileSolver, "batch_noise"), (TileSampler, "model_output"),
        (TileSolver, "step"), (TileSampler, "_write_step"), (ZarrState, "write_x"), (ZarrState, "write_history"),
        (ZarrState, "mark_many"), (GeneCanvases, "load"),
    )

    def __init__(self):
        self.cpu: dict[str, float] = {}
        self.on = False
        for owner, name in self.PHASES:
            self._wrap(owner, name)

    def _wrap(self, owner, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if not self.on:
                return original(*args, **kwargs)
            cpu = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - cpu

        setattr(owner, name, timed)


def speed_reference_ms(reps: int = 31) -> float:
    """Median CPU ms of one tile's noise draw (``normal_`` of 2 x 2 x 256 x 256 float32 from a seeded generator):
    a fixed piece of the floor's own work, timed in the same process, so that floors measured while this shared
    machine ran faster or slower can be compared (docs/performance.md, "Engine floor")."""
    out, times = torch.empty(2, 2, 256, 256), []
    for i in range(reps):
        generator = torch.Generator().manual_seed(i)
        cpu = time.process_time()
        out.normal_(generator=generator)
        times.append(time.process_time() - cpu)
    return 1e3 * statistics.median(times)


def write_store(path: Path, size: int, sections: int, seed: int = 5) -> Path:
    phantom = make_phantom(size, size, num_slices=sections, seed=seed, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("genes", data=phantom.genes, chunks=(phantom.genes.shape[0], 1, 16, 16))
    group.attrs.update({"gene_names": list(phantom.panel), "gene_bin": phantom.gene_bin, "um_per_px": phantom.um_per_px})
    return path


def run_once(pipe, store: Path, out: Path, timer: LoopTimer, name: str, batch_size: int, profiler=None) -> dict:
    timer.reset()
    InstantUNet.canvases, InstantUNet.cpu_s = 0, 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    TileSolver.allow_in_place_updates = name not in DIFFUSERS_UPDATES
    report = generate_to_zarr(
        pipe, store, out, generator=0, batch_size=batch_size, memory_limit_bytes=0, overwrite=True,
        progress_bar=False, origin_unknown=True, **SAMPLERS[name],
    )
    TileSolver.allow_in_place_updates = True
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if report.step_buffers != "disk":
        raise RuntimeError(f"step buffers went to {report.step_buffers}, expected disk")
    tile_steps = report.tile_steps_run - report.tiles  # less the initial-noise stage (one per tile)
    return {
        "tile_steps": tile_steps, "canvases": InstantUNet.canvases, "steps": report.steps,
        "loop_cpu_ms": 1e3 * timer.cpu / tile_steps, "loop_wall_ms": 1e3 * timer.wall / tile_steps,
        "call_cpu_ms": 1e3 * cpu / tile_steps, "call_wall_ms": 1e3 * wall / tile_steps,
        "stand_in_cpu_ms": 1e3 * InstantUNet.cpu_s / tile_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", default="default,official", help=f"comma-separated, of {', '.join(SAMPLERS)}")
    parser.add_argument("--size", type=int, default=1024, help="region edge, px (whole 256-px tiles)")
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--profile", help="write a cProfile of the timed rounds (all samplers) to this file")
    parser.add_argument("--phases", action="store_true", help="print CPU ms per tile-step of the engine's phases (see doc)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.samplers.split(",")
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown:
        parser.error(f"--samplers: unknown {unknown}; known: {', '.join(SAMPLERS)}")
    print(machine_facts())
    pipe = instant_pipeline()
    timer = LoopTimer()
    profiler = cProfile.Profile(time.thread_time) if args.profile else None  # CPU time of the main thread
    phases = PhaseTimer() if args.phases else None
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "genes.zarr", args.size, args.sections)
        for name in names:  # warm-up
            run_once(pipe, store, Path(tmp) / f"{name}.ome.zarr", timer, name, args.batch_size)
        if phases is not None:
            phases.on = True
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                results[name].append(
                    run_once(pipe, store, Path(tmp) / f"{name}.ome.zarr", timer, name, args.batch_size, profiler)
                )
    if profiler is not None:
        profiler.dump_stats(args.profile)
    reference = speed_reference_ms()
    print(f"region {args.size} x {args.size} px x {args.sections} sections, step buffers on disk, batch {args.batch_size}, "
          f"{args.threads} torch thread(s), instant stand-in model; medians of {args.rounds} interleaved rounds")
    for name in names:
        runs = results[name]
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key.endswith("_ms")}
        first = runs[0]
        print(
            f"{name:>9}: {first['tile_steps']} tile-steps ({first['steps']} steps, {first['canvases']} model canvases); "
            f"loop {med['loop_cpu_ms']:.2f} ms CPU ({med['loop_cpu_ms'] / TARGET_MS:.2f}x the {TARGET_MS:g} ms target), "
            f"{med['loop_wall_ms']:.2f} ms wall per tile-step; whole call {med['call_cpu_ms']:.2f} ms CPU, "
            f"{med['call_wall_ms']:.2f} ms wall per tile-step; of the loop, the stand-in's own forward (its zeros) "
            f"{med['stand_in_cpu_ms']:.2f} ms CPU"
        )
    if phases is not None:
        tile_steps = sum(r["tile_steps"] for runs in results.values() for r in runs)
        print(f"phases (CPU ms per tile-step of the thread running them, {', '.join(names)} together; nested):")
        for _, phase in PhaseTimer.PHASES:
            print(f"  {phase:>18}: {1e3 * phases.cpu.get(phase, 0.0) / tile_steps:.3f}")
    loops = ", ".join(f"{name} {statistics.median(r['loop_cpu_ms'] for r in results[name]) / reference:.2f}" for name in names)
    print(f"machine speed reference (after the rounds): one tile's noise draw took {reference:.3f} ms CPU; "
          f"loop per tile-step in such draws: {loops}")


if __name__ == "__main__":
    main()
