"""Device placement: `resolve_device` on its inputs, `--device` in the CLI, the single-worker accelerate launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline
from teramind_hf.cli import main as cli_main
from teramind_hf.pipelines.device import ProcessPlacement, resolve_device, single_worker_launch

from .conftest import FAST_CONFIG, TINY_GENES, make_tiny_unet

ONE = ProcessPlacement()
SECOND_OF_TWO_GPU = ProcessPlacement(local_process_index=1, num_processes=2, distributed_type="MULTI_GPU")
SECOND_OF_TWO_CPU = ProcessPlacement(local_process_index=1, num_processes=2, distributed_type="MULTI_CPU")
FIFTH_OF_EIGHT = ProcessPlacement(local_process_index=4, num_processes=8, distributed_type="MULTI_GPU")

# (requested, process state, CUDA GPUs, MPS available) -> device
CHOSEN = [
    (None, ONE, 0, False, "cpu"),
    ("auto", ONE, 0, False, "cpu"),
    (None, ONE, 0, True, "mps"),
    (None, ONE, 1, True, "cuda:0"),  # CUDA before MPS
    (None, ONE, 2, False, "cuda:0"),
    (None, SECOND_OF_TWO_GPU, 2, False, "cuda:1"),  # accelerate launch --multi_gpu: cuda:LOCAL_RANK
    (None, FIFTH_OF_EIGHT, 8, False, "cuda:4"),
    (None, SECOND_OF_TWO_CPU, 0, False, "cpu"),  # multi-CPU launch
    (None, SECOND_OF_TWO_CPU, 0, True, "cpu"),  # MPS is not shared between processes
    ("cpu", SECOND_OF_TWO_GPU, 2, True, "cpu"),
    ("CPU", ONE, 0, False, "cpu"),
    ("cuda", ONE, 1, False, "cuda:0"),
    ("cuda", SECOND_OF_TWO_GPU, 2, False, "cuda:1"),  # a bare "cuda" is this process's GPU
    ("cuda:1", ONE, 2, False, "cuda:1"),
    ("cuda:0", SECOND_OF_TWO_GPU, 2, False, "cuda:0"),  # an explicit index is taken as given
    (torch.device("cuda", 1), ONE, 2, False, "cuda:1"),
    ("mps", ONE, 0, True, "mps"),
]


@pytest.mark.parametrize("requested,state,gpus,mps,expected", CHOSEN)
def test_device_choice(requested, state, gpus, mps, expected):
    device = resolve_device(requested, process_state=state, cuda_device_count=gpus, mps_available=mps)
    assert device == torch.device(expected)


# (requested, process state, CUDA GPUs, MPS available) -> refused, message parts
REFUSED = [
    ("cuda", ONE, 0, False, ["--device cuda", "no CUDA GPU", "available here: cpu"]),
    ("cuda:3", ONE, 2, False, ["--device cuda:3", "2 CUDA GPU(s)", "cpu, cuda:0, cuda:1"]),
    ("mps", ONE, 1, False, ["--device mps", "no Apple MPS", "cpu, cuda:0"]),
    ("gpu0", ONE, 0, False, ["--device gpu0", "not a device", "cuda:INDEX"]),
    ("meta", ONE, 0, False, ["--device meta", "cpu, cuda, mps only"]),
    ("xpu", ONE, 0, True, ["--device xpu", "available here: cpu, mps"]),
    (None, SECOND_OF_TWO_GPU, 1, False, ["process 1 of 2", "1 GPU(s)", "one process per GPU"]),
    ("cuda", FIFTH_OF_EIGHT, 4, False, ["process 4 of 8", "4 GPU(s)"]),
]


def test_refusal_names_the_setting_it_came_from():
    with pytest.raises(ValueError, match=r"^TERAMIND_DEMO_DEVICE=cuda: this machine has no CUDA GPU"):
        resolve_device("cuda", cuda_device_count=0, mps_available=False, option="TERAMIND_DEMO_DEVICE")


@pytest.mark.parametrize("requested,state,gpus,mps,parts", REFUSED)
def test_unavailable_device_is_refused_by_name(requested, state, gpus, mps, parts):
    with pytest.raises(ValueError) as err:
        resolve_device(requested, process_state=state, cuda_device_count=gpus, mps_available=mps)
    for part in parts:
        assert part in str(err.value)


def test_accelerate_state_is_read_like_a_placement():
    """accelerate's own PartialState (this process: one, not distributed) is a valid ``process_state``."""
    from accelerate import PartialState

    state = PartialState(cpu=True)
    assert resolve_device(None, process_state=state, cuda_device_count=0, mps_available=False) == torch.device("cpu")
    assert resolve_device(None, process_state=state, cuda_device_count=2, mps_available=False) == torch.device("cuda", 0)


