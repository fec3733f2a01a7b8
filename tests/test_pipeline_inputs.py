"""`pipe(volume)` with a SpatialVolume and `pipe(points_df, um_per_px=...)` with a points DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from teramind_hf.data.phantom import make_phantom
from teramind_hf.pipelines.inputs import as_gene_input

UM = 0.5


@pytest.fixture(scope="module")
def tissue():
    return make_phantom(256, 256, num_slices=2, seed=5, um_per_px=UM)


def test_volume_and_points_become_the_same_gene_input(tissue):
    genes, names = as_gene_input(tissue.to_volume(), None, None, 16, 256)
    assert genes is tissue.genes and names == list(tissue.panel)
    points = tissue.transcripts.assign(x=tissue.transcripts.x * UM, y=tissue.transcripts.y * UM)
    points = points.rename(columns={"gene": "feature_name", "z": "section"})
    binned, point_names = as_gene_input(points, None, UM, 16, 256)
    order = [list(tissue.panel).index(name) for name in point_names]
    np.testing.assert_array_equal(binned, tissue.genes[order])
    # a region that is not whole tiles is padded to them
    small, _ = as_gene_input(points[(points.x < 40) & (points.y < 90)], None, UM, 16, 256)
    assert small.shape[1:] == (2, 16, 16)
    part = make_phantom(96, 128, num_slices=2, seed=5, um_per_px=UM).to_volume()
    padded, _ = as_gene_input(part, None, None, 16, 256)
    assert padded.shape[2:] == (16, 16) and padded.sum() == part.genes.sum()
    np.testing.assert_array_equal(padded[:, :, :6, :8], part.genes)


def test_pipe_takes_a_volume(tiny_pipeline, tissue):
    torch.set_num_threads(1)
    out = tiny_pipeline(tissue.to_volume(), num_inference_steps=1, generator=0, output_type="uint8")
    assert out.images.shape == (2, 2, 256, 256)
    assert "Slc17a7" not in out.gene_alignment.missing  # names came from the volume's panel


def test_points_need_a_pixel_size_and_named_columns(tiny_pipeline):
    points = pd.DataFrame({"x": [1.0], "y": [2.0], "gene": ["Th"]})
    with pytest.raises(ValueError, match="pass um_per_px"):
        tiny_pipeline(points, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"expected columns x, y \(microns\), gene or feature_name; found \['x', 'y', 'name'\]"):
        tiny_pipeline(points.rename(columns={"gene": "name"}), um_per_px=UM, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"column 'x' has negative coordinates"):
        tiny_pipeline(points.assign(x=-1.0), um_per_px=UM, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"TiB"):
        tiny_pipeline(points.assign(x=1e12), um_per_px=UM, num_inference_steps=1)


def test_a_region_larger_than_host_memory_is_refused_by_name(tiny_pipeline, tissue, monkeypatch):
    """The in-memory call holds the output and two step buffers of the region: 3 x float32 x (2 stains x 2 sections
    x 256 x 256 px) = 3 MiB here; with less memory than that, a named error before any sampling."""
    from teramind_hf.pipelines import pipeline_teramind

    needed = 3 * 4 * 2 * 2 * 256 * 256
    monkeypatch.setattr(pipeline_teramind, "physical_memory_bytes", lambda: needed - 1)
    with pytest.raises(ValueError, match=r"region 256 x 256 px x 2 sections needs about 0\.00293 GiB in memory, more than this machine has"):
        tiny_pipeline(tissue.to_volume(), num_inference_steps=1, generator=0)
