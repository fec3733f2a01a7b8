"""The ``turbo`` preset: the embedded model's distilled student (teramind_hf/turbo_model) with its own sampler.

Its folder's config is the preset (TCD, 3 steps, diagonal-last, eta), the preset refuses other weights by name, and
``teramind generate --preset turbo`` loads the student when no ``--model`` is given.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from teramind_hf import TeraMindPipeline, default_model_path, turbo_model_path
from teramind_hf.cli import main as cli_main
from teramind_hf.sampling import PRESETS


@pytest.fixture(scope="module")
def turbo(one_torch_thread) -> TeraMindPipeline:
    pipe = TeraMindPipeline.from_pretrained(turbo_model_path())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def genes(turbo) -> np.ndarray:
    """One 256-px tile of 2 sections on the student's panel."""
    return np.random.default_rng(0).poisson(0.5, (turbo.unet.config.num_genes, 2, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def own(turbo, genes) -> np.ndarray:
    """The student's folder sampled as loaded, noise seed 0 (uint8: what `teramind generate` writes)."""
    return turbo(genes, gene_names=list(turbo.unet.config.gene_names), generator=0, output_type="uint8").images


def test_the_students_folder_is_the_preset(turbo, genes, own):
    """``from_pretrained(turbo_model_path())`` then ``pipe(genes)`` samples exactly as ``preset="turbo"``: same
    solver, steps, grid and eta; the preset's eta reaches the solver (another eta gives other bytes)."""
    preset = PRESETS["turbo"]
    assert turbo.scheduler.__class__.__name__ == preset.scheduler
    assert turbo.config.num_inference_steps == preset.num_inference_steps and turbo.config.grid == preset.grid
    assert turbo.config.eta == preset.eta
    assert np.array_equal(own, turbo(genes, preset="turbo", generator=0, output_type="uint8").images)
    assert not np.array_equal(own, turbo(genes, preset="turbo", eta=0.0, generator=0, output_type="uint8").images)
    assert not np.array_equal(own, turbo(genes, generator=1, output_type="uint8").images)  # stochastic per seed


def test_other_weights_are_refused_by_name(genes, one_torch_thread):
    """The preset's few steps on another model's weights would sample garbage: refused, naming the student's folder."""
    default = TeraMindPipeline.from_pretrained(default_model_path())
    with pytest.raises(ValueError, match="turbo_model.*other weights"):
        default(genes, preset="turbo", generator=0)


def test_generate_with_the_preset_loads_the_student(turbo, genes, own, tmp_path, capsys):
    """``teramind generate --preset turbo`` without ``--model`` samples the student (same bytes as in memory); with
    the default model's folder as ``--model`` it exits 2 with one line and writes nothing."""
    store = tmp_path / "genes.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_array("genes", data=genes, chunks=(genes.shape[0], 1, 16, 16))
    group.attrs.update({"origin_um": [0.0, 0.0], "gene_names": list(turbo.unet.config.gene_names), "gene_bin": 16,
                        "um_per_px": 0.5})
    out = tmp_path / "turbo.ome.zarr"
    assert cli_main(["generate", "--genes", str(store), "--out", str(out), "--preset", "turbo", "--seed", "0", "--quiet",
                     "--device", "cpu"]) == 0
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["0"][...], own.transpose(1, 0, 2, 3))

    refused = tmp_path / "refused.ome.zarr"
    capsys.readouterr()
    assert cli_main(["generate", "--genes", str(store), "--out", str(refused), "--preset", "turbo", "--model",
                     str(default_model_path()), "--seed", "0", "--quiet", "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "turbo_model" in lines[0] and "other weights" in lines[0], lines
    assert not refused.exists()
