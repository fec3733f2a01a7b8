"""End-to-end `teramind generate` (streamed to OME-Zarr): voxels/s, the share of a tile-step spent outside the
model, peak RSS, and the model variants side by side (fp32, bf16, fp16, compiled), with the accuracy of each
variant's samples against the fp32 samples of the same run.

All variants run in this one process on the same phantom region (held-out seed, never trained on), interleaved
A B A B (one run of each per round), medians of the rounds. Every time is given in CPU seconds of this process
(``time.process_time``, all its threads) next to wall seconds; speed-ups are ratios of CPU seconds (under load the
wall clock also counts the time other jobs held the core):

* (c) voxels per CPU second (and per wall second) of the whole call (setup, sampling, pyramid), CPU seconds per
  tile-step of the sampling loop, and the speed-up against fp32;
* (d) per-tile overhead outside the model: 1 - (CPU time inside ``unet(...)``) / (CPU time of the whole call),
  i.e. reading canvases and genes, the solver update, writing step buffers / level 0, the pyramid, Python
  (eager variants only: the hooks cannot see inside a compiled model);
* (e) peak RSS during the call (sampled every 5 ms);
* accuracy over the whole sampling run: PSNR and SSIM of each variant's uint8 level 0 against the fp32 one, the
  seam score, and (when `teramind_hf.eval.metrics.realism_metrics` is available) the realism metrics of fp32
  and of the variant against the phantom's true images.

    python benchmarks/perf_generate.py --threads 1                                  # fp32 vs bf16, 2x2 tiles, 15 steps
    python benchmarks/perf_generate.py --threads 1 --variants fp32,bf16,compile --steps 4 --rounds 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from _perf_common import Stopwatch, machine_facts, peak_rss
from teramind_hf import DEFAULT_MODEL_UM_PER_PX
from teramind_hf.data.phantom import make_phantom
from teramind_hf.eval.seams import seam_score_array
from teramind_hf.pipelines.streaming import generate_to_zarr, load_pipeline

TILE = 256


def write_store(path: Path, tiles: int, sections: int, seed: int):
    phantom = make_phantom(tiles * TILE, tiles * TILE, num_slices=sections, seed=seed, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("genes", data=phantom.genes, chunks=(phantom.genes.shape[0], 1, 16, 16))
    group.attrs.update({"gene_names": list(phantom.panel), "gene_bin": phantom.gene_bin, "um_per_px": phantom.um_per_px})
    return phantom


class ModelTimer:
    """Wall and CPU seconds spent inside the model's forward (eager models: forward pre/post hooks)."""

    def __init__(self, unet: torch.nn.Module):
        self.wall, self.cpu, self._start = 0.0, 0.0, (0.0, 0.0)
        self.handles = [unet.register_forward_pre_hook(self._begin), unet.register_forward_hook(self._end)]

    def reset(self) -> None:
        self.wall, self.cpu = 0.0, 0.0

    def _begin(self, *_):
        self._start = (time.perf_counter(), time.process_time())

    def _end(self, *_):
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]


def make_variant(name: str, model: str | None):
    """(pipeline, timer or None). ``compile``: fp32 compiled (its one-off compilation is a warm-up run)."""
    pipe = load_pipeline(model, dtype="fp32" if name == "compile" else name)
    pipe.set_progress_bar_config(disable=True)
    if name == "compile":
        pipe.enable_compile()
        return pipe, None
    return pipe, ModelTimer(pipe.unet)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    planes = [(x, y) for x, y in zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))]
    return float(np.mean([structural_similarity(x, y, data_range=255) for x, y in planes]))


