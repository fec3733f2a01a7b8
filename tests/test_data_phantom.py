"""Phantom: determinism, planted co-expression, null gene, morphology by type, CLI, speed."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from teramind_hf.cli import main as cli_main
from teramind_hf.data.panel import GenePanel
from teramind_hf.data.phantom import CELL_TYPES, NULL_GENE, PLANTED_PAIRS, make_phantom
from teramind_hf.data.phantom_io import array_digest


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(256, 256, 4, seed=3, um_per_px=0.5)


def _file_digests(folder: Path, suffixes=(".parquet", ".tif", ".csv", ".txt", ".json")) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.suffix in suffixes
    }


def test_same_seed_same_arrays_and_bytes(tmp_path):
    a, b = make_phantom(128, 128, 2, seed=7, um_per_px=0.5), make_phantom(128, 128, 2, seed=7, um_per_px=0.5)
    assert array_digest(a) == array_digest(b)
    assert array_digest(a) != array_digest(make_phantom(128, 128, 2, seed=8, um_per_px=0.5))
    for out in ("a", "b"):
        assert cli_main([
            "phantom", str(tmp_path / out), "--size", "128,96", "--slices", "2", "--seed", "7", "--um-per-px", "0.5",
        ]) == 0
    digests = _file_digests(tmp_path / "a")
    assert "transcripts.parquet" in digests and "images.tif" in digests and len(digests) >= 7
    assert digests == _file_digests(tmp_path / "b")


def test_shapes_and_types(phantom):
    assert phantom.images.shape == (2, 4, 256, 256) and phantom.images.dtype == np.uint8
    assert phantom.genes.shape == (len(phantom.panel), 4, 16, 16) and phantom.gene_bin == 16
    assert set(phantom.transcripts.columns) == {"x", "y", "z", "gene"}
    assert phantom.labels.shape == (4, 256, 256) and phantom.cell_types.max() <= len(CELL_TYPES)
    official = GenePanel.official_mouse()
    assert all(g in official for g in phantom.panel)
    for gene in ("Slc17a6", "Slc17a7", "Nr4a2", "Th", NULL_GENE):
        assert gene in phantom.panel
    # sections are independent draws of cells, but regions continue between sections
    assert not np.array_equal(phantom.labels[0] > 0, phantom.labels[1] > 0)
    assert (phantom.regions[0] == phantom.regions[1]).mean() > 0.8


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_planted_pairs_and_null_gene(phantom):
    genes, index = phantom.genes, {g: i for i, g in enumerate(phantom.panel)}
    for first, second in PLANTED_PAIRS:
        assert _corr(genes[index[first]], genes[index[second]]) > 0.8, (first, second)
    z, hb, wb = genes.shape[1:]
    b = phantom.gene_bin
    for stain in (0, 1):
        per_bin = phantom.images[stain].astype(np.float64).reshape(z, hb, b, wb, b).mean(axis=(2, 4))
        assert abs(_corr(genes[index[NULL_GENE]], per_bin)) < 0.1


def test_morphology_follows_cell_type(phantom):
    dapi, polyt = phantom.images[0].astype(float), phantom.images[1].astype(float)
    nucleus_area = {}
    for k, kind in enumerate(CELL_TYPES, start=1):
        mask = phantom.cell_types == k
        if mask.sum() < 50:
            continue
        nucleus_area[kind.name] = (mask & (dapi > 60)).sum() / max(len(phantom.cells.query("cell_type == @kind.name")), 1)
    # glutamatergic nuclei (10 um) are larger than oligodendrocyte nuclei (6 um)
    assert nucleus_area["glutamatergic"] > 1.5 * nucleus_area["oligodendrocyte"]
    cells = (phantom.labels > 0)
    assert polyt[cells].mean() > polyt[~cells].mean() + 30


def test_default_scale():
    big = make_phantom(512, 512, 4, seed=0, um_per_px=0.5)
    assert len(big.cells) > 100
    real = make_phantom(512, 512, 1, seed=0)  # MERSCOPE scale: a nucleus spans ~90 px
    assert real.um_per_px == pytest.approx(0.108)
    assert 5 <= len(real.cells) <= 40


def test_bad_size_is_named_error():
    with pytest.raises(ValueError, match="multiples of gene_bin=16"):
        make_phantom(100, 128, 2)
    assert cli_main(["phantom", "/tmp/never", "--size", "1x2"]) == 2


def test_with_panel_changes_renames_and_drops_genes_keeping_their_maps():
    from teramind_hf.data import with_panel_changes

    phantom = make_phantom(64, 64, num_slices=1, seed=2, um_per_px=1.0)
    volume = with_panel_changes(phantom, renames={"Slc17a7": "Vglut1"}, drop=("Mog",))
    genes = list(volume.panel.genes)
    assert "Mog" not in genes and "Slc17a7" not in genes and len(genes) == len(phantom.panel) - 1
    old = list(phantom.panel.genes)
    np.testing.assert_array_equal(volume.genes[genes.index("Vglut1")], phantom.genes[old.index("Slc17a7")])
    np.testing.assert_array_equal(volume.genes[genes.index("Gad2")], phantom.genes[old.index("Gad2")])
    assert volume.um_per_px == 1.0 and volume.images is phantom.images
    with pytest.raises(ValueError, match=r"\['Nope'\].*not in the phantom's panel"):
        with_panel_changes(phantom, renames={"Nope": "X"}, drop=())


# digest of make_phantom(128, 128, 2, seed=7, um_per_px=0.5) before the planted interaction existed (commit 93590d2)
DEFAULT_PHANTOM_DIGEST = "72f0a1c98d0e0cd64aa6bb0c25d2584a1dfc6445d02ddc3120564e1cb301f44e"


def test_planted_interaction_is_opt_in_and_only_joint_expression_changes_nuclei():
    from teramind_hf.data.phantom import INTERACTION_PAIR

    assert array_digest(make_phantom(128, 128, 2, seed=7, um_per_px=0.5)) == DEFAULT_PHANTOM_DIGEST
    plain = make_phantom(512, 512, 2, seed=2, um_per_px=0.5)
    planted = make_phantom(512, 512, 2, seed=2, um_per_px=0.5, planted_interaction=True)
    assert set(planted.panel) == set(plain.panel) | set(INTERACTION_PAIR)
    # same cells, types and marker genes as the default phantom of the seed
    assert planted.cells[list(plain.cells.columns)].equals(plain.cells)
    index = {g: i for i, g in enumerate(planted.panel)}
    for g, i in enumerate(plain.panel):
        np.testing.assert_array_equal(planted.genes[index[i]], plain.genes[g])
    both = planted.cells["interaction"].to_numpy()
    single = planted.cells[[f"expresses_{g}" for g in INTERACTION_PAIR]].sum(axis=1).to_numpy() == 1
    assert 0.04 < both.mean() < 0.2 and single.mean() > 0.3
    # nuclei (bright DAPI) grow only in cells expressing both genes
    dapi_plain, dapi_planted = plain.images[0] > 60, planted.images[0] > 60
    grown = {}
    for name, sel in (("both", both), ("single", single)):
        ids = planted.cells["cell_id"].to_numpy()[sel]
        cells = np.isin(plain.labels, ids) | np.isin(planted.labels, ids)
        grown[name] = (dapi_planted & cells).sum() / max((dapi_plain & cells).sum(), 1)
    assert grown["both"] > 1.4 and grown["single"] == pytest.approx(1.0, abs=0.01), grown
    # co-expression alone does not single the pair out: every same-type marker pair correlates more
    flat = planted.genes.reshape(len(planted.panel), -1)
    corr = np.corrcoef(flat)
    a, b = index[INTERACTION_PAIR[0]], index[INTERACTION_PAIR[1]]
    upper = corr[np.triu_indices(len(flat), k=1)]
    assert int((upper > corr[a, b]).sum()) + 1 > 3 * len(CELL_TYPES)
