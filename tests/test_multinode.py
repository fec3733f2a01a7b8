"""`accelerate launch --num_machines 2` as two "machines" on this one (ranks 0 and 1, one process each, gloo,
sharing the output store) gives the same bytes as one process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from teramind_hf.pipelines.streaming import generate_to_zarr

from .test_generate import ENV, REGION, free_port, level0
from .test_generate import gene_store, genes, model_dir, pipe, workdir  # noqa: F401 (fixtures)

SLICES, STEPS = (0, 2), 1  # one z chunk, one step: the launch is what is tested


def machine_launch(rank: int, port: int) -> list[str]:
    """What each node of a 2-node job runs (SLURM: one task per node, rank from $SLURM_NODEID)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
        "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "teramind_hf.cli",
    ]


def test_two_machines_give_the_bytes_of_one_process(pipe, gene_store, model_dir, workdir):  # noqa: F811
    one = workdir / "one_process.ome.zarr"
    generate_to_zarr(pipe, gene_store, one, region=REGION, slices=SLICES, num_inference_steps=STEPS, generator=0,
                     shard_tiles=None, progress_bar=False)  # unsharded, one process
    out, port = workdir / "two_machines.ome.zarr", free_port()
    cli = [
        "generate", "--genes", str(gene_store), "--out", str(out), "--model", str(model_dir), "--quiet",
        "--region", ",".join(map(str, REGION)), "--slices", ",".join(map(str, SLICES)), "--steps", str(STEPS),
        "--seed", "0", "--batch-size", "1", "--threads", "1", "--shard-tiles", "1",  # 4 work units for 2 machines
    ]
    machines = [
        subprocess.Popen([*machine_launch(rank, port), *cli], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    results = [m.communicate(timeout=240) for m in machines]
    for machine, (stdout, stderr) in zip(machines, results):
        assert machine.returncode == 0, stderr[-3000:]
    assert "2 process(es)" in results[0][0]  # printed by the main process (rank 0) only
    assert "process(es)" not in results[1][0]
    np.testing.assert_array_equal(level0(out), level0(one))
    assert not (out / "_teramind_steps").exists()
