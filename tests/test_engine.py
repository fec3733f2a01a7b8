"""The tile-sampling engine: every solver gives the same bytes in memory, streamed, in any batch/order, on 2
processes and after SIGKILL + resume; genes are read once per z chunk; exact sub-regions; grid schedules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from diffusers import DPMSolverMultistepScheduler

from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline
from teramind_hf.cli import main as cli_main
from teramind_hf.pipelines.streaming import generate_to_zarr, load_pipeline
from teramind_hf.sampling import PRESETS, GridSchedule, TileGrid
from teramind_hf.sampling.sampler import TileSampler
from teramind_hf.sampling.schedule import GRID_SCHEDULES, blend_weights
from teramind_hf.schedulers.scheduling_boundary_aware import official_timesteps

from .conftest import FAST_CONFIG, TINY_GENES, kill_when, make_tiny_unet
from .test_generate import accelerate_launch

TILE = 256  # (the tiny model is not bit-batch-invariant on 192-px canvases of 128-px tiles: oneDNN kernels)
STEPS = 3
REGION = (0, 0, 2 * TILE, 2 * TILE)  # 2 x 2 tiles
SOLVERS = ["ddim", "dpm", "unipc"]
# (solver, grid schedule): every solver on the official grid, the stochastic DPM-Solver++ SDE (noise per tile and
# step), and a multistep solver on the blended "diagonal" grid (neighbours read at two offsets every step)
DEFAULT_CASE = ("dpm-sde", "diagonal")  # the embedded model's own sampler
# and the turbo preset's solver on its grid: TCD (its step noise per tile and step at its own eta) on
# "diagonal-last-shifted" (the first step's grid half a patch off, then one offset, then the blended pair at the last step)
CASES = [(solver, None) for solver in SOLVERS] + [DEFAULT_CASE, ("unipc", "diagonal"), ("TCDScheduler", "diagonal-last-shifted")]


def case_id(solver: str, grid: str | None) -> str:
    return solver if grid is None else f"{solver}-{grid}"


CASE_IDS = [case_id(*case) for case in CASES]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest)."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="module")
def model_dir(workdir) -> Path:
    pipe = TeraMindPipeline(unet=make_tiny_unet(**FAST_CONFIG), scheduler=BoundaryAwareScheduler(), tile_size=TILE)
    pipe.save_pretrained(workdir / "tiny")
    return workdir / "tiny"


@pytest.fixture(scope="module")
def genes() -> np.ndarray:
    return np.random.default_rng(0).poisson(1.0, (len(TINY_GENES), 2, 2 * TILE // 16, 2 * TILE // 16)).astype(np.float32)


@pytest.fixture(scope="module")
def gene_store(genes, workdir) -> Path:
    path = workdir / "genes.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("genes", data=genes, chunks=(len(TINY_GENES), 1, 16, 16))
    group.attrs.update({"origin_um": [0.0, 0.0], "gene_names": TINY_GENES, "um_per_px": 0.5})
    return path


def _pipe(model_dir: Path, solver: str) -> TeraMindPipeline:
    pipe = load_pipeline(str(model_dir), solver)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def in_memory(model_dir, genes) -> dict[str, np.ndarray]:
    """The in-memory pipeline's uint8 output per case (solver, grid), as (c, z, y, x)."""
    out = {}
    for solver, grid in CASES:
        pipe = _pipe(model_dir, solver)
        images = pipe(genes, gene_names=TINY_GENES, num_inference_steps=STEPS, generator=0, output_type="uint8", grid=grid).images
        out[case_id(solver, grid)] = images.transpose(1, 0, 2, 3)
    return out


def level0(out: Path) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["0"][...]


