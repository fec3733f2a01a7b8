"""GPU check: agreement with the CPU, tile-call speed per precision, the engine floor, whole-brain hours on 8 GPUs.

Made to run in at most 8 minutes on one H100 (a compile that would start past ``--budget-s`` is skipped and says
so), and with ``--device cpu --small`` in well under a minute as a smoke test of the suite
(tests/test_gpu_check.py). Four parts, one table each (rows start with their part's name):

* ``agreement``: the embedded model's default sampler on a phantom region, fp32, on the device (``pipe.to``, with
  the step state on the device, and with it in host memory) and on the CPU: max |difference| and PSNR of the uint8
  outputs (same seed, same initial noise: it is drawn on the CPU);
* ``tile-call``: one paper-size (random weights) tile call, a batch of 320-px canvases through the collage path,
  in fp32, bf16 and fp16, eager and ``torch.compile``-d: median device ms per canvas (CUDA events on a GPU,
  wall clock on the CPU) and the median CPU ms of the launching thread's process, candidates interleaved;
* ``engine-floor``: ``generate_to_zarr`` with the default sampler, step buffers on disk, and the embedded model's
  forward replaced by an instant stand-in that returns zeros on the device: CPU ms (all threads) and wall ms
  per tile-step of the sampling loop (``TileSampler.run``, timed as ``benchmarks/engine_floor.py`` does);
* ``brain``: whole-brain hours on 8 GPUs per preset: 2,960,100 tile-chunks (docs/tera-scale.md) x the preset's
  model calls per tile (counted from the embedded pipeline's sampling plan, on the grid it runs) x the measured
  ms per canvas / 8, and the same with the engine floor added in series per tile-step.

    python benchmarks/gpu_check.py                          # on the GPU (default cuda), about 5-8 minutes
    python benchmarks/gpu_check.py --device cpu --small     # smoke test: tiny model, small regions, no compile
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _perf_common import machine_facts  # noqa: E402
from heldout_presets import NARROW  # noqa: E402
from perf_tile_call import CANVAS, TIMESTEP, inputs, paper_model  # noqa: E402
from teramind_hf import DEFAULT_MODEL_UM_PER_PX, GeneMorphUNet3DModel, TeraMindPipeline  # noqa: E402
from teramind_hf.pipelines.acceleration import cast_unet, resolve_dtype  # noqa: E402
from teramind_hf.pipelines.device import resolve_device  # noqa: E402

BRAIN_TILE_CHUNKS = 286 * 414 * 25  # 256-px tiles of a 73,216 x 105,984 px section x 25 two-slice chunks
GPUS = 8
PARTS = ("agreement", "tile-call", "engine-floor", "brain")
PRESET_ROWS = ("default", "official", "seamless", "fast", "fastest", "turbo")
DTYPES = ("fp32", "bf16", "fp16")


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_device_medians(candidates: dict, repeats: int, device: torch.device) -> dict[str, tuple[float, float]]:
    """Median (device ms, CPU ms) per call of each candidate; calls interleaved, the order reversed every round.
    Device time: CUDA events around the call on a GPU, wall clock after a synchronisation elsewhere."""
    times = {name: ([], []) for name in candidates}
    names = list(candidates)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            _sync(device)
            cpu_start = time.process_time()
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                candidates[name]()
                end.record()
                end.synchronize()
                device_ms = start.elapsed_time(end)
            else:
                wall = time.perf_counter()
                candidates[name]()
                _sync(device)
                device_ms = (time.perf_counter() - wall) * 1e3
            times[name][0].append(device_ms)
            times[name][1].append((time.process_time() - cpu_start) * 1e3)
    return {name: (statistics.median(d), statistics.median(c)) for name, (d, c) in times.items()}


# ---------------------------------------------------------------------------------------------- parts
def phantom_store(folder: Path, size: int) -> Path:
    from teramind_hf.data import make_phantom
    from teramind_hf.data.datasets import write_training_store

    tissue = make_phantom(size, size, num_slices=2, seed=1, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    return write_training_store(tissue.to_volume(), folder / f"phantom_{size}.zarr")


def agreement(device: torch.device, size: int, steps: int | None, grid: str | None = None) -> None:
    """The embedded pipeline's output (uint8) on ``device`` and on the CPU, fp32, same seed (default sampler, or
    ``steps`` on ``grid``)."""
    from teramind_hf.data import make_phantom

    tissue = make_phantom(size, size, num_slices=2, seed=1, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    # the CPU reference, then pipe.to(device) with the step state on the device (the default) and, off the CPU, with
    # the step state in host memory (step_state_device="cpu")
    runs = [(torch.device("cpu"), "cpu"), (device, str(device))] + ([(device, "cpu")] if device.type != "cpu" else [])
    outputs = []
    for where, state in runs:
        pipe = TeraMindPipeline.from_pretrained().to(where)
        pipe.set_progress_bar_config(disable=True)
        started = time.perf_counter()
        outputs.append(pipe(tissue.genes, gene_names=list(tissue.panel), num_inference_steps=steps, grid=grid,
                            generator=0, output_type="uint8", step_state_device=state).images)
        seconds = time.perf_counter() - started
        print(f"agreement | model on {where}, step state on {state}: {seconds:.2f} s wall")
    reference = outputs[0].astype(np.float64)
    for (where, state), images in zip(runs[1:], outputs[1:]):
        b = images.astype(np.float64)
        mse = float(((reference - b) ** 2).mean())
        psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
        print(f"agreement | embedded fp32 {where} (step state on {state}) vs cpu | max |diff| "
              f"{np.abs(reference - b).max():.0f} grey levels | PSNR {psnr:.2f} dB | differing voxels "
              f"{(reference != b).mean():.4%} | {size} x {size} px x 2 sections, "
              f"{'default sampler' if steps is None else f'{steps} step(s), {grid} grid'}")


def tile_call_models(device: torch.device, small: bool, batch: int) -> SimpleNamespace:
    """The same weights in each precision on ``device`` (paper size, or the tiny model with ``small``) and their inputs."""
    # small: the narrow model the call counts use stands in for the paper size, random weights, same geometry (a
    # smoke test of the code path); bf16 convolutions are far slower than fp32 on a CPU without bf16 kernels, so the
    # width is what keeps it short
    if small:
        genes_in_panel = TeraMindPipeline.from_pretrained().unet.config.gene_names

        def make() -> GeneMorphUNet3DModel:
            torch.manual_seed(0)
            return GeneMorphUNet3DModel(num_genes=len(genes_in_panel), gene_names=list(genes_in_panel), **NARROW).eval()
    else:
        make = paper_model
    # fp16 convolutions have no fast CPU kernels (minutes per call): on the CPU they are left out
    dtypes = DTYPES if device.type != "cpu" else tuple(d for d in DTYPES if d != "fp16")
    models = {name: torch.nn.Module.to(cast_unet(make(), name), device) for name in dtypes}
    canvas, genes = inputs(models["fp32"].config, batch, str(device))
    return SimpleNamespace(models=models, batch=batch, small=small, params=sum(p.numel() for p in models["fp32"].parameters()),
                           inputs={name: (canvas.to(resolve_dtype(name)), genes.to(resolve_dtype(name))) for name in dtypes})


def _call(model, x, g):
    return lambda: model(x, TIMESTEP, g, path="collage").sample


def _time_and_print(setup: SimpleNamespace, candidates: dict, repeats: int, device: torch.device, notes: dict) -> dict:
    with torch.inference_mode():
        for fn in candidates.values():  # warm-up (cuDNN algorithm choice, allocator)
            fn()
        medians = interleaved_device_medians({f"{k[0]} {k[1]}": v for k, v in candidates.items()}, repeats, device)
    size = "paper-size" if not setup.small else "tiny (--small)"
    print(f"tile-call | {size} model, random weights, {setup.params / 1e6:.1f} M parameters, {setup.batch} canvas(es) of "
          f"{CANVAS} px per call, {repeats} interleaved calls each, medians")
    results = {}
    for name in DTYPES:
        for mode in ("eager", "compiled"):
            key = f"{name} {mode}"
            if key not in medians:
                if (name, mode) in notes:
                    print(f"tile-call | {name:4s} {mode:8s} | {notes[(name, mode)]}")
                continue
            device_ms, cpu_ms = medians[key]
            results[(name, mode)] = device_ms / setup.batch
            print(f"tile-call | {name:4s} {mode:8s} | {device_ms / setup.batch:10.3f} ms per canvas on {device} | "
                  f"{cpu_ms / setup.batch:10.3f} CPU ms per canvas")
    return results


def tile_calls(device: torch.device, setup: SimpleNamespace, repeats: int) -> dict:
    """Median ms per canvas of the eager tile call per dtype; returns {(dtype, "eager"): ms}."""
    candidates = {(name, "eager"): _call(model, *setup.inputs[name]) for name, model in setup.models.items()}
    notes = {}
    for name in DTYPES:
        if name not in setup.models:
            notes[(name, "eager")] = notes[(name, "compiled")] = "skipped (fp16 convolutions are not a CPU path)"
        elif setup.small or device.type != "cuda":
            notes[(name, "compiled")] = "skipped (--small / not a GPU: compiling takes minutes on a CPU)"
    return _time_and_print(setup, candidates, repeats, device, notes)


def compiled_tile_calls(device: torch.device, setup: SimpleNamespace, repeats: int, budget_s: float, started: float) -> dict:
    """``torch.compile`` each precision (bf16 and fp16 first: the fast paths), no compile starting past ``budget_s``,
    then time each compiled call interleaved with its eager one; returns {(dtype, mode): ms}."""
    candidates, notes = {}, {}
    for name in ("bf16", "fp16", "fp32"):
        if time.perf_counter() - started > budget_s:
            notes[(name, "compiled")] = f"skipped (past the {budget_s:.0f} s budget)"
            continue
        x, g = setup.inputs[name]
        compiled = torch.compile(setup.models[name], dynamic=False)
        compile_started = time.perf_counter()
        try:
            with torch.inference_mode():
                compiled(x, TIMESTEP, g, path="collage")
            _sync(device)
        except Exception as err:  # a compiler failure must not cost the rest of the table (one lent GPU run)
            notes[(name, "compiled")] = f"compile failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            continue
        print(f"tile-call | compile {name}: {time.perf_counter() - compile_started:.1f} s", flush=True)
        candidates[(name, "compiled")] = _call(compiled, x, g)
        candidates[(name, "eager")] = _call(setup.models[name], x, g)
    return _time_and_print(setup, candidates, repeats, device, notes)


def _instant_forward(unet: GeneMorphUNet3DModel):
    """A forward that returns zeros of the collage output's shape on the model's device (no computation)."""
    patch = unet.config.sample_size

    def forward(sample, timestep, genes, path="collage", return_dict=True, patch_ids=None):  # ids: nothing to reuse
        b, _, z, h, w = sample.shape
        zeros = torch.zeros(b, unet.config.out_channels, z, h - patch, w - patch, device=sample.device, dtype=sample.dtype)
        return SimpleNamespace(sample=zeros)

    return forward


def engine_floor(device: torch.device, folder: Path, size: int, steps: int) -> dict:
    """CPU and wall ms per tile-step of the default sampler's loop (``TileSampler.run``, as benchmarks/engine_floor.py
    times it), disk step buffers, instant stand-in model; medians of 2 runs."""
    from engine_floor import LoopTimer
    from teramind_hf.pipelines.streaming import generate_to_zarr

    pipe = TeraMindPipeline.from_pretrained().to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.forward = _instant_forward(pipe.unet)
    store = phantom_store(folder, size)
    chosen, default_steps, grid = pipe.sampling_plan(None, None, None)
    steps = steps or default_steps
    timer = LoopTimer()
    cpu_ms, wall_ms = [], []
    for run in range(3):  # a warm-up, then 2 timed
        timer.reset()
        report = generate_to_zarr(pipe, store, folder / f"floor_{run}.ome.zarr", num_inference_steps=steps, generator=0,
                                  memory_limit_bytes=0, progress_bar=False, um_per_px=DEFAULT_MODEL_UM_PER_PX)
        assert report.step_buffers == "disk"
        tile_steps = report.tile_steps_run - report.tiles  # less the initial-noise stage
        if run:
            cpu_ms.append(1e3 * timer.cpu / tile_steps)
            wall_ms.append(1e3 * timer.wall / tile_steps)
    per_cpu, per_wall = statistics.median(cpu_ms), statistics.median(wall_ms)
    config = pipe.sampling_scheduler(chosen).config
    sampler = f"{config.get('inner_scheduler')} {dict(config.get('inner_config') or {}).get('algorithm_type', '')}".strip()
    print(f"engine-floor | default sampler ({steps} steps, {grid_name(grid)} grid; {sampler}), step buffers on disk, "
          f"instant stand-in model on {device}, {size} x {size} px x 2 sections = {report.tiles} tiles, the sampling "
          f"loop, medians of 2 runs | {per_cpu:.2f} CPU ms per tile-step (all threads) | {per_wall:.2f} wall ms per tile-step")
    return {"cpu_ms": per_cpu, "wall_ms": per_wall}


def grid_name(grid) -> str:
    from teramind_hf.sampling.schedule import GRID_SCHEDULES

    return next((name for name, g in GRID_SCHEDULES.items() if g == grid), "custom")


def preset_calls() -> dict[str, tuple[int, str, int]]:
    """(steps, grid name, model calls per tile) of each preset on the embedded pipeline, from its sampling plan, and
    of the committed distilled student (``teramind_hf/default_student``, not a preset: it fails realism criteria)."""
    import teramind_hf

    def row(pipe, preset):
        _, steps, grid = pipe.sampling_plan(None, None, preset)
        return steps, grid_name(grid), grid.calls_per_tile(steps)

    pipe = TeraMindPipeline.from_pretrained()
    rows = {name: row(pipe, None if name == "default" else name) for name in PRESET_ROWS}
    rows["student"] = row(TeraMindPipeline.from_pretrained(Path(teramind_hf.__file__).parent / "default_student"), None)
    return rows


def brain_hours(calls: dict, per_canvas: dict, floor: dict | None, small: bool, part: str = "brain") -> None:
    note = " (--small: NOT a brain figure, a tiny model on this device)" if small else ""
    print(f"{part} | whole mouse brain, {BRAIN_TILE_CHUNKS:,} tile-chunks, {GPUS} GPUs, hours = tile-chunks x calls "
          f"per tile x ms per canvas / {GPUS}; '+ floor' adds the engine floor CPU ms per tile-step in series{note}")
    best_key = min(per_canvas, key=per_canvas.get)
    for name, (steps, grid, n_calls) in calls.items():
        hours = {}
        for dtype in DTYPES:
            measured = [per_canvas[k] for k in ((dtype, "eager"), (dtype, "compiled")) if k in per_canvas]
            hours[dtype] = BRAIN_TILE_CHUNKS * n_calls * min(measured) / GPUS / 3.6e6 if measured else math.nan
        best = BRAIN_TILE_CHUNKS * n_calls * per_canvas[best_key] / GPUS / 3.6e6
        floor_hours = BRAIN_TILE_CHUNKS * steps * floor["cpu_ms"] / GPUS / 3.6e6 if floor else math.nan
        print(f"{part} | {name:8s} | {steps:2d} steps | {grid:8s} | {n_calls:2d} calls/tile | "
              + " | ".join(f"{d} {hours[d]:10.1f} h" if not math.isnan(hours[d]) else f"{d} not measured" for d in DTYPES)
              + f" | best ({' '.join(best_key)}) + floor {best + floor_hours:10.1f} h")


def _part(name: str, failures: list, fn, *args):
    """Run one part; a failure prints its traceback and the other parts still run (one lent GPU run)."""
    import traceback

    try:
        return fn(*args)
    except Exception:
        failures.append(name)
        print(f"{name} | FAILED\n{traceback.format_exc()}", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:INDEX, cpu, mps or auto")
    parser.add_argument("--small", action="store_true", help="smoke test: tiny model, small regions, few steps")
    parser.add_argument("--batch", type=int, default=None, help="canvases per tile call (default 4; --small 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per tile-call candidate (default 10; --small 2)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="no compile starts after this many seconds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--exact-fp32", action="store_true",
                        help="turn TF32 off in cuDNN convolutions and matmuls (PyTorch's default uses it in cuDNN)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}; expected a subset of {', '.join(PARTS)}")
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.exact_fp32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    device = resolve_device(args.device)
    batch = args.batch or (1 if args.small else 4)
    repeats = args.repeats or (2 if args.small else 10)
    print(machine_facts())
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
              f"TF32 cuDNN {torch.backends.cudnn.allow_tf32}, cuDNN benchmark {torch.backends.cudnn.benchmark}")
    else:
        print(f"device: {device}")
    failures: list[str] = []
    compile_phase = device.type == "cuda" and not args.small
    with tempfile.TemporaryDirectory(prefix="teramind-gpu-check-") as tmp:
        # cheapest and surest first; the compiles last, so that a run stopped at its limit keeps the other tables
        if "agreement" in parts:
            _part("agreement", failures, agreement, device, *((256, 1, "official") if args.small else (512, None)))
        setup = _part("tile-call", failures, tile_call_models, device, args.small, batch) if "tile-call" in parts else None
        per_canvas = (_part("tile-call", failures, tile_calls, device, setup, repeats) or {}) if setup else {}
        floor = None
        if "engine-floor" in parts:
            floor = _part("engine-floor", failures, engine_floor, device, Path(tmp), 512 if args.small else 1024,
                          2 if args.small else 0)
        calls = _part("brain", failures, preset_calls) if "brain" in parts else None
        if compile_phase and per_canvas and calls:
            brain_hours(calls, per_canvas, floor, args.small, part="brain (eager only)")
            per_canvas.update(_part("tile-call", failures, compiled_tile_calls, device, setup, repeats, args.budget_s,
                                    started) or {})
        if per_canvas and calls:
            brain_hours(calls, per_canvas, floor, args.small)
    print(f"total | {time.perf_counter() - started:.1f} s wall" + (f" | FAILED parts: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
