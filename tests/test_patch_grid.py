"""The model's 64-px patch grid, measured on a small held-out region: the worst-2-D-phase border score of samples
with the official grid and with the ``diagonal`` grid schedule, against the phantom truth's own score.

The embedded model draws its patch grid into samples (issue 12); blending two grid offsets at every step removes
most of it. The score is taken at every 2-D phase of the grid (the worst counts), so moving the borders cannot
pass.
"""

from __future__ import annotations

import pytest
import torch

from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline
from teramind_hf.data.phantom import make_phantom
from teramind_hf.eval.grid import step_profile
from teramind_hf.sampling import Preset

STEPS = 3  # 4 steps gave the same picture (truth 1.12, official 2.18, diagonal 1.30) in 1.4x the time


@pytest.fixture(scope="module")
def scores():
    torch.set_num_threads(1)
    pipe = TeraMindPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    tissue = make_phantom(256, 512, num_slices=2, seed=3, um_per_px=DEFAULT_MODEL_UM_PER_PX)  # held out (seed >= 2)
    result = {"truth": step_profile(tissue.images).worst_phase_2d(64)[0]}
    for grid in ("official", "diagonal"):  # DDIM on either grid
        out = pipe(tissue.genes, gene_names=list(tissue.panel), preset=Preset("ddim", STEPS), grid=grid, generator=0,
                   output_type="uint8")
        result[grid] = step_profile(out.images).worst_phase_2d(64)[0]
    # the shipped default sampler (the model's own scheduler and grid: DPM-Solver++ SDE on "diagonal"), at 3 steps
    out = pipe(tissue.genes, gene_names=list(tissue.panel), num_inference_steps=STEPS, generator=0, output_type="uint8")
    result["default"] = step_profile(out.images).worst_phase_2d(64)[0]
    print(result)
    return result


def test_official_grid_shows_the_patch_grid(scores):
    assert scores["official"] > scores["truth"] + 0.5, scores


def test_diagonal_grid_removes_most_of_the_patch_grid(scores):
    # here (3 steps, one small region) truth 1.12, official 2.24, diagonal 1.28; on 3 held-out 512-px regions at 15
    # steps the excess over the truth falls from 1.14 to 0.10 (docs/seams-research.md)
    assert scores["diagonal"] - scores["truth"] <= (scores["official"] - scores["truth"]) / 4, scores


def test_the_default_sampler_has_no_visible_patch_grid(scores):
    assert scores["default"] - scores["truth"] <= (scores["official"] - scores["truth"]) / 4, scores
