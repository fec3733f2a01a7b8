"""TeraMindPipeline: determinism, Hub loading, scheduler swapping and input validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline

from .conftest import FAST_CONFIG, TINY_GENES, make_tiny_genes
from .conftest import make_tiny_pipeline as make_tiny_pipeline_of

STEPS = 3


def make_tiny_pipeline(**config):
    """These tests are about the pipeline, not its model's width: conftest's FAST_CONFIG model."""
    return make_tiny_pipeline_of(**{**FAST_CONFIG, **config})


@pytest.fixture
def tiny_pipeline():
    return make_tiny_pipeline()


def _run(pipe, genes, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(genes, generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.fixture(scope="module")
def reference():
    """The tiny pipeline's default run on tiny_genes (seed 0): computed once for the tests that compare with it."""
    return _run(make_tiny_pipeline(), make_tiny_genes())


def test_output_shape_range_and_types(tiny_pipeline, tiny_genes, reference):
    images = reference
    assert images.shape == (2, 2, 512, 512) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.05
    as_uint8 = _run(tiny_pipeline, tiny_genes, output_type="uint8")
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8, np.round((images + 1) * 127.5).astype(np.uint8))
    as_tuple = tiny_pipeline(tiny_genes, num_inference_steps=STEPS, generator=0, output_type="pt", return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.is_tensor(as_tuple[0])


def test_batch_size_and_tile_order_do_not_change_a_single_bit(tiny_pipeline, tiny_genes, reference):
    # `reference` ran with the default batch of 4 tiles: all 4 tiles in one batch
    assert np.array_equal(reference, _run(tiny_pipeline, tiny_genes, batch_size=1))
    assert np.array_equal(reference, _run(tiny_pipeline, tiny_genes, batch_size=3, tile_order="reverse"))
    assert not np.array_equal(reference, _run(tiny_pipeline, tiny_genes, seed=1))


def test_halo_makes_neighbouring_tiles_depend_on_each_other(tiny_pipeline, tiny_genes, reference):
    """Changing genes inside tile (0, 0) must change tile (0, 1) too (it sees them through the halo)."""
    base = reference
    edited = tiny_genes.clone()
    edited[:, :, :16, :16] *= 3
    changed = _run(tiny_pipeline, edited)
    assert not np.array_equal(base[..., :256, 256:], changed[..., :256, 256:])  # the neighbour


def test_gene_names_align_by_name(tiny_pipeline, tiny_genes, reference):
    order = [4, 2, 0, 3, 1]
    shuffled = tiny_genes[order]
    names = [TINY_GENES[i].upper() for i in order]
    out = tiny_pipeline(shuffled, gene_names=names, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(reference, out.images)
    assert out.gene_alignment.missing == () and out.gene_alignment.unused == ()


def test_slices_select_chunks_with_their_gene_window(tiny_pipeline):
    genes = torch.poisson(torch.full((len(TINY_GENES), 4, 16, 16), 0.5), generator=torch.Generator().manual_seed(3))
    whole = _run(tiny_pipeline, genes)
    assert whole.shape == (4, 2, 256, 256)
    middle = _run(tiny_pipeline, genes, slices=(1, 3))
    assert middle.shape == (2, 2, 256, 256)
    odd = _run(tiny_pipeline, genes, slices=(0, 3))
    assert odd.shape == (3, 2, 256, 256) and np.array_equal(odd[:2], whole[:2])


def test_save_and_load_from_folder_is_bit_identical(tiny_pipeline, tiny_genes, reference, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    files = sorted(p.relative_to(tmp_path / "pipe").as_posix() for p in (tmp_path / "pipe").rglob("*") if p.is_file())
    assert "unet/diffusion_pytorch_model.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".ckpt")) for f in files)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["unet"][1] == "GeneMorphUNet3DModel" and index["scheduler"][1] == "BoundaryAwareScheduler"
    loaded = TeraMindPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.config.gene_names == TINY_GENES
    assert np.array_equal(reference, _run(loaded, tiny_genes))


def _hub_cache(tmp_path: Path, folder: Path, repo_id: str, revision_sha: str) -> Path:
    """A real Hub cache layout: models--org--name/{refs/main, snapshots/<sha>/...}."""
    cache = tmp_path / "hub-cache"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / revision_sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision_sha)
    return cache


def test_from_pretrained_repo_id_offline_hub_cache(tiny_pipeline, tiny_genes, reference, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    cache = _hub_cache(tmp_path, tmp_path / "pipe", "org/teramind-tiny", "0123456789abcdef0123456789abcdef01234567")
    np.save(tmp_path / "genes.npy", tiny_genes.numpy())
    script = textwrap.dedent(
        f"""
        import numpy as np, torch
        from teramind_hf import TeraMindPipeline
        pipe = TeraMindPipeline.from_pretrained("org/teramind-tiny", cache_dir={str(cache)!r})
        pipe.set_progress_bar_config(disable=True)
        out = pipe(torch.from_numpy(np.load({str(tmp_path / 'genes.npy')!r})), num_inference_steps={STEPS},
                   generator=torch.Generator().manual_seed(0)).images
        np.save({str(tmp_path / 'hub.npy')!r}, out)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    assert np.array_equal(np.load(tmp_path / "hub.npy"), reference)


def test_from_pretrained_unknown_repo_offline_fails_clearly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = (
        "from teramind_hf import TeraMindPipeline\n"
        f"TeraMindPipeline.from_pretrained('org/not-cached', cache_dir={str(tmp_path)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "org/not-cached" in proc.stderr or "offline" in proc.stderr.lower()


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        TeraMindPipeline.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        TeraMindPipeline.from_pretrained(str(tmp_path / "absent"))


def test_dpm_solver_swap_via_from_config(tiny_pipeline, tiny_genes, reference, tmp_path):
    ddim = reference
    tiny_pipeline.scheduler = DPMSolverMultistepScheduler.from_config(
        tiny_pipeline.scheduler.config, algorithm_type="dpmsolver++"
    )
    assert isinstance(tiny_pipeline.scheduler, DPMSolverMultistepScheduler)  # as assigned: no attribute override
    dpm = _run(tiny_pipeline, tiny_genes)
    assert np.isfinite(dpm).all() and not np.array_equal(dpm, ddim)
    # the swap round-trips through save/load
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = TeraMindPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DPMSolverMultistepScheduler)
    assert loaded.scheduler.config.algorithm_type == "dpmsolver++"
    assert np.array_equal(_run(loaded, tiny_genes), dpm)


def test_scheduler_save_load_round_trip(tmp_path):
    scheduler = BoundaryAwareScheduler(beta_end=0.012)
    scheduler.save_pretrained(tmp_path)
    loaded = BoundaryAwareScheduler.from_pretrained(tmp_path)
    assert loaded.config.beta_end == 0.012 and loaded.config.inner_scheduler == "DDIMScheduler"
    assert loaded.solver_config()["beta_end"] == 0.012 and DDIMScheduler.from_config(loaded.config).config.beta_end == 0.012
    with pytest.raises(ValueError, match=r"inner_config holds training-schedule keys \['beta_end'\]"):
        BoundaryAwareScheduler(inner_config={"beta_end": 0.012})  # the schedule belongs at the top level
    assert isinstance(DDIMScheduler.from_config(loaded.config), DDIMScheduler)
    loaded.set_timesteps(15)
    assert loaded.timesteps[0] == 938 and loaded.timesteps[-1] == 0


def test_callback_on_step_end_sees_and_can_replace_latents(tiny_pipeline, tiny_genes):
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, int(timestep), tuple(tensors["latents"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])} if step == STEPS - 1 else {}

    out = _run(tiny_pipeline, tiny_genes, callback_on_step_end=callback)
    assert [s[0] for s in seen] == list(range(STEPS))
    assert seen[0][2] == (1, 2, 2, 512, 512)
    assert np.all(out == 0)


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "genes, message",
    [
        (torch.zeros(5, 32, 32), "must be 4-D"),
        (torch.zeros(4, 2, 32, 32), "model panel has 5"),
        (torch.zeros(5, 2, 30, 32), "whole number of 256-px tiles"),
    ],
)
def test_bad_gene_shapes_are_named(tiny_pipeline, genes, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(genes, num_inference_steps=1)


@pytest.mark.parametrize("value, message", [(float("nan"), "NaN/inf"), (float("inf"), "NaN/inf"), (-1.0, "negative")])
def test_bad_counts_are_named(tiny_pipeline, tiny_genes, value, message):
    bad = tiny_genes.clone()
    bad[0, 0, 0, 0] = value
    with pytest.raises(ValueError, match=f"genes contains 1 {message}"):
        tiny_pipeline(bad, num_inference_steps=1)


def test_panel_overlap_too_small(tiny_pipeline, tiny_genes):
    with pytest.raises(ValueError, match="min_overlap"):
        tiny_pipeline(tiny_genes, gene_names=["A", "B", "C", "D", "Th"], num_inference_steps=1)
    with pytest.raises(ValueError, match="gene_names has 2 names"):
        tiny_pipeline(tiny_genes, gene_names=["A", "B"], num_inference_steps=1)


def test_bad_arguments_are_named(tiny_pipeline, tiny_genes):
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipeline(tiny_genes, output_type="pil")
    with pytest.raises(ValueError, match="slices"):
        tiny_pipeline(tiny_genes, slices=(0, 5))
    with pytest.raises(ValueError, match="batch_size"):
        tiny_pipeline(tiny_genes, batch_size=0)


def test_unknown_scheduler_class_is_named():
    with pytest.raises(ValueError, match="inner_scheduler 'NoSuchScheduler'"):
        BoundaryAwareScheduler(inner_scheduler="NoSuchScheduler")


def test_sparse_gene_inputs_match_dense(tiny_pipeline, tiny_genes):
    import sparse

    reference = _run(tiny_pipeline, tiny_genes, num_inference_steps=1)
    assert np.array_equal(reference, _run(tiny_pipeline, tiny_genes.to_sparse(), num_inference_steps=1))
    assert np.array_equal(reference, _run(tiny_pipeline, sparse.COO.from_numpy(tiny_genes.numpy()), num_inference_steps=1))


@pytest.mark.parametrize("steps", [1, 2, 15, 61, 50])
def test_official_spacing_gives_exactly_the_requested_steps(steps):
    scheduler = BoundaryAwareScheduler()
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps.tolist()
    assert len(ts) == len(set(ts)) == steps and ts == sorted(ts, reverse=True) and 0 <= ts[-1] and ts[0] <= 999


def test_a_tile_canvas_predicts_exactly_what_one_whole_region_canvas_does():
    """Tiles add no seam: every 64-px output patch depends only on the 2x2 model patches around it, so a tile's
    canvas (tile + 32-px halo, on the region's patch grid) predicts the same pixels as one canvas over the region.
    The 64-px patch borders inside a tile and at its edges are therefore the same kind of border. (conftest's wider
    TINY_CONFIG model: the narrower one's kernels round the two canvas sizes differently, by up to 1.5e-5)"""
    unet = make_tiny_pipeline_of().unet
    generator = torch.Generator().manual_seed(0)
    region = torch.randn(1, 2, 2, 384, 384, generator=generator)
    genes = torch.poisson(torch.full((1, unet.config.num_genes, 4, 24, 24), 0.8), generator=generator)
    with torch.no_grad():
        whole = unet(region, 500, genes).sample  # (1, 2, 2, 320, 320): region pixels 32..352
        tile = unet(region[..., 64:320, 128:320], 500, genes[..., 4:20, 8:20]).sample  # pixels 96..288, 160..288
    torch.testing.assert_close(tile, whole[..., 64:256, 128:256], rtol=0, atol=1e-5)


def test_latents_argument_is_the_initial_noise(tiny_pipeline, tiny_genes):
    grid = tiny_pipeline.tile_grid(512, 512, stop=2)
    noise = tiny_pipeline.prepare_latents(grid, 5, 1.0)
    assert noise.shape == (1, 2, 2, 512, 512)
    seeded = tiny_pipeline(tiny_genes, num_inference_steps=1, generator=5).images
    given = tiny_pipeline(tiny_genes, num_inference_steps=1, generator=99, latents=noise).images
    assert np.array_equal(seeded, given)
    with pytest.raises(ValueError, match="latents must have shape"):
        tiny_pipeline(tiny_genes, num_inference_steps=1, latents=noise[..., :256])


class _Tracker:  # an object that changes while sampling
    pass


class TrackingScheduler(DDIMScheduler):
    """A diffusers scheduler keeping state that is neither scalar nor a per-sample tensor."""

    def step(self, *args, **kwargs):
        self.tracker = _Tracker()
        return super().step(*args, **kwargs)


def test_a_solver_steps_with_its_own_eta_or_the_one_given(tiny_pipeline, tiny_genes, tmp_path):
    """TCD's ``eta`` (default 0.3) is its stochasticity: TCD draws its step noise per tile from the seed (same seed,
    same sample; same initial noise and another seed, another sample), where forcing DDIM's 0 on every solver made
    it deterministic. ``eta`` of a call or of the pipeline config reaches the solver (saved and loaded with the
    folder); a preset (the official DDIM) is not changed by the config's eta; a bad eta is refused by name."""
    import diffusers

    from teramind_hf.sampling.presets import scheduler_from_name
    from teramind_hf.sampling.solver_state import TileSolver

    ddim = BoundaryAwareScheduler.wrap(scheduler_from_name("ddim", tiny_pipeline.scheduler))
    assert not TileSolver(ddim, 2).stochastic
    tiny_genes = tiny_genes[..., :16, :16]  # one tile: the step noise is per tile
    official = tiny_pipeline(tiny_genes, num_inference_steps=2, generator=0, preset="official").images
    tiny_pipeline.scheduler = scheduler_from_name("TCDScheduler", tiny_pipeline.scheduler)
    assert isinstance(tiny_pipeline.scheduler, diffusers.TCDScheduler)
    noise = tiny_pipeline.prepare_latents(tiny_pipeline.tile_grid(256, 256, stop=2), 5, 1.0)

    def sample(pipe, seed=0, **options):
        return pipe(tiny_genes, num_inference_steps=2, generator=seed, latents=noise, **options).images

    first = sample(tiny_pipeline)
    assert np.array_equal(first, sample(tiny_pipeline))
    assert not np.array_equal(first, sample(tiny_pipeline, seed=1))  # only the step noise differs
    assert np.array_equal(first, sample(tiny_pipeline, eta=0.3))  # TCD's own default
    at_06 = sample(tiny_pipeline, eta=0.6)
    assert not np.array_equal(first, at_06)
    tiny_pipeline.register_to_config(eta=0.6)
    tiny_pipeline.save_pretrained(str(tmp_path / "tcd"))
    loaded = TeraMindPipeline.from_pretrained(str(tmp_path / "tcd"))
    assert loaded.config.eta == 0.6 and json.loads((tmp_path / "tcd" / "model_index.json").read_text())["eta"] == 0.6
    assert np.array_equal(sample(loaded), at_06)
    assert not np.array_equal(sample(loaded, eta=1.0), at_06)  # the call's eta wins
    assert np.array_equal(loaded(tiny_genes, num_inference_steps=2, generator=0, preset="official").images, official)
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=r"eta must be None \(the solver's own default\) or a number in \[0, 1\]"):
            sample(loaded, eta=bad)
    with pytest.raises(ValueError, match="eta in the pipeline config must be"):
        TeraMindPipeline(unet=loaded.unet, scheduler=loaded.scheduler, eta=2.0)


def test_scheduler_state_that_cannot_be_kept_per_tile_is_named(monkeypatch):
    import diffusers

    from teramind_hf.sampling.solver_state import TileSolver

    monkeypatch.setattr(diffusers, "TrackingScheduler", TrackingScheduler, raising=False)
    scheduler = BoundaryAwareScheduler(inner_scheduler="TrackingScheduler")
    with pytest.raises(ValueError, match="'tracker'.*cannot be kept per tile"):
        TileSolver(scheduler, 3)
