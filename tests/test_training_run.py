"""The trainer end to end on a tiny config: DDP == single process, kill + resume == uninterrupted, bad input.

Runs are real subprocesses (`python -m teramind_hf.training.train`, `accelerate launch --multi_gpu
--num_processes 2`, DDP over gloo on CPU), each on one thread so the 2-core machine stays usable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import kill_at_checkpoint

TINY = [
    "--block_out_channels", "4", "8", "8", "8", "--gene_map_channels", "8", "8", "4", "--time_embed_dim", "16",
    "--dropout", "0", "--learning_rate", "1e-3", "--no_validation", "--no_progress", "--num_threads", "1",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from teramind_hf.data import make_phantom
    from teramind_hf.data.datasets import write_training_store

    path = tmp_path_factory.mktemp("data") / "phantom.zarr"
    write_training_store(make_phantom(256, 256, num_slices=3, seed=0, um_per_px=1.0).to_volume(), path)
    return path


def _train_cmd(store: Path, out: Path, *extra: str, launcher: list[str] | None = None) -> list[str]:
    prefix = launcher or [sys.executable, "-m"]
    return [*prefix, "teramind_hf.training.train", "--data", str(store), "--output_dir", str(out), *TINY, *extra]


def _losses(out: Path) -> dict[int, float]:
    """step -> loss, the last record of each step (a resumed run re-logs the steps after its checkpoint)."""
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


def test_two_processes_match_one_process_and_accumulation(store, tmp_path):
    steps = ["--max_train_steps", "3", "--checkpointing_steps", "100"]
    one = tmp_path / "one"
    subprocess.run(_train_cmd(store, one, "--train_batch_size", "2", *steps), check=True, env=ENV, timeout=120)
    accum = tmp_path / "accum"
    subprocess.run(
        _train_cmd(store, accum, "--train_batch_size", "1", "--gradient_accumulation_steps", "2", *steps),
        check=True, env=ENV, timeout=120,
    )
    ddp = tmp_path / "ddp"
    # on a machine without GPU, `--multi_gpu` starts 2 processes and the trainer sets up DDP over gloo
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    subprocess.run(_train_cmd(store, ddp, "--train_batch_size", "1", *steps, launcher=launcher), check=True, env=ENV, timeout=180)

    assert json.loads((ddp / "train_summary.json").read_text())["world"] == 2  # really two processes
    reference = _losses(one)
    assert sorted(reference) == [1, 2, 3]
    for other in (_losses(accum), _losses(ddp)):
        for step, loss in reference.items():
            assert abs(other[step] - loss) < 1e-5 * max(1.0, abs(loss)), (step, other[step], loss)
    ref_w, ddp_w = _weights(one), _weights(ddp)
    assert max(float((ref_w[k] - ddp_w[k]).abs().max()) for k in ref_w) < 1e-5


def test_kill_and_resume_equals_uninterrupted(store, tmp_path):
    common = ["--train_batch_size", "2", "--max_train_steps", "6", "--checkpointing_steps", "2",
              "--checkpoints_total_limit", "2", "--use_ema", "--lr_scheduler", "cosine", "--lr_warmup_steps", "2"]
    full = tmp_path / "full"
    subprocess.run(_train_cmd(store, full, *common), check=True, env=ENV, timeout=120)

    killed = tmp_path / "killed"
    kill_at_checkpoint(_train_cmd(store, killed, *common), killed, ENV)
    assert not (killed / "model_index.json").exists()

    subprocess.run(_train_cmd(store, killed, *common, "--resume_from_checkpoint", "latest"), check=True, env=ENV, timeout=120)
    assert _losses(killed) == _losses(full)
    # the log of the resumed run is the uninterrupted log (steps re-done after the checkpoint are not duplicated)
    assert (killed / "train_log.jsonl").read_text() == (full / "train_log.jsonl").read_text()
    full_w, resumed_w = _weights(full), _weights(killed)
    assert all(torch.equal(full_w[k], resumed_w[k]) for k in full_w)
    # the total limit keeps the newest two checkpoints
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


# ------------------------------------------------------------------------------------------------ bad input
def _run_in_process(argv: list[str]):
    from teramind_hf.training.train import parse_args, train

    return train(parse_args(argv))


def test_missing_dataset_path(tmp_path):
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(FileNotFoundError, match=r"--data .*nowhere\.zarr.*expected a zarr training store"):
        _run_in_process(["--data", str(missing), "--output_dir", str(tmp_path / "o"), *TINY])


def test_empty_dataset(tmp_path):
    from teramind_hf.data import GenePanel
    from teramind_hf.data.datasets import create_training_store

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ValueError, match=r"--data .*empty.*directory is empty"):
        _run_in_process(["--data", str(empty_dir), "--output_dir", str(tmp_path / "o"), *TINY])
    no_sections = tmp_path / "nosections.zarr"
    create_training_store(no_sections, GenePanel(["Gad2", "Th"]), 0, 256, 256)
    with pytest.raises(ValueError, match=r"--data .*nosections\.zarr.*dataset is empty"):
        _run_in_process(["--data", str(no_sections), "--output_dir", str(tmp_path / "o"), *TINY])


def test_panel_with_no_overlap(store, tmp_path):
    from teramind_hf import BoundaryAwareScheduler, GeneMorphUNet3DModel, TeraMindPipeline
    from teramind_hf.data import PanelOverlapError

    unet = GeneMorphUNet3DModel(num_genes=3, gene_names=["Foo1", "Foo2", "Foo3"], block_out_channels=(4, 8, 8, 8),
                                gene_map_channels=(8, 8, 4), time_embed_dim=16)
    TeraMindPipeline(unet=unet, scheduler=BoundaryAwareScheduler()).save_pretrained(str(tmp_path / "foo_model"))
    with pytest.raises(PanelOverlapError, match=r"--data: gene panel overlap too small: 0 of the model's 3 genes"):
        _run_in_process(["--data", str(store), "--output_dir", str(tmp_path / "o"), *TINY,
                         "--pretrained", str(tmp_path / "foo_model")])


def test_checkpoint_of_another_model_config(store, tmp_path):
    first = tmp_path / "first"
    _run_in_process(["--data", str(store), "--output_dir", str(first), *TINY, "--max_train_steps", "1",
                     "--checkpointing_steps", "1", "--train_batch_size", "1"])
    other = [a if a != "16" else "32" for a in TINY]  # a different time_embed_dim
    with pytest.raises(ValueError, match=r"checkpoint-1: the checkpoint belongs to another model config \(time_embed_dim: checkpoint 16 vs model 32\)"):
        _run_in_process(["--data", str(store), "--output_dir", str(tmp_path / "second"), *other,
                         "--resume_from_checkpoint", str(first / "checkpoint-1")])
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint .*first: not a checkpoint written by teramind train"):
        _run_in_process(["--data", str(store), "--output_dir", str(tmp_path / "third"), *TINY,
                         "--resume_from_checkpoint", str(first)])


def test_teramind_cli_reports_bad_input(tmp_path, capsys):
    from teramind_hf.cli import main

    code = main(["train", "--data", str(tmp_path / "missing.zarr"), "--output_dir", str(tmp_path / "o")])
    assert code == 2
    assert "teramind train: error: --data" in capsys.readouterr().err
    code = main(["train", "--data", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--collage_edge_weight", "-1"])
    assert code == 2
    assert "--collage_edge_weight must be a positive number" in capsys.readouterr().err


def test_bf16_mixed_precision_and_ema_run(store, tmp_path):
    out = tmp_path / "bf16"
    subprocess.run(
        _train_cmd(store, out, "--mixed_precision", "bf16", "--use_ema", "--max_train_steps", "2", "--train_batch_size", "1",
                   "--checkpointing_steps", "1", "--checkpoints_total_limit", "1"),
        check=True, env=ENV, timeout=120,
    )
    losses = _losses(out)
    assert sorted(losses) == [1, 2] and all(0 < v < 10 for v in losses.values())
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    files = {p.name for p in (out / "checkpoint-2").iterdir()}
    assert {"ema.safetensors", "ema.json", "optimizer.safetensors", "rng-0.json"} <= files  # EMA state, no pickle
    assert all(name.endswith((".safetensors", ".json")) for name in files), files
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag:" in card and "EMA: yes" in card


def test_channels_last_training_matches_default_layout(store, tmp_path):
    """The fast channels_last_3d layout is the same math: losses and saved weights match the default layout."""
    steps = ["--train_batch_size", "2", "--max_train_steps", "3", "--checkpointing_steps", "100", "--use_ema"]
    fast, plain = tmp_path / "fast", tmp_path / "plain"
    subprocess.run(_train_cmd(store, fast, *steps), check=True, env=ENV, timeout=120)
    subprocess.run(_train_cmd(store, plain, *steps, "--no_channels_last"), check=True, env=ENV, timeout=120)
    a, b = _losses(fast), _losses(plain)
    assert sorted(a) == [1, 2, 3] and sorted(b) == [1, 2, 3]
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-6), (step, a, b)
    wa, wb = _weights(fast), _weights(plain)
    assert wa.keys() == wb.keys()
    for key in wa:  # saved in the default layout (safetensors), equal to float tolerance
        assert wa[key].is_contiguous()
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-5, msg=key)


def test_resume_from_a_crafted_ema_checkpoint_runs_no_code_and_names_the_file(store, tmp_path):
    """Checkpoints are safetensors + JSON: a pickle planted as the EMA state (or beside it) is refused, never run."""
    import pickle
    import shutil

    from teramind_hf.training.checkpoint import CheckpointFileError

    from .test_convert_pickle import Payload

    first = tmp_path / "first"
    argv = ["--data", str(store), *TINY, "--max_train_steps", "1", "--checkpointing_steps", "1", "--train_batch_size", "1", "--use_ema"]
    _run_in_process([*argv, "--output_dir", str(first)])
    checkpoint = first / "checkpoint-1"
    assert all(p.suffix in (".safetensors", ".json") for p in checkpoint.iterdir())
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Payload(marker))
    resume = [*argv, "--max_train_steps", "2", "--resume_from_checkpoint", str(checkpoint)]

    shutil.copy(checkpoint / "ema.safetensors", tmp_path / "ema.backup")
    (checkpoint / "ema.safetensors").write_bytes(blob)  # the EMA weights replaced by a crafted pickle
    with pytest.raises(CheckpointFileError, match=r"checkpoint-1/ema\.safetensors: not a valid safetensors file; it is never unpickled"):
        _run_in_process([*resume, "--output_dir", str(tmp_path / "a")])
    torch.save({"shadow_params": Payload(marker)}, checkpoint / "ema.safetensors")  # ... or by a torch.save zip
    with pytest.raises(CheckpointFileError, match=r"checkpoint-1/ema\.safetensors: not a valid safetensors file"):
        _run_in_process([*resume, "--output_dir", str(tmp_path / "b")])
    shutil.copy(tmp_path / "ema.backup", checkpoint / "ema.safetensors")
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(blob)  # where accelerator.save_state puts the EMA
    with pytest.raises(CheckpointFileError, match=r"checkpoint-1/custom_checkpoint_0\.pkl: unexpected file in a teramind checkpoint"):
        _run_in_process([*resume, "--output_dir", str(tmp_path / "c")])
    assert not marker.exists()
    pickle.loads(blob)  # the planted file is live: unpickling it does run the payload
    assert marker.exists()