def cli_args(gene_store: Path, out: Path, model_dir: Path, solver: str, *extra: str, grid: str | None = None) -> list[str]:
    extra = (*extra, "--grid", grid) if grid else extra
    return [
        "generate", "--genes", str(gene_store), "--out", str(out), "--model", str(model_dir), "--scheduler", solver,
        "--region", ",".join(map(str, REGION)), "--steps", str(STEPS), "--seed", "0", "--quiet", "--threads", "1", *extra,
    ]


# ---------------------------------------------------------------------------------- determinism per solver
@pytest.mark.parametrize(("solver", "grid"), CASES, ids=CASE_IDS)
def test_batch_order_and_streaming_give_the_same_bytes(solver, grid, model_dir, genes, gene_store, in_memory, workdir):
    case = case_id(solver, grid)
    reference = in_memory[case]
    assert reference.std() > 1  # not a constant image
    pipe = _pipe(model_dir, solver)
    other = pipe(genes, gene_names=TINY_GENES, num_inference_steps=STEPS, generator=0, output_type="uint8",
                 batch_size=1, tile_order="reverse", grid=grid).images
    np.testing.assert_array_equal(other.transpose(1, 0, 2, 3), reference)
    out = workdir / f"stream_{case}.ome.zarr"
    # streamed with the prefetch thread a GPU run uses (read one batch ahead while the model runs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TileSampler, "prefetch_on_cpu", True)
        report = generate_to_zarr(pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0,
                                  batch_size=1, tile_order="reverse", memory_limit_bytes=0, progress_bar=False, grid=grid)
    assert report.step_buffers == "disk"
    np.testing.assert_array_equal(level0(out), reference)
    if case != "ddim":
        assert not np.array_equal(reference, in_memory["ddim"])  # the solver / grid is really used


TWO_PROCESS_CASES = [(solver, None) for solver in SOLVERS] + [DEFAULT_CASE]


