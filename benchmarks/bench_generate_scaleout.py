"""Tiles/s of `teramind generate` with 1 process vs N processes under `accelerate launch` (1 torch thread each).

    python benchmarks/bench_generate_scaleout.py [--processes 2] [--tiles 4] [--steps 2] [--model DIR]

Prints each run's tile-steps/s and the ratio (target >= 1.7 for 2 processes on 2 cores). The rate counts the
(stage, tile) units of all stages divided by the wall time of the stage loop on the main process (barriers
included; process start-up, model loading, checks and the pyramid excluded, also printed). Other users of the machine distort it: the
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_generate_memory import ENV, write_genes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(processes: int, genes: Path, out: Path, steps: int, model: str | None, report: Path) -> dict:
    cli = ["generate", "--genes", str(genes), "--out", str(out), "--steps", str(steps), "--quiet",
           "--threads", "1", "--batch-size", "1", "--memory-limit-mb", "0", "--report-json", str(report)]
    if model:
        cli += ["--model", model]
    if processes == 1:
        cmd = [sys.executable, "-m", "teramind_hf.cli", *cli]
    else:  # on CPU, `--multi_gpu` is what starts N torchrun workers; they form a gloo group
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "teramind_hf.cli", *cli]
    subprocess.run(cmd, check=True, env=ENV, stderr=subprocess.DEVNULL)
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tiles", type=int, default=4, help="region is tiles x tiles (x 1 z chunk)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    from teramind_hf import TeraMindPipeline, default_model_path

    names = list(TeraMindPipeline.from_pretrained(args.model or default_model_path()).unet.config.gene_names)
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        genes = Path(tmp) / "genes.zarr"
        write_genes(genes, names, args.tiles)
        rates = {}
        for n in (1, args.processes):
            r = run(n, genes, Path(tmp) / f"out_{n}.ome.zarr", args.steps, args.model, Path(tmp) / f"r{n}.json")
            rates[n] = r["tiles"] * (r["steps"] + 1) / r["sampling_seconds"]
            per_step = r["sampling_seconds"] / (r["tiles"] * r["steps"]) * n
            print(f"{n} process(es): {r['tiles']} tiles x ({r['steps']} steps + init) in {r['sampling_seconds']:.1f} s of sampling "
                  f"({r['seconds']:.1f} s in all) = "
                  f"{rates[n]:.3f} tile-stages/s ({per_step:.2f} s per tile-step per process)")
    print(f"load after: {os.getloadavg()}")
    print(f"speed-up {args.processes} vs 1 process: {rates[args.processes] / rates[1]:.2f}x (target >= 1.7 for 2)")


if __name__ == "__main__":
    main()
