"""Readers: each loads the phantom's own output and a small fixture written in the raw schema."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sparse
import tifffile
import zarr

from teramind_hf.data.panel import GenePanel
from teramind_hf.data.phantom import make_phantom
from teramind_hf.data.phantom_io import write_phantom
from teramind_hf.data.readers import (
    read_merscope,
    read_micron_to_pixel,
    read_official_tiles,
    read_points,
    read_transcript_table,
)
from teramind_hf.data.volume import SpatialVolume

BIN = 16


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(256, 256, 2, seed=5, um_per_px=0.5)


@pytest.fixture(scope="module")
def phantom_dir(phantom, tmp_path_factory):
    return write_phantom(phantom, tmp_path_factory.mktemp("phantom"), formats=("table", "official"))


def _direct_bins(rows, cols, zs, gene_idx, num_genes, num_slices, hb, wb, counts=None):
    """Reference binning written independently of the package: a plain loop over transcripts."""
    out = np.zeros((num_genes, num_slices, hb, wb), dtype=np.float64)
    counts = np.ones(len(rows)) if counts is None else counts
    for r, c, z, g, n in zip(rows, cols, zs, gene_idx, counts):
        rb, cb = int(np.floor(r / BIN)), int(np.floor(c / BIN))
        if 0 <= rb < hb and 0 <= cb < wb:
            out[g, z, rb, cb] += n
    return out


# --- phantom output ------------------------------------------------------------------------


def test_table_reader_on_phantom(phantom, phantom_dir):
    volume = read_transcript_table(phantom_dir / "transcripts.parquet", images=phantom_dir / "images.tif", panel=phantom.panel)
    np.testing.assert_array_equal(volume.genes, phantom.genes)
    np.testing.assert_array_equal(volume.images, phantom.images)


def test_official_reader_on_phantom(phantom, phantom_dir):
    volume = read_official_tiles(phantom_dir / "official/gene", phantom_dir / "official/img")
    assert len(volume.panel) == 229 and volume.genes.shape == (229, 2, 16, 16)
    np.testing.assert_array_equal(volume.aligned_to(phantom.panel).genes, phantom.genes)
    np.testing.assert_array_equal(volume.images, phantom.images)
    part = read_official_tiles(
        phantom_dir / "official/gene", phantom_dir / "official/img", region=(64, 192, 128, 256), panel=phantom.panel
    )
    np.testing.assert_array_equal(part.genes, phantom.genes[:, :, 4:12, 8:16])
    np.testing.assert_array_equal(part.images, phantom.images[:, :, 64:192, 128:256])


def _write_merscope_run(run: Path, dapi, polyt, table_um: pd.DataFrame, transform: np.ndarray) -> None:
    """A MERSCOPE run folder in the vendor schema (uint16 mosaics per plane)."""
    (run / "images").mkdir(parents=True)
    for k, (d, p) in enumerate(zip(dapi, polyt)):
        tifffile.imwrite(run / "images" / f"mosaic_DAPI_z{k}.tif", d)
        tifffile.imwrite(run / "images" / f"mosaic_PolyT_z{k}.tif", p)
    np.savetxt(run / "images/micron_to_mosaic_pixel_transform.csv", transform, delimiter=" ")
    table_um.to_csv(run / "detected_transcripts.csv")


def test_merscope_reader_on_phantom(phantom, tmp_path):
    runs = []
    um = phantom.um_per_px
    transform = np.array([[1 / um, 0, 0], [0, 1 / um, 0], [0, 0, 1.0]])
    for z in range(phantom.images.shape[1]):
        sec = phantom.transcripts[phantom.transcripts["z"] == z]
        table = pd.DataFrame({"barcode_id": 0, "global_x": sec["x"] * um, "global_y": sec["y"] * um,
                              "global_z": z % 3, "gene": sec["gene"]})
        wide = [phantom.images[s, z].astype(np.uint16) * 257 for s in (0, 1)]
        dim = [(w // 2).astype(np.uint16) for w in wide]  # a dimmer plane: max projection keeps the bright one
        _write_merscope_run(tmp_path / f"run{z}", [wide[0], dim[0]], [dim[1], wide[1]], table, transform)
        runs.append(tmp_path / f"run{z}")
    volume = read_merscope(runs, panel=phantom.panel)
    np.testing.assert_array_equal(volume.genes, phantom.genes)
    np.testing.assert_array_equal(volume.images, phantom.images)
    assert volume.um_per_px == pytest.approx(um)


# --- raw-schema fixtures -------------------------------------------------------------------


def test_merscope_fixture_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    genes = ["Slc17a7", "Th", "Gad2", "Blank-3"]
    transform = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, -4.0], [0.0, 0.0, 1.0]])  # 0.5 um/px + offset
    n = 600
    table = pd.DataFrame({
        "barcode_id": rng.integers(0, 4, n), "global_x": rng.uniform(-5, 70, n), "global_y": rng.uniform(0, 50, n),
        "global_z": rng.integers(0, 7, n).astype(float), "x": 0.0, "y": 0.0, "fov": 1,
        "gene": rng.choice(genes, n), "transcript_id": "t", "cell_id": -1,
    })
    planes = rng.integers(0, 65535, (3, 100, 136), dtype=np.uint16)
    _write_merscope_run(tmp_path / "run", planes, planes[::-1], table, transform)
    volume = read_merscope([tmp_path / "run"], plane=1)
    assert list(volume.panel) == ["Gad2", "Slc17a7", "Th"]  # Blank-* dropped, sorted
    assert volume.images.shape == (2, 1, 96, 128)  # cropped to multiples of gene_bin
    np.testing.assert_array_equal(volume.images[0, 0], np.round(planes[1, :96, :128] / 257).astype(np.uint8))
    keep = table["gene"] != "Blank-3"
    cols = 2.0 * table["global_x"][keep] + 10.0
    rows = 2.0 * table["global_y"][keep] - 4.0
    idx = table["gene"][keep].map({"Gad2": 0, "Slc17a7": 1, "Th": 2})
    expected = _direct_bins(rows, cols, np.zeros(len(rows), int), idx, 3, 1, 6, 8)
    np.testing.assert_array_equal(volume.genes, expected)
    assert volume.um_per_px == pytest.approx(0.5)


def test_official_fixture_round_trip(tmp_path):
    """Two 256-px tiles of a 256x512 canvas, 500 slots per section, real genes in slots 0..228."""
    rng = np.random.default_rng(1)
    height, width, z_count, slots = 256, 512, 2, 500
    (tmp_path / "gene").mkdir()
    (tmp_path / "img").mkdir()
    canvas = rng.integers(0, 255, (2 * z_count, height, width), dtype=np.uint8)
    n = 3000
    rows, cols = rng.integers(0, height, n), rng.integers(0, width, n)
    chan = rng.integers(0, z_count, n) * slots + rng.integers(0, 240, n)  # some counts in slots >= 229
    counts = rng.integers(1, 4, n)
    for c0 in (0, 256):
        r0m, r1m, c0m, c1m = 0, height, max(c0 - 128, 0), min(c0 + 256 + 128, width)
        name = f"0_256_{c0}_{c0 + 256}_{r0m}_{r1m}_{c0m}_{c1m}"
        inside = (cols >= c0m) & (cols < c1m)
        coo = sparse.COO(np.stack([rows[inside] - r0m, cols[inside] - c0m, chan[inside]]), counts[inside],
                         shape=(r1m - r0m, c1m - c0m, z_count * slots))
        sparse.save_npz(tmp_path / "gene" / f"{name}.npz", coo)
        store = zarr.storage.ZipStore(tmp_path / "img" / f"{name}.zip", mode="w")
        arr = zarr.create_array(store, shape=(2 * z_count, r1m - r0m, c1m - c0m), dtype="uint8", zarr_format=2)
        arr[...] = canvas[:, r0m:r1m, c0m:c1m]
        store.close()
    volume = read_official_tiles(tmp_path / "gene", tmp_path / "img")
    keep = chan % slots < 229
    expected = _direct_bins(rows[keep], cols[keep], chan[keep] // slots, chan[keep] % slots, 229, z_count, 16, 32, counts[keep])
    np.testing.assert_array_equal(volume.genes, expected)
    np.testing.assert_array_equal(volume.images, canvas.reshape(2, z_count, height, width))


def test_csv_table_with_counts_and_points(tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    table = pd.DataFrame({"x": rng.uniform(0, 64, n), "y": rng.uniform(0, 48, n), "z": rng.integers(0, 3, n),
                          "gene": rng.choice(["b", "a"], n), "count": rng.integers(0, 5, n)})
    table.to_csv(tmp_path / "t.csv", index=False)
    volume = read_transcript_table(tmp_path / "t.csv", shape=(48, 64))
    expected = _direct_bins(table["y"], table["x"], table["z"], table["gene"].map({"a": 0, "b": 1}), 2, 3, 3, 4, table["count"])
    np.testing.assert_array_equal(volume.genes, expected)
    assert volume.images is None
    # SpatialData-style points: feature_name gene column, microns
    points = pd.DataFrame({"x": table["x"] * 0.25, "y": table["y"] * 0.25, "z": table["z"], "feature_name": table["gene"],
                           "n": table["count"]})
    via_points = read_points(points, gene_key="feature_name", count_key="n", units="um", um_per_px=0.25, shape=(48, 64))
    np.testing.assert_allclose(via_points.genes, volume.genes)


# --- bad input -------------------------------------------------------------------------------


def _table(**overrides):
    base = {"x": [1.0, 2.0], "y": [3.0, 4.0], "z": [0, 0], "gene": ["Th", "Gad2"]}
    base.update(overrides)
    return pd.DataFrame(base)


def test_missing_columns_named(tmp_path):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['gene'\]"):
        read_transcript_table(_table().drop(columns="gene"), shape=(16, 16))
    run = tmp_path / "run"
    _write_merscope_run(run, [np.zeros((16, 16), np.uint16)], [np.zeros((16, 16), np.uint16)],
                        pd.DataFrame({"global_x": [1.0], "global_y": [1.0], "gene": ["Th"]}), np.eye(3))
    with pytest.raises(ValueError, match=r"detected_transcripts.csv: missing column\(s\) \['global_z'\]"):
        read_merscope([run])


def test_unknown_genes_named():
    with pytest.raises(ValueError, match=r"unknown gene\(s\).*'Gad2'"):
        read_transcript_table(_table(), panel=GenePanel(["Th"]), shape=(16, 16))
    volume = read_transcript_table(_table(), panel=GenePanel(["Th"]), shape=(16, 16), drop_unknown=True)
    assert volume.genes.sum() == 1


@pytest.mark.parametrize("bad", [-1.0, np.nan])
def test_negative_or_nan_counts(bad):
    with pytest.raises(ValueError, match="column 'count' has 1 negative or NaN"):
        read_transcript_table(_table(count=[1.0, bad]), shape=(16, 16))


def test_z_mismatch_between_genes_and_images():
    images = np.zeros((2, 1, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="z mismatch"):
        read_transcript_table(_table(z=[0, 1]), images=images)
    with pytest.raises(ValueError, match="z mismatch: genes have Z=2 slices but images have Z=1"):
        SpatialVolume(genes=np.zeros((1, 2, 1, 1)), panel=GenePanel(["Th"]), images=images)


def test_transform_of_wrong_shape(tmp_path):
    path = tmp_path / "micron_to_mosaic_pixel_transform.csv"
    path.write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match=r"micron_to_mosaic_pixel_transform.csv: transform must be a 3x3 matrix, got 2 rows"):
        read_micron_to_pixel(path)


def test_empty_region(phantom_dir):
    gene_dir = phantom_dir / "official/gene"
    with pytest.raises(ValueError, match="empty region"):
        read_official_tiles(gene_dir, region=(32, 32, 0, 64))
    with pytest.raises(ValueError, match="empty region: no tile"):
        read_official_tiles(gene_dir, region=(1024, 1056, 0, 64))
    with pytest.raises(ValueError, match="empty region"):
        read_transcript_table(_table().iloc[:0], num_slices=1)


def test_panel_overlap_below_threshold(phantom):
    volume = phantom.to_volume()
    with pytest.raises(ValueError, match=r"overlap too small: \d+ of the model's 229 genes.*min_overlap is 50.0%"):
        volume.aligned_to(GenePanel.official_mouse(), min_overlap=0.5)
