"""The tile sampler against plain references: per-tile initial noise, and a whole-canvas sampling loop.

``reference_sample`` is the sampling loop written as plainly as possible (in the spirit of NVlabs edm's
``edm_sampler``): the region as ONE canvas (region + halo, fill outside), the diffusers scheduler's own
``set_timesteps`` / ``scale_model_input`` / ``step`` on the whole region, the model called directly. The tile
sampler must equal it: a region's tiles, with halos read from their neighbours at the same step, predict what one
canvas over the region predicts, and the per-tile solver history is the whole region's history cut in tiles.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
import torch.nn.functional as F

from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline
from teramind_hf.pipelines.gene_source import GeneSource, RegionGenes
from teramind_hf.sampling import GeneCanvases, MemoryState, TileGrid, TileSampler, TileSolver
from teramind_hf.sampling.presets import scheduler_from_name
from teramind_hf.sampling.sampler import tile_noise
from teramind_hf.schedulers.scheduling_boundary_aware import tile_seed

from .conftest import FAST_CONFIG, TINY_GENES, make_tiny_unet

TILE, HALO, PATCH, BIN = 256, 32, 64, 16
STEPS = 3


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest)."""


@pytest.fixture(scope="module")
def unet():
    return make_tiny_unet(**FAST_CONFIG)


# ---------------------------------------------------------------------------------- per-tile initial noise
def test_tile_noise_is_drawn_per_seed_z_chunk_row_and_column_of_the_global_tile_grid():
    grid = TileGrid(height=3 * 64, width=3 * 64, tile=64, stop=4)  # 3 x 3 tiles, z chunks starting at 0 and 2
    draws = {(seed, k, r, c): tile_noise(grid, seed, k, r, c, stains=2) for seed in (0, 1) for k in (0, 1) for r, c in grid.tiles()}
    assert next(iter(draws.values())).shape == (2, 2, 64, 64)
    # every (seed, z chunk, row, col) has its own noise: ignoring any one of them makes two draws equal
    assert len({tuple(noise.flatten()[:16].tolist()) for noise in draws.values()}) == len(draws) == 36
    # keyed by the tile's place in the gene source, not in the region: a sub-region (2 tiles at tile (1, 1),
    # sections 2..4) draws the noise the full run draws there
    sub = TileGrid(height=64, width=128, origin=(64, 64), tile=64, start=2, stop=4)
    for c in (0, 1):
        assert torch.equal(tile_noise(sub, 1, 0, 0, c, stains=2), draws[(1, 1, 1, 1 + c)])
    # the documented key, sha256(seed, chunk start, global row, global col): outputs of a seed stay reproducible
    digest = hashlib.sha256(b"1:2:1:2").digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    assert torch.equal(torch.randn((2, 2, 64, 64), generator=generator), draws[(1, 1, 1, 2)])
    scaled = tile_noise(grid, 1, 1, 1, 2, stains=2, sigma=3.0)
    torch.testing.assert_close(scaled, 3.0 * draws[(1, 1, 1, 2)], rtol=0, atol=0)


@pytest.mark.parametrize("order,batch", [("raster", 4), ("reverse", 1)])
def test_the_sampler_starts_from_tile_noise_in_memory_and_streamed(unet, order, batch):
    """The initial state the sampler really runs from (streamed path: noise drawn per tile by the sampler; pipeline
    path: ``prepare_latents``) is ``tile_noise`` of each tile, whatever the tile order or batch size."""
    pipe = TeraMindPipeline(unet=unet, scheduler=BoundaryAwareScheduler(), tile_size=64)
    genes = torch.poisson(torch.full((len(TINY_GENES), 4, 12, 16), 0.8), generator=torch.Generator().manual_seed(0))
    grid = pipe.tile_grid(128, 192, origin=(64, 0), start=0, stop=4)  # 2 x 3 tiles below the source's first tile row
    solver = TileSolver(pipe.sampling_scheduler(), 1, seed=5)  # one step: state parity 0 keeps the initial noise
    reader = RegionGenes(GeneSource(genes, TINY_GENES, "genes"), unet.config, (4, 0), (8, 12))
    sampler = TileSampler(unet, solver, grid, GeneCanvases(reader, grid, {(0, 0)}), batch_size=batch, tile_order=order)
    state = MemoryState(grid, solver.slots, stains=2)
    sampler.run(state)
    prepared = pipe.prepare_latents(grid, 5, solver.init_noise_sigma)
    assert len(grid.chunk_starts) == 2
    for k in range(2):
        for r, c in grid.tiles():
            ys, xs = grid.tile_slices(r, c)
            expected = tile_noise(grid, 5, k, r, c, stains=2, sigma=solver.init_noise_sigma)
            assert torch.equal(state.x[0, k, :, :, ys, xs], expected)
            assert torch.equal(prepared[k, :, :, ys, xs], expected)
    assert not torch.equal(state.x[0, 0, ..., :64, :64], state.x[0, 0, ..., 64:, :64])  # rows differ