# what accelerate's launchers put in the environment (accelerate/utils/launch.py)
SIMPLE_LAUNCH_OF_2 = {"ACCELERATE_USE_CPU": "False", "ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DYNAMO_BACKEND": "NO",
                      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
SIMPLE_LAUNCH_OF_1 = {k: v for k, v in SIMPLE_LAUNCH_OF_2.items() if not k.startswith("MASTER")}
TORCHRUN_LAUNCH = {**SIMPLE_LAUNCH_OF_2, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}


@pytest.mark.parametrize(
    "environ,processes,warns",
    [(SIMPLE_LAUNCH_OF_2, 1, True), (SIMPLE_LAUNCH_OF_1, 1, False), (TORCHRUN_LAUNCH, 2, False),
     ({"MASTER_ADDR": "10.0.0.1"}, 1, False), ({}, 1, False), (SIMPLE_LAUNCH_OF_2, 2, False)],
    ids=["simple-launcher-of-2", "simple-launcher-of-1", "multi-gpu", "not-accelerate", "plain-python", "mpirun"],
)
def test_single_worker_launch_is_detected(environ, processes, warns):
    message = single_worker_launch(environ, processes)
    assert (message is not None) == warns
    if warns:
        assert "accelerate launch --multi_gpu --num_processes N" in message


# ---------------------------------------------------------------------------------------------- CLI
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("device")
    pipe = TeraMindPipeline(unet=make_tiny_unet(**FAST_CONFIG), scheduler=BoundaryAwareScheduler())
    pipe.save_pretrained(workdir / "tiny_model")
    genes = np.random.default_rng(0).poisson(1.0, (len(TINY_GENES), 2, 16, 16)).astype(np.float32)
    group = zarr.open_group(str(workdir / "genes.zarr"), mode="w")
    group.create_array("genes", data=genes)
    group.attrs.update({"origin_um": [0.0, 0.0], "gene_names": TINY_GENES, "gene_bin": 16, "um_per_px": 0.5})
    return workdir / "genes.zarr", workdir / "tiny_model"


def generate_args(genes: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--genes", str(genes), "--model", str(model), "--out", str(out), "--steps", "1", "--quiet", *extra]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_generate_refuses_an_unavailable_device_before_writing(run_inputs, tmp_path, capsys):
    genes, model = run_inputs
    out = tmp_path / "cuda.ome.zarr"
    assert cli_main(generate_args(genes, model, out, "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "available here: cpu" in err and "Traceback" not in err
    assert not out.exists()
    # the main job (no --genes) writes its phantom truth beside --out: the device is checked before that too
    assert cli_main(["generate", "--out", str(out), "--device", "cuda:0", "--quiet"]) == 2
    assert not any(tmp_path.iterdir())


def test_generate_on_the_cpu_device(run_inputs, tmp_path, capsys):
    genes, model = run_inputs
    out = tmp_path / "cpu.ome.zarr"
    assert cli_main(generate_args(genes, model, out, "--device", "cpu")) == 0
    assert "on cpu" in capsys.readouterr().out
    assert zarr.open_group(str(out), mode="r")["0"].shape == (2, 2, 256, 256)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="accelerate turns --multi_gpu on by itself with 2+ GPUs")
def test_accelerate_launch_without_multi_gpu_is_reported(run_inputs, tmp_path):
    """A real `accelerate launch --num_processes 2` without --multi_gpu: one process starts, and says so."""
    genes, model = run_inputs
    out = tmp_path / "one_worker.ome.zarr"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "teramind_hf.cli"]
    # --device meta fails fast (exit 2) right after the launch check, before the model loads or anything is written
    result = subprocess.run([*launch, *generate_args(genes, model, out, "--device", "meta")], env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "started 1 process" in result.stderr and "accelerate launch --multi_gpu --num_processes N" in result.stderr
    assert "--device meta" in result.stderr
    assert not out.exists()


def test_generate_help_shows_the_working_launch():
    from teramind_hf.cli import build_parser

    parser = build_parser()
    generate = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "generate" in a.choices).choices["generate"]
    text = generate.format_help()
    assert "accelerate launch --multi_gpu --num_processes N -m teramind_hf.cli generate" in text
    assert "--device" in text and "fp16" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_pipeline_step_state_device_is_checked_and_follows_the_model(tiny_pipeline, tiny_genes):
    """The in-memory step state lives on the model's device by default; a device this machine lacks is refused
    by name before sampling; "cpu" given explicitly is the same run as the default here."""
    with pytest.raises(ValueError, match="step_state_device=cuda: this machine has no CUDA GPU"):
        tiny_pipeline(tiny_genes, gene_names=TINY_GENES, num_inference_steps=1, step_state_device="cuda")
    default = tiny_pipeline(tiny_genes, gene_names=TINY_GENES, num_inference_steps=2, generator=0, output_type="pt").images
    on_cpu = tiny_pipeline(tiny_genes, gene_names=TINY_GENES, num_inference_steps=2, generator=0, output_type="pt",
                           step_state_device="cpu").images
    assert torch.equal(default, on_cpu) and default.device.type == "cpu"


def test_a_step_state_larger_than_the_accelerators_free_memory_is_refused_by_name():
    from teramind_hf.pipelines.device import check_step_state_fits
    from teramind_hf.sampling.grid import TileGrid
    from teramind_hf.sampling.solver_state import Slot
    from teramind_hf.sampling.state import MemoryState

    grid = TileGrid(512, 768, start=0, stop=4)  # 2 z chunks
    slots = [Slot("model_outputs", 1)]
    state = MemoryState(grid, slots, 2)
    needed = MemoryState.nbytes(grid, slots, 2)
    assert needed == state.x.numel() * 4 + state.history.numel() * 4  # the estimate is what the state allocates
    check_step_state_fits(needed, "cuda:0", free_bytes=needed)  # fits exactly
    with pytest.raises(ValueError, match=r'step_state_device=cuda:0: .* needs about 0\.0469 GiB, and cuda:0 has 0\.0469 GiB free; pass step_state_device="cpu"'):
        check_step_state_fits(needed, "cuda:0", free_bytes=needed - 1)
    check_step_state_fits(10**15, "cpu")  # host memory is checked by the pipeline itself, not here
