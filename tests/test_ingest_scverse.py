"""SpatialData and .h5ad round trips (the `spatialdata` extra, installed by the `test` extra in CI)."""

from __future__ import annotations

import numpy as np
import pytest
import spatialdata
import zarr
from spatialdata.transformations import get_transformation

from teramind_hf.cli import main as cli_main
from teramind_hf.data.export import export_spatialdata, write_anndata_bins, write_spatialdata_points
from teramind_hf.data.ingest import ingest_anndata, ingest_spatialdata
from teramind_hf.data.phantom import make_phantom

UM = 0.5
OFFSET_UM = (320.0, 128.0)  # (x, y) of the points element in "global": whole 8-um bins


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(96, 128, num_slices=2, seed=4, um_per_px=UM)


def sorted_genes(phantom) -> np.ndarray:
    order = [list(phantom.panel.genes).index(name) for name in sorted(phantom.panel.genes)]
    return phantom.genes[order]


@pytest.fixture(scope="module")
def sdata_path(phantom, tmp_path_factory):
    path = tmp_path_factory.mktemp("sdata") / "input.zarr"
    return write_spatialdata_points(path, phantom.transcripts, UM, offset_um=OFFSET_UM)


def test_spatialdata_points_round_trip(phantom, sdata_path, tmp_path):
    report = ingest_spatialdata(sdata_path, tmp_path / "g.zarr", um_per_px=UM, batch_rows=10, progress_bar=False)
    store = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")
    assert list(store.attrs["gene_names"]) == sorted(phantom.panel.genes)
    assert report.rows_binned == len(phantom.transcripts)
    # the canvas starts at the data's extent, rounded down to a whole bin, in the element's micron system
    genes = store["genes"][...]
    oy, ox = store.attrs["origin_um"]
    r0, c0 = round((oy - OFFSET_UM[1]) / UM), round((ox - OFFSET_UM[0]) / UM)
    assert r0 % 16 == 0 and c0 % 16 == 0 and store.attrs["coordinate_system"] == "global"
    expected = sorted_genes(phantom)[:, :, r0 // 16 :, c0 // 16 :]
    np.testing.assert_array_equal(genes[:, :, : expected.shape[2], : expected.shape[3]], expected)
    assert genes.sum() == expected.sum()


def test_h5ad_round_trip(phantom, tmp_path):
    path = write_anndata_bins(tmp_path / "bins.h5ad", phantom.genes, list(phantom.panel.genes), UM, 16)
    report = ingest_anndata(path, tmp_path / "g.zarr", um_per_px=UM, section_key="section", origin="zero",
                            batch_rows=7, progress_bar=False)
    genes = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["genes"][...]
    expected = sorted_genes(phantom)
    np.testing.assert_array_equal(genes[:, :, : expected.shape[2], : expected.shape[3]], expected)
    assert genes.sum() == expected.sum() and report.max_batch_rows <= 7 * len(phantom.panel)


def test_h5ad_errors_name_the_field(phantom, tmp_path):
    path = write_anndata_bins(tmp_path / "bins.h5ad", phantom.genes, list(phantom.panel.genes), UM, 16)
    with pytest.raises(ValueError, match=r"bins.h5ad: no obs column 'slice'"):
        ingest_anndata(path, tmp_path / "g.zarr", um_per_px=UM, section_key="slice", progress_bar=False)
    with pytest.raises(ValueError, match=r"no obsm\['xy'\] coordinates; obsm has \['spatial'\]"):
        ingest_anndata(path, tmp_path / "g.zarr", um_per_px=UM, spatial_key="xy", progress_bar=False)
    assert not (tmp_path / "g.zarr").exists()


def test_generated_images_land_in_the_input_coordinate_system(sdata_path, tmp_path, capsys):
    """SpatialData store -> generate (on the fly) -> image elements beside the input points, in microns."""
    out, copy = tmp_path / "r.ome.zarr", tmp_path / "side_by_side.zarr"
    code = cli_main(["generate", "--genes", str(sdata_path), "--out", str(out), "--um-per-px", str(UM),
                     "--steps", "1", "--threads", "1", "--quiet", "--spatialdata", str(copy)])
    assert code == 0
    assert "ingested spatialdata" in capsys.readouterr().out
    sdata = spatialdata.read_zarr(copy)
    assert "transcripts" in sdata.points and {"teramind_z0", "teramind_z1"} <= set(sdata.images)
    image = sdata.images["teramind_z0"]
    np.testing.assert_array_equal(image.values, zarr.open_group(str(out), mode="r")["0"][:, 0])
    affine = np.asarray(get_transformation(image, "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))
    origin_y, origin_x = zarr.open_group(str(tmp_path / "r.genes.zarr"), mode="r").attrs["origin_um"]
    np.testing.assert_allclose(affine, [[UM, 0, origin_x], [0, UM, origin_y], [0, 0, 1]])
    # the export command adds the elements to an existing store (here: again, refused without --overwrite)
    assert cli_main(["export", "spatialdata", str(out), "--to", str(copy)]) == 2
    assert "exist; pass --overwrite" in capsys.readouterr().err
    # and generate refuses that target before generating anything
    again = tmp_path / "again.ome.zarr"
    assert cli_main(["generate", "--genes", str(sdata_path), "--out", str(again), "--um-per-px", str(UM),
                     "--steps", "1", "--quiet", "--spatialdata", str(copy)]) == 2
    assert "exist; pass --overwrite" in capsys.readouterr().err and not again.exists()
    assert cli_main(["export", "spatialdata", str(out), "--to", str(copy), "--name", "again"]) == 0
    assert "again_z1" in spatialdata.read_zarr(copy).images