def realism(level0: np.ndarray, phantom) -> dict | None:
    try:
        from teramind_hf.eval.metrics import realism_metrics
    except ImportError:
        return None
    mean = realism_metrics(level0.transpose(1, 0, 2, 3), phantom.images.transpose(1, 0, 2, 3), phantom.um_per_px)["mean"]
    return {k: v for k, v in mean.items() if isinstance(v, (int, float))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="fp32,bf16", help="comma list of fp32, bf16, fp16, compile (fp32 first)")
    parser.add_argument("--tiles", type=int, default=2, help="region is tiles x tiles")
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant (A B A B: one of each per round)")
    parser.add_argument("--seed", type=int, default=2, help="phantom seed (>= 2: held out from training)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    if names[0] != "fp32":
        raise SystemExit("--variants must start with fp32 (the reference for the accuracy figures)")
    print(machine_facts())

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "genes.zarr"
        phantom = write_store(store, args.tiles, args.sections, args.seed)
        variants = {name: make_variant(name, args.model) for name in names}
        if "compile" in variants:  # compile once outside the timed rounds (graphs for full and last batches)
            started = time.perf_counter()
            generate_to_zarr(variants["compile"][0], store, Path(tmp) / "warm.ome.zarr", num_inference_steps=1,
                             batch_size=args.batch_size, progress_bar=False)
            print(f"compile warm-up (1 step): {time.perf_counter() - started:.1f} s")
        runs: dict[str, list[dict]] = {name: [] for name in names}
        level0: dict[str, np.ndarray] = {}
        for round_ in range(args.rounds):
            for name in names:
                pipe, timer = variants[name]
                if timer is not None:
                    timer.reset()
                out = Path(tmp) / f"{name}_{round_}.ome.zarr"
                with peak_rss() as rss, Stopwatch() as watch:
                    report = generate_to_zarr(pipe, store, out, num_inference_steps=args.steps, generator=0,
                                              batch_size=args.batch_size, progress_bar=False)
                pixels = zarr.open_group(str(out), mode="r")["0"][...]
                if name in level0:
                    assert np.array_equal(level0[name], pixels), f"{name}: two runs gave different bytes"
                level0[name] = pixels
                runs[name].append({
                    "wall": watch.wall, "cpu": watch.cpu, "sampling_wall": report.sampling_seconds,
                    "voxels": report.voxels,
                    "model_cpu": timer.cpu if timer is not None else float("nan"), "rss": rss["peak_mb"],
                    "tile_steps": report.tiles * args.steps,
                })
                print(f"  round {round_} {name}: {watch.cpu:.1f} CPU-s ({watch.wall:.1f} s wall); {report.summary()}")

        print(f"\n{args.tiles}x{args.tiles} tiles x {args.sections} sections x {args.steps} steps, batch {args.batch_size}, "
              f"phantom seed {args.seed}; medians of {args.rounds} interleaved round(s) (A B A B)")
        reference = level0["fp32"]
        base = {k: statistics.median(r[k] for r in runs["fp32"]) for k in ("cpu", "wall")}
        for name in names:
            med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
            line = (
                f"{name:8s} (c) {med['voxels'] / med['cpu']:,.0f} voxels per CPU-s end to end "
                f"({med['voxels'] / med['wall']:,.0f} per wall-s; {med['cpu']:.1f} CPU-s, {med['wall']:.1f} s wall; "
                f"sampling loop {med['sampling_wall'] / med['tile_steps']:.2f} s wall per tile-step); "
                f"speed-up vs fp32 {base['cpu'] / med['cpu']:.2f}x in CPU seconds "
                f"({base['wall'] / med['wall']:.2f}x wall)\n"
            )
            if not math.isnan(med["model_cpu"]):  # eager: the model's share is known
                outside_cpu = med["cpu"] - med["model_cpu"]
                line += (
                    f"         (d) outside the model: {outside_cpu / med['cpu']:.1%} of the call's CPU seconds "
                    f"({outside_cpu / med['tile_steps'] * 1e3:.0f} CPU-ms per tile-step)\n"
                )
            line += f"         (e) peak RSS {med['rss']:.0f} MB"
            if args.tiles > 1:  # a seam needs an inner tile border
                line += f"\n         seam score {seam_score_array(level0[name], TILE).score:.3f}"
            if name != "fp32":
                line += f"\n         vs fp32 samples: PSNR {psnr(level0[name], reference):.2f} dB, SSIM {ssim(level0[name], reference):.4f}, " \
                        f"max |diff| {int(np.abs(level0[name].astype(int) - reference).max())} grey levels"
            real = realism(level0[name], phantom)
            if real is not None:
                line += "\n         realism vs phantom truth: " + ", ".join(f"{k} {v:.3f}" for k, v in real.items())
            print(line)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}")


if __name__ == "__main__":
    main()