# ---------------------------------------------------------------------------------- whole-canvas reference
def tent_weights(size: int, offsets, period: int = PATCH // 2, power: float = 1.0) -> torch.Tensor:
    """Per-pixel weights of each grid offset, summing to 1: a separable tent, lowest next to the offset's patch
    borders (every ``period`` px from it), raised to ``power``."""

    def tent(offset):
        u = (torch.arange(size, dtype=torch.float64) - offset) % period
        return torch.minimum(u + 0.5, period - u - 0.5)

    raw = torch.stack([(tent(dy)[:, None] * tent(dx)[None, :]) ** power for dy, dx in offsets])
    return (raw / raw.sum(0)).float()


def reference_sample(unet, scheduler, genes, noise, steps, offsets=((0, 0),), power=1.0, generator_at=None):
    """Sample one z chunk of a region as one canvas. ``genes`` ``(G, 4, H/16, W/16)`` are the chunk's gene
    sections, ``noise`` ``(1, stains, 2, H, W)`` the initial state; several grid ``offsets`` are blended with
    tent weights; ``generator_at(i)``: the generator of step ``i`` (stochastic solvers)."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(steps)
    x, size = noise.clone(), noise.shape[-1]
    weights = tent_weights(size, offsets, power=power) if len(offsets) > 1 else torch.ones(1, size, size)
    for i, t in enumerate(scheduler.timesteps):
        scaled = scheduler.scale_model_input(x, t)
        output = 0
        for (dy, dx), weight in zip(offsets, weights):
            # pad so that the model's patch borders lie at the offset; the output starts half a patch in
            top, left = HALO + (PATCH - dy if dy else 0), HALO + (PATCH - dx if dx else 0)
            bottom, right = HALO + dy, HALO + dx
            canvas = F.pad(scaled, (left, right, top, bottom), value=-1.0)
            gene_canvas = F.pad(genes[None], (left // BIN, right // BIN, top // BIN, bottom // BIN))
            out = unet(canvas, t, gene_canvas, path="collage").sample
            out = out[..., top - HALO : top - HALO + size, left - HALO : left - HALO + size]
            output = output + weight * out
        generator = generator_at(i) if generator_at is not None else None
        x = scheduler.step(output, t, x, generator=generator).prev_sample
    return x.clamp(-1, 1)


CASES = [
    # (scheduler name, grid, region in tiles)
    ("ddim", "official", 1),
    ("dpm", "official", 1),
    ("dpm-sde", "official", 1),  # noise per step: the tile's own stream (one tile = the whole region)
    ("unipc", "official", 1),
    ("dpm", "official", 2),  # 2 x 2 tiles (halos from the neighbours) against one canvas over the region
    ("dpm", "diagonal", 1),  # two grid offsets blended at every step (squared tents)
    ("dpm", "diagonal", 2),
]


@pytest.mark.parametrize("name,grid,tiles", CASES, ids=[f"{n}-{g}-{t}x{t}" for n, g, t in CASES])
def test_pipeline_equals_the_whole_canvas_reference_sampler(unet, name, grid, tiles):
    pipe = TeraMindPipeline(unet=unet, scheduler=BoundaryAwareScheduler(), tile_size=TILE)
    pipe.scheduler = scheduler_from_name(name, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    size, seed, steps = tiles * TILE, 4, STEPS if tiles == 1 else 2  # (2 steps: the multistep history is used)
    genes = torch.poisson(torch.full((len(TINY_GENES), 2, size // BIN, size // BIN), 1.0), generator=torch.Generator().manual_seed(2))
    images = pipe(genes, gene_names=TINY_GENES, num_inference_steps=steps, generator=seed, grid=grid, output_type="pt").images

    noise = pipe.prepare_latents(pipe.tile_grid(size, size), seed, pipe.sampling_scheduler().init_noise_sigma)
    window = F.pad(genes, (0, 0, 0, 0, 1, 1))  # the chunk's 4 gene sections: one zero section past each end
    offsets, power = (((0, 0), (16, 16)), 2.0) if grid == "diagonal" else (((0, 0),), 1.0)
    generator_at = None
    if name == "dpm-sde":  # the engine's documented stream: run seed, 1, step, chunk start, global row, global col
        generator_at = lambda i: torch.Generator().manual_seed(tile_seed(seed, 1, i, 0, 0, 0))  # noqa: E731
    with torch.no_grad():
        expected = reference_sample(unet, pipe.sampling_scheduler(), window, noise, steps, offsets, power, generator_at)
    expected = expected[0].permute(1, 0, 2, 3)  # (chunk 0, stains, slices, H, W) -> (Z, stains, H, W)
    assert expected.std() > 0.1
    if tiles == 1:  # the tile's canvas is the region's canvas: the same bytes
        assert torch.equal(images, expected)
    else:  # a tile canvas computes the region canvas's sums, in another order in its convolutions
        torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
