"""Peak RSS of `teramind generate` on an 8x8-tile region vs a 2x2-tile region (same model, each in its own process).

    python benchmarks/bench_generate_memory.py [--steps 1] [--model DIR]

Prints both peaks and their ratio (target <= 1.15: memory must not grow with the region). Default model: the
embedded one. Each run goes through the real CLI (`python -m teramind_hf.cli generate`) in a fresh subprocess,
and the peak is that process's ru_maxrss, reported by the run itself (--report-json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, not an installed copy
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_genes(path: Path, gene_names: list[str], tiles: int, gene_bin: int = 16, tile: int = 256) -> None:
    import zarr

    bins = tiles * tile // gene_bin
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("genes", shape=(len(gene_names), 2, bins, bins), chunks=(len(gene_names), 1, 16, 16), dtype="float32")
    rng = np.random.default_rng(0)
    for z in range(2):  # written section by section
        array[:, z] = rng.poisson(2.0, (len(gene_names), bins, bins)).astype(np.float32)
    group.attrs["gene_names"] = gene_names


def run(genes: Path, out: Path, steps: int, model: str | None, report: Path) -> dict:
    cmd = [sys.executable, "-m", "teramind_hf.cli", "generate", "--genes", str(genes), "--out", str(out),
           "--steps", str(steps), "--quiet", "--threads", "1", "--report-json", str(report)]
    if model:
        cmd += ["--model", model]
    subprocess.run(cmd, check=True, env=ENV)
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    from teramind_hf import TeraMindPipeline, default_model_path

    names = list(TeraMindPipeline.from_pretrained(args.model or default_model_path()).unet.config.gene_names)
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for tiles in (2, 8):
            genes = Path(tmp) / f"genes_{tiles}.zarr"
            write_genes(genes, names, tiles)
            results[tiles] = run(genes, Path(tmp) / f"out_{tiles}.ome.zarr", args.steps, args.model, Path(tmp) / f"r{tiles}.json")
            r = results[tiles]
            print(f"{tiles}x{tiles} tiles: peak RSS {r['peak_rss_mb']:.0f} MB, step buffers in {r['step_buffers']}, "
                  f"{r['voxels']:,} voxels in {r['seconds']:.1f} s")
        ratio = results[8]["peak_rss_mb"] / results[2]["peak_rss_mb"]
        print(f"peak RSS ratio 8x8 / 2x2 = {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
