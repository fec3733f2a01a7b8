"""The shipped default model: trained (not the placeholder), small (counted FLOPs), and it follows its gene input.

A lighter version of `benchmarks/default_model_quality.py`: one 256-px held-out tile (phantom seed 1, never
seen in training), 15 DDIM steps, against the shuffled-gene and per-stain-mean controls.
"""

from __future__ import annotations

import json

import pytest
import torch

from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline, default_model_path


@pytest.fixture(scope="module")
def pipe():
    from teramind_hf.sampling import PRESETS

    pipe = TeraMindPipeline.from_pretrained(str(default_model_path()))
    pipe.set_progress_bar_config(disable=True)
    # the model card's figures are the official sampler's (DDIM, official grid), not the model's own default
    pipe.scheduler = pipe.sampling_scheduler(PRESETS["official"])
    pipe.register_to_config(grid="official")
    return pipe


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    from teramind_hf.data import make_phantom
    from teramind_hf.data.datasets import write_training_store
    from teramind_hf.training.validation import read_region

    path = tmp_path_factory.mktemp("heldout") / "seed1.zarr"
    write_training_store(make_phantom(256, 256, num_slices=2, seed=1, um_per_px=DEFAULT_MODEL_UM_PER_PX).to_volume(), path)
    return read_region(path, size=256, slices=2)


def test_default_model_is_the_trained_phantom_model(pipe):
    folder = default_model_path()
    card = (folder / "README.md").read_text()
    assert "synthetic phantom" in card and f"{DEFAULT_MODEL_UM_PER_PX:.1f} um/px" in card and "library_name: diffusers" in card
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 10e6  # a few MB (fp16 on disk)
    assert pipe.unet.dtype == torch.float32  # loaded as float32
    from teramind_hf.data.phantom import default_panel

    assert list(pipe.unet.config.gene_names) == list(default_panel().genes)
    assert pipe.unet.config.dropout == 0.0


def test_default_model_output_depends_on_genes(pipe, region):
    """Weaker than beating the controls, and true of the shipped model: the gene input changes the sample."""
    from teramind_hf.training.validation import sample_region, shuffle_gene_bins

    torch.set_num_threads(1)
    a = sample_region(pipe, region, num_inference_steps=4, seed=0)
    b = sample_region(pipe, region, num_inference_steps=4, seed=0, genes=shuffle_gene_bins(region.genes))
    assert a.shape == (2, 2, 256, 256) and float(abs(a - b).mean()) > 1e-3


def test_default_model_tile_step_is_small(pipe):
    """Counted work, not wall-clock time (the timing is in benchmarks/default_model_quality.py): one tile step
    (320-px canvas) of the shipped model costs 56 GFLOP and 3.4 M parameters; a model several times too big fails."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = pipe.unet.config
    canvas = torch.zeros(1, 2, 2, 320, 320)
    genes = torch.zeros(1, cfg.num_genes, 4, 20, 20)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pipe.unet(canvas, 500, genes)
    assert 0 < counter.get_total_flops() < 100e9, counter.get_total_flops()
    assert sum(p.numel() for p in pipe.unet.parameters()) < 6_000_000


def test_default_model_beats_controls_on_held_out_region(pipe, region):
    from teramind_hf.training.validation import quality_comparison

    torch.set_num_threads(1)
    table = quality_comparison(pipe, region, num_inference_steps=15, seed=0, pool=4)
    print(json.dumps(table, indent=1))
    for suffix in ("", "@4x4"):
        model = table[f"model{suffix}"]
        for control in ("shuffled_genes", "mean_image"):
            other = table[f"{control}{suffix}"]
            assert model["ssim"] > other["ssim"] + 0.02, (suffix, control, table)
    model, shuffled, mean = table["model@4x4"], table["shuffled_genes@4x4"], table["mean_image@4x4"]
    assert model["psnr"] > shuffled["psnr"] + 1.0 and model["psnr"] > mean["psnr"] + 0.5, table
