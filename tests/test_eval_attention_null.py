"""Attention against a null: expressed-patch restriction, the two nulls, pathway maps and `teramind attention`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from teramind_hf.eval.attention_null import (
    benjamini_hochberg,
    expressed_mask,
    expressed_pair_attention,
    pair_significance,
)

CONFIG = SimpleNamespace(sample_size=64, gene_bin=16, num_slices=2, gene_slices=4)


def test_expressed_patch_restriction_excludes_patches():
    # 1 chunk of 1x4 patches, 3 genes; genes 0 and 1 are both expressed only in patches 0 and 1
    genes = torch.zeros(3, 2, 4, 16)
    genes[0, 0, :, 0:4] = 1.0  # 16 counts in patch 0
    genes[0, 1, 0, 4] = 9.0  # 9 in patch 1
    genes[1, :, :, 0:8] = 0.5  # 16 in patches 0, 1
    genes[1, 0, 0, 8] = 5.0  # exactly the threshold in patch 2: not expressed (> threshold)
    genes[2] = 1.0
    on = expressed_mask(genes, CONFIG, threshold=5.0)
    assert on.shape == (1, 1, 4, 3)
    np.testing.assert_array_equal(on[0, 0, :, 0], [True, True, False, False])
    np.testing.assert_array_equal(on[0, 0, :, 1], [True, True, False, False])
    assert on[..., 2].all()
    attention = np.zeros((1, 1, 4, 3, 3))
    attention[0, 0, :, 0, 1] = [0.2, 0.4, 0.9, 0.9]  # the unexpressed patches would raise the mean to 0.6
    attention[0, 0, :, 1, 0] = [0.4, 0.6, 0.9, 0.9]
    means, counts = expressed_pair_attention(attention, on, min_patches=2)
    assert counts[0, 1] == 2 and counts[0, 2] == 2 and counts[2, 2] == 4
    assert means[0, 1] == pytest.approx(0.4)  # mean of (0.2+0.4)/2 and (0.4+0.6)/2
    assert np.isnan(means[0, 0])
    assert np.isnan(expressed_pair_attention(attention, on, min_patches=3)[0][0, 1])


def test_benjamini_hochberg_known_values():
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, np.nan]), [0.03, 0.04, 0.04, np.nan])


@pytest.fixture(scope="module")
def region():
    from teramind_hf.data import make_phantom

    return make_phantom(256, 256, num_slices=2, seed=2, um_per_px=0.5)


def test_random_weights_model_pairs_are_not_called_learned(region):
    from teramind_hf import TeraMindPipeline
    from teramind_hf.data.phantom import PLANTED_PAIRS
    from teramind_hf.models.unet_genemorph_3d import GeneMorphUNet3DModel

    torch.set_num_threads(1)
    trained = TeraMindPipeline.from_pretrained()
    torch.manual_seed(1000)  # a random model outside the null's seeds 0..18
    pipe = TeraMindPipeline(unet=GeneMorphUNet3DModel.from_config(trained.unet.config), scheduler=trained.scheduler)
    everything = pair_significance(pipe, region.genes, list(region.panel), None, random_models=19, permutations=2)
    assert len(everything) == 171 and not any(r.learned for r in everything)
    planted = pair_significance(pipe, region.genes, list(region.panel), PLANTED_PAIRS, random_models=19, permutations=2)
    assert not any(r.learned for r in planted)
    for r in planted:
        assert r.patches > 0 and np.isfinite(r.specificity) and r.random_weights["n"] == 19
        # the gene branch shares weights across genes: a label permutation reproduces the attention exactly
        assert r.label_permutation["p"] == 1.0 and r.label_permutation["std"] < 1e-5


def test_attention_cli_writes_scores_maps_and_pngs(tmp_path, region):
    import zarr

    from teramind_hf.cli import main
    from teramind_hf.data.datasets import write_training_store

    store = write_training_store(region.to_volume(), tmp_path / "store.zarr")
    out = tmp_path / "att"
    args = ["attention", "--genes", str(store), "--pair", "Slc17a6,Slc17a7", "--pair", "Nr4a2,Th", "--out", str(out),
            "--random-models", "4", "--permutations", "1", "--threads", "1"]
    assert main(args) == 0
    summary = json.loads((out / "attention.json").read_text())
    assert [p["pair"] for p in summary["pairs"]] == [["Slc17a6", "Slc17a7"], ["Nr4a2", "Th"]]
    assert all(p["random_weights"]["n"] == 4 and 0 < p["random_weights"]["p"] <= 1 for p in summary["pairs"])
    for p in summary["pairs"]:  # the effect size is written next to z and p, in specificity units
        null = p["random_weights"]
        assert null["effect"] == pytest.approx(p["specificity"] - null["mean"])
        assert null["effect_interval"][0] <= null["effect"] <= null["effect_interval"][1]
    group = zarr.open_group(str(out / "pathway_Slc17a6-Slc17a7.ome.zarr"), mode="r")
    assert group["0"].shape == (3, 2, 16, 16)  # attention, expression, pathway on the gene-bin grid
    assert [c["label"] for c in group.attrs["ome"]["omero"]["channels"]] == ["attention", "expression", "pathway"]
    assert (out / "pathway_Nr4a2-Th.png").stat().st_size > 1000
    # bad input: one line, exit 2, nothing written
    assert main(["attention", "--genes", str(store), "--pair", "Th,Nope", "--out", str(tmp_path / "bad")]) == 2
    assert main(["attention", "--genes", str(store), "--pair", "Th", "--out", str(tmp_path / "bad")]) == 2
    assert main(["attention", "--genes", str(store), "--pair", "Th,Nr4a2", "--out", str(tmp_path / "bad"), "--device", "cuda:99"]) == 2
    assert not (tmp_path / "bad").exists()


def test_null_summary_effect_and_interval_on_a_known_null():
    from teramind_hf.eval.attention_null import _null_summary

    null = np.arange(101, dtype=np.float64)  # mean 50; empirical 2.5 % / 97.5 % quantiles 2.5 and 97.5
    summary = _null_summary(60.0, np.append(null, np.nan))  # the NaN draw is dropped
    assert summary["n"] == 101
    assert summary["effect"] == pytest.approx(10.0)
    assert summary["effect_interval"] == pytest.approx([60.0 - 97.5, 60.0 - 2.5])
    assert summary["z"] == pytest.approx(10.0 / null.std(ddof=1))
    assert summary["p"] == pytest.approx((1 + 41) / 102)  # 60..100 reach the observation
    skewed = _null_summary(-3.0, null**2 / 1000.0)  # mean 3.35 (median 2.5); quantiles 0.0065 / 9.5065
    assert skewed["effect"] == pytest.approx(-3.0 - 3.35)
    assert skewed["effect_interval"] == pytest.approx([-3.0 - 9.5065, -3.0 - 0.0065])
    for undefined in (_null_summary(1.0, np.array([np.nan])), _null_summary(np.nan, null)):
        assert np.isnan(undefined["effect"]) and np.isnan(undefined["effect_interval"]).all()
