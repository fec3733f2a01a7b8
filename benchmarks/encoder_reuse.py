"""Encoder reuse at paper size: FLOPs per tile call and CPU seconds, with and without reuse.

Neighbouring tiles' canvases share patches of the same global patch grid (one patch row or column on the
official grid, two under a shifted offset of the ``diagonal`` grid). With reuse (``patch_ids``, what the sampler
passes) the model encodes each distinct patch of a call once (encoder, mid block, gene maps); the decoders still
run on every canvas. Paper-size configuration (class defaults), random weights, fp32:

* (1) GFLOP per tile call for batches of canvases laid out as the sampler forms them (``torch.utils.flop_counter``
  on the meta device: the call without reuse, less the encoder FLOPs of the patches it does not encode; the
  patch ids come from ``TileGrid.patch_ids``, so the counts of distinct patches are the sampler's);
* (2) CPU seconds (``time.process_time``, wall time next to it) of one call on two horizontally neighbouring
  canvases cut from one region, without and with reuse, interleaved A B B A ..., medians; and whether the two
  outputs are bit-identical (``torch.equal``).

    python benchmarks/encoder_reuse.py --threads 1 --rounds 2
    python benchmarks/encoder_reuse.py --rounds 0        # FLOP counts only (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _perf_common import machine_facts
from perf_tile_call import TIMESTEP, paper_model
from teramind_hf.models.unet_genemorph_3d import patchify
from teramind_hf.sampling import TileGrid

TILE = 256
REGION_TILES = 8  # an 8 x 8-tile region for the whole-region layout


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


def call_flops(model, canvases: int, height: int, width: int) -> float:
    """Counted FLOPs of one collage call on ``canvases`` canvases of ``height x width`` px, every patch encoded."""
    cfg = model.config
    sample = torch.zeros(canvases, cfg.in_channels, cfg.num_slices, height, width, device="meta")
    genes = torch.zeros(canvases, cfg.num_genes, cfg.gene_slices, height // cfg.gene_bin, width // cfg.gene_bin, device="meta")
    return flops(lambda: model(sample, TIMESTEP, genes, path="collage"))


def encoder_flops_per_patch(model) -> float:
    """Counted FLOPs of the patch-local part (gene maps, encoder, mid block) of one patch."""
    cfg = model.config
    x = torch.zeros(1, cfg.in_channels, cfg.num_slices, cfg.sample_size, cfg.sample_size, device="meta")
    bins = cfg.sample_size // cfg.gene_bin
    genes = torch.zeros(1, cfg.num_genes, cfg.gene_slices, bins, bins, device="meta")
    temb = torch.zeros(1, cfg.time_embed_dim, device="meta")
    return flops(lambda: model._encode(x, genes, temb))


def layouts(grid: TileGrid) -> dict[str, list[list[tuple[int, int]]]]:
    """Batches of tiles (one model call each) as the sampler forms them, per layout."""
    row = [(0, c) for c in range(4)]
    block = [(0, 0), (0, 1), (1, 0), (1, 1)]
    return {
        "batch 1 (nothing to share)": [[(0, 0)]],
        "batch 4, one tile row (raster order)": [row],
        "batch 4, a 2 x 2 block of tiles (the sampler's band order, default batch size)": [block],
        f"batch {REGION_TILES ** 2}, a whole {REGION_TILES} x {REGION_TILES}-tile region": [grid.tiles()],
    }


def flop_table(model, grid: TileGrid) -> None:
    per_patch = encoder_flops_per_patch(model)
    print(f"patch-local part (gene maps + encoder + mid block) of one patch: {per_patch / 1e9:.2f} GFLOP")
    for offset, name in [((0, 0), "official grid, offset (0, 0)"), ((16, 16), "diagonal grid, shifted offset (16, 16)")]:
        box = grid.canvas_box(0, 0, offset)
        per_canvas = call_flops(model, 1, box.height, box.width)
        patches = (box.height // grid.patch) * (box.width // grid.patch)
        print(f"\n[{name}] canvas {box.height} x {box.width} px = {patches} patches; "
              f"{per_canvas / 1e9:,.1f} GFLOP per tile call without reuse")
        for label, batches in layouts(grid).items():
            tiles = sum(len(b) for b in batches)
            unique = sum(torch.stack([grid.patch_ids(0, r, c, offset) for r, c in b]).unique().numel() for b in batches)
            saved = (tiles * patches - unique) * per_patch
            print(f"  {label}: {unique / tiles:.2f} of {patches} patches encoded per tile, "
                  f"{(per_canvas - saved / tiles) / 1e9:,.1f} GFLOP per tile call, {saved / tiles / 1e9:,.1f} saved "
                  f"({saved / (tiles * per_canvas):.1%})")
        inner = (grid.tile // grid.patch) ** 2
        saved = (patches - inner) * per_patch
        print(f"  limit, an interior tile of a large region in one call: {inner} of {patches} patches encoded, "
              f"{saved / 1e9:,.1f} GFLOP saved ({saved / per_canvas:.1%})")


def region_canvases(grid: TileGrid, x: torch.Tensor, genes: torch.Tensor, tiles, offset=(0, 0)):
    """Canvases, gene canvases and patch ids of ``tiles`` cut from one region as the sampler cuts them."""
    canvases, gene_canvases, ids = [], [], []
    for r, c in tiles:
        box = grid.canvas_box(r, c, offset)
        ys, xs, pad = grid.inside(box)
        canvases.append(F.pad(x[..., ys, xs], pad, value=grid.fill_value))
        y, x0, h, w = grid.gene_box(box)
        b = grid.gene_bin
        gy, gx = slice(max(y, 0), min(y + h, grid.height // b)), slice(max(x0, 0), min(x0 + w, grid.width // b))
        gpad = (gx.start - x0, x0 + w - gx.stop, gy.start - y, y + h - gy.stop)
        gene_canvases.append(F.pad(genes[..., gy, gx], gpad))
        ids.append(grid.patch_ids(0, r, c, offset))
    return torch.stack(canvases), torch.stack(gene_canvases), torch.stack(ids)


def time_pair(model, grid: TileGrid, rounds: int) -> None:
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.in_channels, cfg.num_slices, grid.height, grid.width, generator=generator)
    genes = torch.poisson(torch.full((cfg.num_genes, cfg.gene_slices, grid.height // 16, grid.width // 16), 0.3), generator=generator)
    sample, gene_canvases, ids = region_canvases(grid, x, genes, [(0, 0), (0, 1)])
    unique = ids.unique().numel()
    per_patch, per_canvas = encoder_flops_per_patch(paper_model("meta")), call_flops(paper_model("meta"), 1, 320, 320)
    expected = 2 * per_canvas / (2 * per_canvas - (ids.numel() - unique) * per_patch)
    candidates = {
        "without reuse": lambda: model(sample, TIMESTEP, gene_canvases, path="collage").sample,
        "with reuse": lambda: model(sample, TIMESTEP, gene_canvases, path="collage", patch_ids=ids).sample,
    }
    cpu = {name: [] for name in candidates}
    wall = {name: [] for name in candidates}
    outputs = {}
    names = list(candidates)
    with torch.inference_mode():
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                started_cpu, started_wall = time.process_time(), time.perf_counter()
                outputs[name] = candidates[name]()
                cpu[name].append(time.process_time() - started_cpu)
                wall[name].append(time.perf_counter() - started_wall)
    a, b = outputs["without reuse"], outputs["with reuse"]
    print(f"\n[CPU seconds] 2 neighbouring {grid.canvas}-px canvases in one call ({ids.numel()} patches, {unique} distinct), "
          f"{rounds} interleaved round(s), medians:")
    for name in names:
        print(f"  {name}: {statistics.median(cpu[name]):.1f} CPU s ({statistics.median(wall[name]):.1f} s wall); "
              f"all CPU s {', '.join(f'{v:.1f}' for v in cpu[name])}")
    ratio = statistics.median(cpu["without reuse"]) / statistics.median(cpu["with reuse"])
    print(f"  CPU-second ratio without / with reuse: {ratio:.3f} (FLOP ratio {expected:.3f}); "
          f"outputs bit-identical: {torch.equal(a, b)} (max |difference| {float((a - b).abs().max()):.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (0: FLOP counts only)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_facts())
    grid = TileGrid(height=REGION_TILES * TILE, width=REGION_TILES * TILE, tile=TILE)
    flop_table(paper_model("meta"), grid)
    if args.rounds > 0:
        time_pair(paper_model(), TileGrid(height=TILE, width=2 * TILE, tile=TILE), args.rounds)
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}")


if __name__ == "__main__":
    main()
