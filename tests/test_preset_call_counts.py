"""Model calls per tile of every preset on the embedded model's sampling config, counted on a real pipeline.

docs/performance.md prices a whole brain from these counts and README / presets.py quote them; this test pins
them, so that a changed preset, grid or default cannot leave the figures behind.
"""

from __future__ import annotations

import numpy as np
import pytest

from teramind_hf import GeneMorphUNet3DModel, TeraMindPipeline, default_model_path, packaged_model_path
from teramind_hf.sampling import PRESETS

# calls per 256-px tile on the embedded model, as docs/performance.md's whole-brain table and the README give them
CALLS_PER_TILE = {None: 16, "seamless": 16, "official": 15, "fast": 10, "fastest": 8, "turbo": 4}
# a cheaper model of the embedded one's geometry (genes, slices, patch, gene bins): the count depends on the
# sampling plan (solver, steps, grid schedule), not on the width of the model
NARROW = dict(
    block_out_channels=(2, 4, 8, 16), time_embed_dim=16, gene_map_channels=(4, 4, 2), layers_per_block=1,
    attention_levels=(),
)


@pytest.fixture(scope="module")
def embedded_plan_pipeline(one_torch_thread):
    """The embedded pipeline's scheduler and config (grid, steps) around a narrow real model."""
    embedded = TeraMindPipeline.from_pretrained(default_model_path())
    unet = GeneMorphUNet3DModel.from_config({**embedded.unet.config, **NARROW}).eval()
    plan = {"grid": embedded.config.grid, "num_inference_steps": embedded.config.num_inference_steps}
    pipe = TeraMindPipeline(unet=unet, scheduler=embedded.scheduler, **plan)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("preset", list(CALLS_PER_TILE), ids=lambda p: p or "default")
def test_calls_per_tile_are_steps_times_blended_offsets(embedded_plan_pipeline, preset):
    pipe = embedded_plan_pipeline
    if preset is not None and PRESETS[preset].model is not None:  # a student's preset runs its own (real) weights only
        pipe = TeraMindPipeline.from_pretrained(packaged_model_path(PRESETS[preset].model))
        pipe.set_progress_bar_config(disable=True)
    canvases = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: canvases.append(args[0].shape[0]))
    try:
        # one 256-px tile (16 gene bins of 16 px), 2 sections (one z chunk): every canvas the model sees is this tile's
        genes = np.random.default_rng(0).poisson(0.5, (pipe.unet.config.num_genes, 2, 16, 16)).astype(np.float32)
        pipe(genes, preset=preset, generator=0, output_type="np")
    finally:
        hook.remove()
    _, steps, grid = pipe.sampling_plan(None, None, preset)
    calls_per_tile = sum(canvases)
    assert calls_per_tile == grid.calls_per_tile(steps) == sum(len(grid.offsets_at(step, steps)) for step in range(steps))
    assert calls_per_tile == CALLS_PER_TILE[preset]


def test_every_preset_is_counted():
    assert set(CALLS_PER_TILE) - {None} == set(PRESETS)
