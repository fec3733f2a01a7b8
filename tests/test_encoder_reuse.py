"""Encoder reuse: each global patch shared by canvases of one model call is encoded once, with the same bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline
from teramind_hf.sampling import TileGrid

from .conftest import FAST_CONFIG, TINY_GENES, make_tiny_unet

TILE = 256


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class EncodedPatches:
    """Counts the patches the encoder runs: rows entering the model's first convolution (a forward hook)."""

    def __init__(self, unet):
        self.count = 0
        self.handle = unet.conv_in.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        self.count += args[0].shape[0]


def without_patch_ids(unet):
    """Drop the sampler's patch ids before every forward: the model then encodes every patch of every canvas."""
    return unet.register_forward_pre_hook(lambda module, args, kwargs: (args, {**kwargs, "patch_ids": None}), with_kwargs=True)


@pytest.fixture(scope="module")
def pipe():
    pipe = TeraMindPipeline(unet=make_tiny_unet(**FAST_CONFIG), scheduler=BoundaryAwareScheduler(), tile_size=TILE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def genes() -> np.ndarray:
    """2 x 2 tiles, 4 sections (two z chunks, sampled in the same model calls)."""
    return np.random.default_rng(0).poisson(1.0, (len(TINY_GENES), 4, 2 * TILE // 16, 2 * TILE // 16)).astype(np.float32)


@pytest.mark.parametrize(("grid", "batch_size"), [("official", 4), ("diagonal", 8)])
def test_reuse_gives_the_same_bytes_and_encodes_each_patch_once(pipe, genes, grid, batch_size):
    """Two z chunks x 2 x 2 tiles of a region, 2 steps: the same output bytes with and without reuse (region
    borders in the fill; on ``diagonal`` the (16, 16) offset at every step, and both z chunks in one call), and
    the encoder runs the region's distinct patches only.

    Bytes as the engine's other tests define them (uint8 output): in float this small model is not bit
    invariant to the number of patches per call (its 16 -> 4 time projection rounds the last row of an odd row
    count differently), so reuse moves floats by about 1e-7, as changing the batch size does."""
    kwargs = dict(gene_names=TINY_GENES, num_inference_steps=2, generator=0, output_type="uint8", batch_size=batch_size, grid=grid)
    counter = EncodedPatches(pipe.unet)
    reused = pipe(genes, **kwargs).images
    encoded_with_reuse, counter.count = counter.count, 0
    handle = without_patch_ids(pipe.unet)
    try:
        every = pipe(genes, **kwargs).images
    finally:
        handle.remove()
        counter.handle.remove()
    np.testing.assert_array_equal(reused, every)
    assert reused.std() > 1  # not a constant image
    # per z chunk and offset: 4 canvases of 5 x 5 patches (6 x 6 under the shifted offset) cover 9 x 9 (10 x 10)
    calls = {"official": [(5, 9)], "diagonal": [(5, 9), (6, 10)]}[grid]
    assert counter.count == 2 * 2 * sum(4 * n * n for n, _ in calls)  # 2 steps x 2 z chunks
    assert encoded_with_reuse == 2 * 2 * sum(m * m for _, m in calls)


def test_a_compiled_model_gets_no_patch_ids(pipe, genes):
    """Encoder reuse is off for a compiled model (its unique-patch count would recompile it at every new count) and
    on otherwise; the plan of a run says which."""
    from teramind_hf.pipelines.gene_source import GeneSource
    from teramind_hf.pipelines.sampling_run import reuses_encoder

    unet = make_tiny_unet(**FAST_CONFIG)
    assert reuses_encoder(unet)
    compiled = TeraMindPipeline(unet=unet, scheduler=BoundaryAwareScheduler(), tile_size=TILE)
    unet.compile()  # lazy: nothing is compiled until a call
    assert not reuses_encoder(unet)
    for each, reuse in ((pipe, True), (compiled, False)):
        plan = each.prepare_sampling(GeneSource(genes, list(TINY_GENES), "<array>"), num_inference_steps=1, generator=0)
        assert plan.sampler.reuse_encoder == reuse


def test_naive_tiling_shares_nothing(pipe, genes):
    """Without a halo each tile sees its own fill: no patch ids, every patch is encoded."""
    counter = EncodedPatches(pipe.unet)
    try:
        pipe(genes[:, :2], gene_names=TINY_GENES, num_inference_steps=1, generator=0, output_type="pt", halo=False)
    finally:
        counter.handle.remove()
    assert counter.count == 4 * 25


def test_patch_ids_name_the_same_region_patch_in_every_canvas():
    grid = TileGrid(height=512, width=768, tile=256, stop=4)  # 2 x 3 tiles, 2 z chunks
    for offset in [(0, 0), (16, 16), (48, 0)]:
        box = grid.canvas_box(0, 1, offset)
        ids = grid.patch_ids(1, 0, 1, offset)
        assert ids.shape == (box.height // 64, box.width // 64)
        below, right = grid.patch_ids(1, 1, 1, offset), grid.patch_ids(1, 0, 2, offset)
        rows, cols = ids.shape[0] - 4, ids.shape[1] - 4  # a tile is 4 patches: the rest is shared with neighbours
        assert torch.equal(ids[-rows:], below[:rows]) and torch.equal(ids[:, -cols:], right[:, :cols])
        every = torch.stack([grid.patch_ids(1, r, c, offset) for r, c in grid.tiles()])
        assert every.unique().numel() == (2 * 4 + rows) * (3 * 4 + cols)  # one id per region patch position
        assert not set(every.flatten().tolist()) & set(grid.patch_ids(0, 0, 1, offset).flatten().tolist())  # z chunks


def test_the_model_encodes_a_shared_patch_once_bit_for_bit_and_refuses_an_id_shared_by_different_patches():
    unet = make_tiny_unet()  # TINY_CONFIG: its kernels give a patch the same bits whatever the patches per call
    sample, genes = torch.randn(2, 2, 2, 128, 128), torch.rand(2, len(TINY_GENES), 4, 8, 8)
    ids = torch.arange(8).reshape(2, 2, 2)
    ids[1, 0, 0] = ids[0, 0, 1]
    with torch.no_grad(), pytest.raises(ValueError, match="same id must have the same noisy sample"):
        unet(sample, 10, genes, patch_ids=ids)
    sample[1, ..., :64, :64] = sample[0, ..., :64, 64:]
    with torch.no_grad(), pytest.raises(ValueError, match="same id must have the same genes"):
        unet(sample, 10, genes, patch_ids=ids)
    genes[1, ..., :4, :4] = genes[0, ..., :4, 4:]
    with torch.no_grad(), pytest.raises(ValueError, match="same timestep"):
        unet(sample, torch.tensor([10, 20]), genes, patch_ids=ids)
    with torch.no_grad(), pytest.raises(ValueError, match="integer tensor of shape"):
        unet(sample, 10, genes, patch_ids=ids[:1])
    counter = EncodedPatches(unet)
    with torch.no_grad():
        shared = unet(sample, 10, genes, patch_ids=ids).sample
        assert counter.count == 7
        assert torch.equal(shared, unet(sample, 10, genes).sample)
        assert counter.count == 7 + 8
        per_canvas = torch.tensor([10, 10])  # per-canvas timesteps, equal where ids are shared
        assert torch.equal(unet(sample, per_canvas, genes, patch_ids=ids).sample, unet(sample, per_canvas, genes).sample)


def test_batches_of_four_are_2x2_blocks_of_neighbouring_tiles(pipe):
    """On a 2 x 4-tile region the sampler batches tiles in two-row bands: two 2 x 2 blocks of 9 x 9 distinct
    patches (162 encoded) instead of two tile rows of 5 x 17 (170)."""
    assert TileGrid.band_order([(r, c) for r in range(3) for c in range(2)]) == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1)]
    genes = np.random.default_rng(2).poisson(1.0, (len(TINY_GENES), 2, 2 * TILE // 16, 4 * TILE // 16)).astype(np.float32)
    counter = EncodedPatches(pipe.unet)
    try:
        pipe(genes, gene_names=TINY_GENES, num_inference_steps=1, generator=0, output_type="pt", batch_size=4)
    finally:
        counter.handle.remove()
    assert counter.count == 2 * 81
