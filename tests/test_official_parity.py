"""The converted official small model reproduces the official reference outputs (fixtures/official_small)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from teramind_hf import BoundaryAwareScheduler, GeneMorphUNet3DModel
from teramind_hf.convert.official import (
    canvas_to_official_patches,
    convert_official_state_dict,
    official_genes_to_canvas,
    official_patches_to_canvas,
    official_rna_to_genes,
)

from .conftest import FIXTURES, OFFICIAL_SMALL

ATOL = 1e-4  # outputs have std ~0.27; thread count alone moves them by ~8e-6
SMALL_GENES = 23


def _coo(io, case):
    return (io[f"{case}.rna_values"], io[f"{case}.rna_indices"], io[f"{case}.rna_shape"])


def _max_err(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return float((ours - reference).abs().max())


def test_small_config_matches_official_parameter_count(official_small_model):
    assert sum(p.numel() for p in official_small_model.parameters()) == 1_482_394


def test_sparse_and_dense_gene_inputs_agree(official_io):
    dense = official_rna_to_genes(official_io["a.rna_dense"], SMALL_GENES)
    sparse = official_rna_to_genes(_coo(official_io, "a"), SMALL_GENES)
    assert torch.equal(dense, sparse)
    assert dense.shape == (2, SMALL_GENES, 4, 4, 4)
    # fixture check from the README: the kept slots sum to 626 (slots >= rna_num are dropped)
    assert float(dense.sum()) == 626.0
    assert float(official_io["a.rna_dense"].sum()) > 626.0


@torch.no_grad()
def test_per_patch_prediction(official_io, official_small_model):
    x = official_patches_to_canvas(official_io["a.x"], (1, 1))
    genes = official_rna_to_genes(official_io["a.rna_dense"], SMALL_GENES)
    out = official_small_model(x, official_io["a.t"], genes, path="patch").sample
    assert _max_err(canvas_to_official_patches(out, 64), official_io["a.pred2"]) <= ATOL


@torch.no_grad()
def test_training_collage_and_patch_paths(official_io, official_small_model):
    x = official_patches_to_canvas(official_io["b.x"], (2, 2))
    genes = official_genes_to_canvas(official_rna_to_genes(_coo(official_io, "b"), SMALL_GENES), (2, 2))
    out = official_small_model(x, official_io["b.t"], genes, path="both")
    assert _max_err(canvas_to_official_patches(out.sample, 64), official_io["b.pred"]) <= ATOL
    assert _max_err(canvas_to_official_patches(out.patch_sample, 64), official_io["b.pred2"]) <= ATOL


@torch.no_grad()
def test_inference_tile_call_and_ddim_step(official_io, official_small_model):
    canvas = official_patches_to_canvas(official_io["c.x"], (5, 5))
    genes = official_genes_to_canvas(official_rna_to_genes(_coo(official_io, "c"), SMALL_GENES), (5, 5))
    scheduler = BoundaryAwareScheduler()
    scheduler.set_timesteps(15)
    assert scheduler.timesteps.tolist() == official_io["schedule.ddim15_timesteps"].flip(0).tolist()
    tile = canvas[..., 32:288, 32:288]
    for case in ("c", "c0"):
        t = scheduler.timesteps[14 - int(official_io[f"{case}.t_index"])]
        assert int(t) == int(official_io[f"{case}.t"])
        eps = official_small_model(canvas, t, genes).sample  # collage path only: 4x4 patches of the tile
        assert eps.shape == (1, 2, 2, 256, 256)
        assert _max_err(canvas_to_official_patches(eps, 64), official_io[f"{case}.pred"]) <= ATOL
        prev = scheduler.step(eps, t, tile).prev_sample
        reference = official_patches_to_canvas(official_io[f"{case}.sample"], (1, 1))
        assert _max_err(prev, reference) <= ATOL


@torch.no_grad()
def test_gene_branch_matches_official_intermediates(official_io, official_small_model):
    inter = load_file(str(OFFICIAL_SMALL / "intermediates.safetensors"))
    genes = official_rna_to_genes(official_io["a.rna_dense"], SMALL_GENES)
    maps = official_small_model.encode_genes(genes)[::-1]  # G0 (coarsest) .. G3 (finest)
    assert _max_err(maps[0], inter["a.rna_blocks.0"]) <= 1e-5
    for level, channels in ((1, 16), (2, 4), (3, 1)):  # the fixture keeps patch 0, first channels
        assert _max_err(maps[level][:1, :channels], inter[f"a.rna_blocks.{level}.p0c0_{channels}"]) <= 1e-5
        mean, rms = maps[level].mean(dim=(0, 2, 3, 4)), maps[level].pow(2).mean(dim=(0, 2, 3, 4)).sqrt()
        assert _max_err(torch.stack([mean, rms]), inter[f"a.rna_blocks.{level}.chstats"]) <= 1e-5


def test_schedule_matches_official(official_io):
    scheduler = BoundaryAwareScheduler()
    scheduler.set_timesteps(15)
    kept = scheduler._stepper.alphas_cumprod
    assert torch.equal(kept, official_io["schedule.ddim15_alphas_cumprod"].float())


def test_paper_size_config_and_converter_cover_every_official_key():
    rows = json.loads((FIXTURES / "official_unet_ours_229_keys.json").read_text())
    assert len(rows) == 399
    state = {key: torch.zeros(shape, dtype=torch.float32) for key, shape, _ in rows}
    model = convert_official_state_dict(state)
    assert sum(p.numel() for p in model.parameters()) == 213_789_608
    assert model.config.num_genes == 229
    assert sum(p.numel() for p in GeneMorphUNet3DModel().parameters()) == 213_789_608
    assert len(model.state_dict()) == len(rows)