@pytest.mark.parametrize(("solver", "grid"), TWO_PROCESS_CASES, ids=[case_id(*case) for case in TWO_PROCESS_CASES])
def test_two_processes_with_accelerate(solver, grid, model_dir, gene_store, in_memory, workdir):
    case = case_id(solver, grid)
    out = workdir / f"two_{case}.ome.zarr"
    args = cli_args(gene_store, out, model_dir, solver, "--batch-size", "2", "--shard-tiles", "1", grid=grid)
    result = subprocess.run([*accelerate_launch(2), *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    np.testing.assert_array_equal(level0(out), in_memory[case])


# TCD's SIGKILL case is slow: its stochastic step noise on a blended grid is resumed in CI by the default sampler's case
# (DPM-Solver++ SDE on "diagonal"), and TCD streams in test_batch_order_and_streaming_give_the_same_bytes
KILL_CASES = [pytest.param(*case, marks=pytest.mark.slow) if case[0] == "TCDScheduler" else case for case in CASES]


@pytest.mark.parametrize(("solver", "grid"), KILL_CASES, ids=CASE_IDS)
def test_sigkill_then_resume_gives_identical_bytes(solver, grid, model_dir, gene_store, in_memory, workdir):
    case = case_id(solver, grid)
    out = workdir / f"killed_{case}.ome.zarr"
    args = cli_args(gene_store, out, model_dir, solver, "--batch-size", "1", "--memory-limit-mb", "0", grid=grid)
    proc = subprocess.Popen([sys.executable, "-m", "teramind_hf.cli", *args], env=ENV, stderr=subprocess.PIPE)
    # inside step 1: multistep history is in use
    killed = kill_when(proc, out, lambda progress: progress.max() >= 2 and progress.min() < 2)
    assert killed is not None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert cli_main(args) == 0
    np.testing.assert_array_equal(level0(out), in_memory[case])


# ---------------------------------------------------------------------------------- genes read once
class CountingArray:
    """A real zarr array whose reads are recorded (bins of each read)."""

    def __init__(self, array):
        self.array, self.reads = array, []

    shape = property(lambda self: self.array.shape)
    ndim = property(lambda self: self.array.ndim)

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]


def test_each_gene_chunk_is_read_once_per_z_chunk(model_dir, genes, workdir):
    store = zarr.open_group(str(workdir / "genes3.zarr"), mode="w")
    three = np.concatenate([genes, genes[:, :1]], axis=1)  # 3 sections: z chunks at 0 and 2
    array = store.create_array("genes", data=three, chunks=(len(TINY_GENES), 1, 16, 16))
    counting = CountingArray(array)
    pipe = _pipe(model_dir, "ddim")
    generate_to_zarr(pipe, counting, workdir / "counted.ome.zarr", num_inference_steps=STEPS, generator=0, progress_bar=False)
    reads_per_chunk: dict[tuple, int] = {}
    for key in counting.reads:
        z, y, x = key[1:]
        for section in range(z.start, z.stop):
            for cy in range(y.start // 16, -(-y.stop // 16)):
                for cx in range(x.start // 16, -(-x.stop // 16)):
                    reads_per_chunk[(section, cy, cx)] = reads_per_chunk.get((section, cy, cx), 0) + 1
    # the preflight scan (NaN/inf/negative/dtype, before the output exists) reads every chunk once; sampling reads
    # it once per z chunk whatever the number of steps: sections 0-2 feed z chunk 0 (window -1..3), sections 1-2
    # also z chunk 2 (window 1..5)
    expected = {0: 1 + 1, 1: 1 + 2, 2: 1 + 2}
    assert {k: v for k, v in reads_per_chunk.items()} == {(s, cy, cx): expected[s] for s in range(3) for cy in range(2) for cx in range(2)}


# ---------------------------------------------------------------------------------- exact sub-regions
@pytest.mark.parametrize("solver,grid_name", [("ddim", "official"), ("dpm-sde", "diagonal")], ids=["ddim", "dpm-sde-diagonal"])
def test_exact_sub_region_equals_the_full_run_there(model_dir, solver, grid_name):
    """The middle tile of a 5 x 5-tile run (2 steps: a 1-tile margin, strictly inside the run on every side)
    regenerated alone; also with the embedded model's default sampler (SDE noise per tile and step, two grid
    offsets blended at every step)."""
    pipe = _pipe(model_dir, solver)
    pipe.register_to_config(grid=grid_name)
    grid = pipe.tile_grid(5 * TILE, 5 * TILE)
    assert grid.margin_tiles(2) == 1 and grid.margin_tiles(15) == 6 and grid.reach_per_step() == 96
    genes = np.random.default_rng(1).poisson(1.0, (len(TINY_GENES), 2, 5 * TILE // 16, 5 * TILE // 16)).astype(np.float32)
    full = pipe(genes, gene_names=TINY_GENES, num_inference_steps=2, generator=3, output_type="uint8").images
    y0 = x0 = 2 * TILE
    sub = (y0, x0, TILE, TILE)
    exact = pipe(genes, gene_names=TINY_GENES, num_inference_steps=2, generator=3, output_type="uint8", region=sub, exact=True).images
    np.testing.assert_array_equal(exact, full[..., y0 : y0 + TILE, x0 : x0 + TILE])
    alone = pipe(genes, gene_names=TINY_GENES, num_inference_steps=2, generator=3, output_type="uint8", region=sub).images
    assert not np.array_equal(alone, exact)  # without the margin the sub-region's borders differ


# ---------------------------------------------------------------------------------- grid schedules and API
def test_blend_weights_sum_to_one_and_are_smallest_at_patch_borders():
    offsets = ((0, 0), (0, 16), (16, 0), (16, 16))
    weights = blend_weights(offsets, 128, 32)
    torch.testing.assert_close(weights.sum(0), torch.ones(128, 128))
    row = weights[0, 16]  # offset (0, 0) along x: smallest next to its borders at multiples of 32
    assert row[31] < row[16] and row[32] < row[16] and row[63] < row[48]


def test_grid_schedules_blend_at_every_step_move_with_the_shift_and_sharpen_weights():
    every = GridSchedule(shifts=((0, 0), (0, 16)), blend_offsets=((0, 0), (16, 16)), blend_steps="all")
    assert [every.offsets_at(i, 3) for i in range(3)] == [((0, 0), (16, 16)), ((0, 16), (16, 32)), ((0, 0), (16, 16))]
    assert GridSchedule.from_dict(every.to_dict()) == every
    last = GridSchedule(blend_offsets=((0, 0), (16, 16)), blend_steps=1)
    assert [len(last.offsets_at(i, 3)) for i in range(3)] == [1, 1, 2]
    assert last.calls_per_tile(3) == 4 and every.calls_per_tile(3) == 6 and GridSchedule().calls_per_tile(15) == 15
    assert GRID_SCHEDULES["diagonal-last"].calls_per_tile(3) == 4 == GRID_SCHEDULES["diagonal"].calls_per_tile(2)
    assert GRID_SCHEDULES["diagonal-last-shifted"].calls_per_tile(3) == 4
    with pytest.raises(ValueError, match="blend_steps"):
        GridSchedule(blend_offsets=((0, 0), (16, 16)), blend_steps="some")
    with pytest.raises(ValueError, match="blend_power"):
        GridSchedule(blend_offsets=((0, 0), (16, 16)), blend_steps=1, blend_power=0)
    plain, squared = (blend_weights(((0, 0), (16, 16)), 64, 32, power) for power in (1.0, 2.0))
    torch.testing.assert_close(squared.sum(0), torch.ones(64, 64))
    # squared tents lean harder on the grid farther from its borders: near (0, 0)'s lines it weighs less
    assert squared[0, 1, 20] < plain[0, 1, 20] and squared[0, 16, 16] > plain[0, 16, 16]


def test_pipeline_config_grid_is_the_default_and_presets_follow_it(model_dir, genes, workdir):
    pipe = _pipe(model_dir, "ddim")
    assert pipe.config.grid == "official"
    assert pipe.sampling_plan(None, None, None)[2] == GRID_SCHEDULES["official"]
    pipe.register_to_config(grid="diagonal")
    pipe.save_pretrained(workdir / "tiny_diagonal")
    loaded = TeraMindPipeline.from_pretrained(workdir / "tiny_diagonal")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_plan(None, None, None)[2] == GRID_SCHEDULES["diagonal"]
    assert loaded.sampling_plan(None, None, "fast")[2] == GRID_SCHEDULES["diagonal"]  # the fast preset keeps the default grid
    assert loaded.sampling_plan(None, None, "official")[2] == GRID_SCHEDULES["official"]  # parity
    assert loaded.sampling_plan(None, "blend", "official")[2] == GRID_SCHEDULES["blend"]  # an explicit grid wins
    small = genes[..., : TILE // 16, : TILE // 16]  # one tile, one step: the default grid is the one that runs
    default = loaded(small, gene_names=TINY_GENES, num_inference_steps=1, generator=0, output_type="uint8").images
    explicit = loaded(small, gene_names=TINY_GENES, num_inference_steps=1, generator=0, output_type="uint8", grid="diagonal").images
    official = loaded(small, gene_names=TINY_GENES, num_inference_steps=1, generator=0, output_type="uint8", grid="official").images
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, official)
    with pytest.raises(ValueError, match="unknown grid schedule 'nope'"):
        TeraMindPipeline(unet=loaded.unet, scheduler=loaded.scheduler, grid="nope")
    assert loaded.sampling_plan(None, None, None)[1] == 15  # no steps in the config: the official 15
    loaded.register_to_config(num_inference_steps=3)
    assert loaded.sampling_plan(None, None, None)[1] == 3 and loaded.sampling_plan(2, None, "fast")[1] == 2
    assert loaded.sampling_plan(None, None, "fast")[1] == PRESETS["fast"].num_inference_steps  # a preset's steps win
    with pytest.raises(ValueError, match="num_inference_steps in the pipeline config"):
        TeraMindPipeline(unet=loaded.unet, scheduler=loaded.scheduler, num_inference_steps=0)


def test_cli_without_steps_runs_the_model_default_steps(model_dir, gene_store, workdir):
    """`teramind generate` without --steps or --preset runs the steps of the model's pipeline config."""
    pipe = TeraMindPipeline.from_pretrained(model_dir)
    pipe.register_to_config(num_inference_steps=2)
    pipe.save_pretrained(workdir / "tiny_two_steps")
    out = workdir / "two_steps.ome.zarr"
    assert cli_main(["generate", "--genes", str(gene_store), "--out", str(out), "--model", str(workdir / "tiny_two_steps"),
                     "--region", f"0,0,{TILE},{TILE}", "--seed", "0", "--quiet", "--threads", "1"]) == 0
    assert zarr.open_group(str(out), mode="r").attrs["teramind"]["run"]["num_inference_steps"] == 2


def test_embedded_default_sampler_is_the_seamless_preset():
    """The embedded model's own scheduler, grid and steps are the ``seamless`` preset; ``official`` stays DDIM-15."""
    from teramind_hf import default_model_path

    pipe = TeraMindPipeline.from_pretrained(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    seamless = PRESETS["seamless"]
    preset, steps, grid = pipe.sampling_plan(None, None, None)
    assert (steps, grid) == (seamless.num_inference_steps, GRID_SCHEDULES[seamless.grid]) and preset is None
    own, named = pipe.sampling_scheduler(None), pipe.sampling_scheduler(seamless)
    assert own.config.inner_scheduler == type(named._stepper).__name__ == "DPMSolverMultistepScheduler"
    assert own._stepper.config.algorithm_type == named._stepper.config.algorithm_type == "sde-dpmsolver++"
    own.set_timesteps(steps), named.set_timesteps(steps)
    assert own.timesteps.tolist() == named.timesteps.tolist()
    official = pipe.sampling_scheduler(PRESETS["official"])
    official.set_timesteps(15)
    assert type(official._stepper).__name__ == "DDIMScheduler" and official.config.timestep_spacing_mode == "official"
    small = np.zeros((pipe.unet.config.num_genes, 2, 16, 16), dtype=np.float32)  # one 256-px tile, 2 steps
    default = pipe(small, num_inference_steps=2, generator=0, output_type="uint8").images
    np.testing.assert_array_equal(default, pipe(small, preset="seamless", num_inference_steps=2, generator=0, output_type="uint8").images)


def test_blended_grid_schedule_keeps_streaming_equal_to_memory(model_dir, genes, gene_store, in_memory, workdir):
    pipe = _pipe(model_dir, "ddim")
    schedule = GridSchedule(shifts=((0, 0), (32, 32)), blend_offsets=((0, 0), (0, 16), (16, 0), (16, 16)), blend_steps=1)
    memory = pipe(genes, gene_names=TINY_GENES, num_inference_steps=STEPS, generator=0, output_type="uint8", grid=schedule).images
    assert not np.array_equal(memory.transpose(1, 0, 2, 3), in_memory["ddim"])
    out = workdir / "blend.ome.zarr"
    generate_to_zarr(pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0, batch_size=3,
                     grid=schedule, memory_limit_bytes=0, progress_bar=False)
    np.testing.assert_array_equal(level0(out), memory.transpose(1, 0, 2, 3))
    record = zarr.open_group(str(out), mode="r").attrs["teramind"]["run"]
    assert GridSchedule.from_dict(record["grid_schedule"]) == schedule


def test_scheduler_swap_is_plain_diffusers(model_dir, caplog):
    import logging

    from diffusers.utils import logging as diffusers_logging

    pipe = _pipe(model_dir, "ddim")
    assert pipe.config.tile_size == TILE
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
            TeraMindPipeline.from_pretrained()
    finally:
        diffusers_logging.disable_propagation()
    assert "ignored" not in caplog.text
    assert type(pipe.scheduler) is DPMSolverMultistepScheduler  # no attribute override
    assert pipe.scheduler.config.beta_start == 1e-4 and pipe.scheduler.config.prediction_type == "epsilon"
    default = TeraMindPipeline.from_pretrained()  # geometry in the pipeline config, the schedule at the scheduler's top
    assert default.config.tile_size == 256 and default.config.halo == 32 and default.config.fill_value == -1
    assert "tile_size" not in default.scheduler.config and not default.scheduler.config.inner_config.get("prediction_type")
    assert DPMSolverMultistepScheduler.from_config(default.scheduler.config).config.prediction_type == "sample"


def test_presets_and_cli_names(model_dir, genes):
    assert PRESETS["official"].scheduler == "ddim" and PRESETS["official"].num_inference_steps == 15
    assert PRESETS["fast"].num_inference_steps <= 5
    pipe = _pipe(model_dir, "ddim")
    fast = pipe.sampling_scheduler(PRESETS["fast"])
    # the fast preset: DPM-Solver++ (2M) on its own log-SNR-uniform spacing, ending at t=0
    assert type(fast._stepper).__name__ == "DPMSolverMultistepScheduler" and fast.config.timestep_spacing_mode == "inner"
    assert fast._stepper.config.algorithm_type == "dpmsolver++" and fast._stepper.config.use_lu_lambdas
    fast.set_timesteps(PRESETS["fast"].num_inference_steps)
    assert fast.timesteps.tolist() == [999, 722, 302, 30, 0]
    fastest = pipe.sampling_scheduler(PRESETS["fastest"])  # UniPC, 4 steps on its own spacing
    assert type(fastest._stepper).__name__ == "UniPCMultistepScheduler" and PRESETS["fastest"].num_inference_steps == 4
    fastest.set_timesteps(4)
    assert fastest.timesteps.tolist() == [999, 749, 500, 250]
    one = pipe(genes, gene_names=TINY_GENES, num_inference_steps=1, generator=0).images
    assert np.array_equal(one, pipe(genes, gene_names=TINY_GENES, preset="official", num_inference_steps=1, generator=0).images)
    with pytest.raises(ValueError, match="unknown preset"):
        pipe(genes, gene_names=TINY_GENES, preset="nope")
    with pytest.raises(ValueError, match="not one of"):
        load_pipeline(str(model_dir), "NoSuchScheduler")


@pytest.mark.parametrize("inner", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "EulerDiscreteScheduler"])
def test_official_spacing_around_any_solver_visits_the_official_timesteps(model_dir, inner):
    # on the re-spaced N-step schedule, diffusers' "leading" spacing gave multistep solvers all-zero timesteps
    pipe = _pipe(model_dir, "ddim")
    keep = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_") and k not in ("inner_scheduler", "inner_config")}
    wrapped = BoundaryAwareScheduler(**{**keep, "inner_scheduler": inner, "timestep_spacing_mode": "official"})
    for steps in (4, 15):
        wrapped.set_timesteps(steps)
        assert wrapped.timesteps.tolist() == official_timesteps(1000, steps)[::-1]


def test_tile_grid_geometry():
    grid = TileGrid(height=512, width=768, origin=(256, 512), tile=256, unit_tiles=2)
    assert (grid.rows, grid.cols) == (2, 3) and grid.global_index(1, 2) == (2, 4)
    assert grid.work_units() == [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, 2), (1, 2)]]
    box = grid.canvas_box(0, 0, (16, 0))
    assert (box.y0, box.height, box.crop_y, box.x0, box.width, box.crop_x) == (-80, 384, 48, -32, 320, 0)
    with pytest.raises(ValueError, match="multiple of gene_bin"):
        grid.canvas_box(0, 0, (8, 0))
