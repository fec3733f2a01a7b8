"""The training loss reproduces the official `training_losses` value (fixture case (b)) and draws reproducibly."""

from __future__ import annotations

import torch

from teramind_hf.convert.official import official_genes_to_canvas, official_patches_to_canvas, official_rna_to_genes
from teramind_hf.schedulers import BoundaryAwareScheduler
from teramind_hf.training.losses import (
    TrainingWindows,
    boundary_aware_loss,
    draw_windows,
    noisy_window,
    sample_seed,
    training_alphas_cumprod,
)


def _fixture_windows(io, num_genes: int) -> TrainingWindows:
    grid = (2, 2)
    rna = (io["b.rna_values"], io["b.rna_indices"], torch.Size(io["b.rna_shape"].tolist()))
    return TrainingWindows(
        x0=official_patches_to_canvas(io["b.x0"], grid),
        noise=official_patches_to_canvas(io["b.noise"], grid),
        mask=official_patches_to_canvas(io["b.loss_mask"].float(), grid),
        genes=official_genes_to_canvas(official_rna_to_genes(rna, num_genes), grid),
        timesteps=io["b.t"],
        origins=io["b.window_index"].reshape(1, 2).repeat(2, 1),
    )


def test_noisy_window_is_bit_exact(official_io, official_small_model):
    windows = _fixture_windows(official_io, official_small_model.config.num_genes)
    abar = training_alphas_cumprod(BoundaryAwareScheduler())
    x_t = noisy_window(windows.x0, windows.noise, windows.mask, windows.timesteps, abar)
    assert torch.equal(x_t, official_patches_to_canvas(official_io["b.x"], (2, 2)))


def test_loss_matches_official_training_loss(official_io, official_small_model):
    windows = _fixture_windows(official_io, official_small_model.config.num_genes)
    abar = training_alphas_cumprod(BoundaryAwareScheduler())
    with torch.no_grad():
        out = boundary_aware_loss(official_small_model, windows, abar)
    expected = float(official_io["b.loss"].reshape(-1)[0])
    assert abs(expected - 1.6954545) < 1e-6
    assert abs(float(out.loss) - expected) < 1e-4, (float(out.loss), expected)


def test_draws_depend_only_on_seed_step_and_index():
    images = torch.rand(3, 2, 2, 256, 256) * 2 - 1
    genes = torch.rand(3, 5, 4, 16, 16)
    seeds = [sample_seed(7, 3, k) for k in range(3)]
    full = draw_windows(images, genes, seeds)
    # the same samples drawn one at a time (as another process / micro-batch would) give the same draws
    for k in range(3):
        one = draw_windows(images[k : k + 1], genes[k : k + 1], seeds[k : k + 1])
        assert torch.equal(one.noise[0], full.noise[k]) and torch.equal(one.timesteps[0], full.timesteps[k])
    assert full.x0.shape == (3, 2, 2, 128, 128) and full.genes.shape == (3, 5, 4, 8, 8)
    # the mask marks the padding: windows at origin 0 or 3 (in patches) touch the 32-px pad
    for k in range(3):
        r, c = full.origins[k].tolist()
        touches_pad = r in (0, 3) or c in (0, 3)
        assert bool((full.mask[k] == 0).any()) == touches_pad
    assert sample_seed(7, 3, 0) != sample_seed(7, 4, 0) != sample_seed(8, 3, 0)


def test_prediction_targets_are_the_diffusers_parameterisations(official_io):
    from teramind_hf.training.losses import prediction_target

    windows = _fixture_windows(official_io, 23)
    abar = training_alphas_cumprod(BoundaryAwareScheduler())
    assert torch.equal(prediction_target(windows, abar, "epsilon"), windows.noise)
    assert torch.equal(prediction_target(windows, abar, "sample"), windows.x0)
    v = prediction_target(windows, abar, "v_prediction")
    # x0 is recovered from (x_t, v) exactly as diffusers' DDIM does for v-prediction
    a = abar[windows.timesteps].float().reshape(-1, 1, 1, 1, 1)
    x_t = a.sqrt() * windows.x0 + (1 - a).sqrt() * windows.noise
    assert torch.allclose(a.sqrt() * x_t - (1 - a).sqrt() * v, windows.x0, atol=1e-5)


def test_sample_prediction_loss_is_zero_for_a_model_that_returns_x0(official_io):
    """The x0 target goes through the same two terms: a perfect x0 predictor has zero loss."""
    windows = _fixture_windows(official_io, 23)
    abar = training_alphas_cumprod(BoundaryAwareScheduler())

    class PerfectX0(torch.nn.Module):
        def forward(self, x_t, t, genes, path):
            from teramind_hf.models import GeneMorphUNet3DOutput

            return GeneMorphUNet3DOutput(sample=windows.x0[..., 32:-32, 32:-32], patch_sample=windows.x0)

    out = boundary_aware_loss(PerfectX0(), windows, abar, prediction_type="sample")
    assert float(out.loss) == 0.0
    assert float(boundary_aware_loss(PerfectX0(), windows, abar, prediction_type="epsilon").loss) > 0.1


def test_collage_edge_weight_weights_the_outer_pixel_ring(official_io):
    """--collage_edge_weight W: the collage patch's 1-px edge ring counts W times an interior pixel (mean weight 1)."""
    from teramind_hf.models import GeneMorphUNet3DOutput
    from teramind_hf.training.losses import collage_edge_weights

    windows = _fixture_windows(official_io, 23)
    abar = training_alphas_cumprod(BoundaryAwareScheduler())
    centre = windows.x0[..., 32:-32, 32:-32]
    ring = torch.zeros(64, 64, dtype=torch.bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True

    class WrongOn(torch.nn.Module):
        def __init__(self, where):
            super().__init__()
            self.where = where

        def forward(self, x_t, t, genes, path):  # x0 everywhere, off by 1 on `where` of the collage patch
            return GeneMorphUNet3DOutput(sample=centre + self.where.float(), patch_sample=windows.x0)

    f = float(ring.float().mean())  # 252 / 4096
    for weight in (1.0, 5.0):
        edge = boundary_aware_loss(WrongOn(ring), windows, abar, prediction_type="sample", collage_edge_weight=weight)
        inner = boundary_aware_loss(WrongOn(~ring), windows, abar, prediction_type="sample", collage_edge_weight=weight)
        norm = 1 - f + f * weight
        assert abs(float(edge.collage) - f * weight / norm) < 1e-6
        assert abs(float(inner.collage) - (1 - f) / norm) < 1e-6
    weights = collage_edge_weights(64, 5.0)
    assert abs(float(weights.mean()) - 1) < 1e-6 and abs(float(weights[0, 10] / weights[10, 10]) - 5) < 1e-5
    assert torch.equal(collage_edge_weights(64, 1.0), torch.ones(64, 64))
