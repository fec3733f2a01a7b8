"""GenePanel: official panel, alignment by name, orthologues, overlap threshold, apply_alignment."""

import numpy as np
import pytest
import sparse
import torch

from teramind_hf.data.panel import GenePanel, PanelOverlapError, apply_alignment


def test_official_mouse_panel_has_229_unique_genes_in_slot_order():
    panel = GenePanel.official_mouse()
    assert len(panel) == 229
    assert panel[0] == "Syndig1" and panel[228] == "Syt6"
    # facts cross-checked against the official M2H_dct index table
    assert panel.index("Nr4a2") == 5 and panel.index("Slc17a6") == 75 and panel.index("Slc17a7") == 191
    assert "Th" in panel


def test_align_case_insensitive_reports_missing_and_unused():
    model = GenePanel(["Slc17a7", "Th", "Gad2", "Mog"])
    alignment = model.align(["GAD2", "slc17a7", "Blank-1", "Th"], min_overlap=0.5)
    assert list(alignment.model_to_data) == [1, 3, 0, -1]
    assert alignment.missing == ("Mog",)
    assert alignment.unused == ("Blank-1",)
    assert alignment.overlap == 0.75
    assert "3/4" in alignment.summary()


def test_align_orthologue_overrides():
    model = GenePanel(["Ctgf", "Slc17a7"])
    human = ["CCN2", "SLC17A7"]
    assert model.align(human, min_overlap=0.0).missing == ("Ctgf",)
    alignment = model.align(human, orthologues=True, overrides={"CCN2": "Ctgf"})
    assert alignment.missing == () and list(alignment.model_to_data) == [0, 1]


def test_overlap_below_threshold_is_a_named_error():
    model = GenePanel(["A1", "B1", "C1", "D1"])
    with pytest.raises(PanelOverlapError, match=r"1 of the model's 4 genes.*min_overlap is 50.0%"):
        model.align(["a1", "X"], min_overlap=0.5)


def test_duplicate_genes_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        GenePanel(["Th", "TH"])


@pytest.mark.parametrize("kind", ["numpy", "torch", "torch_sparse", "sparse"])
def test_apply_alignment_all_array_kinds(kind):
    model = GenePanel(["g0", "g1", "g2"])
    alignment = model.align(["G2", "extra", "G0"], min_overlap=0.0)
    data = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    expected = np.stack([data[2], np.zeros((2, 2), np.float32), data[0]])
    if kind == "numpy":
        out = apply_alignment(data, alignment)
    elif kind == "torch":
        out = apply_alignment(torch.from_numpy(data), alignment).numpy()
    elif kind == "torch_sparse":
        out = apply_alignment(torch.from_numpy(data).to_sparse(), alignment).to_dense().numpy()
    else:
        out = apply_alignment(sparse.COO.from_numpy(data), alignment)
        assert isinstance(out, sparse.COO)
        out = out.todense()
    np.testing.assert_array_equal(out, expected)


def test_apply_alignment_wrong_gene_axis():
    alignment = GenePanel(["a", "b"]).align(["a", "b"])
    with pytest.raises(ValueError, match="3 entries on axis 0.*expects 2"):
        apply_alignment(np.zeros((3, 4)), alignment)
