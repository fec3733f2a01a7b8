"""`teramind ingest`: MERSCOPE runs and transcript tables -> gene store, in chunks, checks before any write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from teramind_hf.cli import main as cli_main
from teramind_hf.data.ingest import ingest_merscope, ingest_table, merscope_runs
from teramind_hf.data.phantom import make_phantom
from teramind_hf.data.phantom_io import write_phantom
from teramind_hf.data.readers.merscope import TRANSFORM_FILE, read_micron_to_pixel

UM = 0.5


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(96, 128, num_slices=2, seed=3, um_per_px=UM)


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory) -> Path:
    return write_phantom(phantom, tmp_path_factory.mktemp("ingest") / "ph", ("table", "merscope"))


def direct_counts(runs: list[Path], panel: list[str], shape: tuple[int, int], gene_bin: int = 16) -> np.ndarray:
    """Counts per gene per bin straight from the raw MERSCOPE CSVs (np.add.at, no package code)."""
    hb, wb = shape[0] // gene_bin, shape[1] // gene_bin
    out = np.zeros((len(panel), len(runs), hb, wb))
    for z, run in enumerate(runs):
        table = pd.read_csv(run / "detected_transcripts.csv")
        m = np.loadtxt(run / TRANSFORM_FILE)
        col = m[0, 0] * table.global_x + m[0, 1] * table.global_y + m[0, 2]
        row = m[1, 0] * table.global_x + m[1, 1] * table.global_y + m[1, 2]
        r, c = np.floor(row / gene_bin).astype(int), np.floor(col / gene_bin).astype(int)
        g = table.gene.map({name: i for i, name in enumerate(panel)}).to_numpy()
        ok = (r >= 0) & (r < hb) & (c >= 0) & (c < wb)
        np.add.at(out, (g[ok], z, r[ok], c[ok]), 1)
    return out


def test_merscope_counts_equal_direct_computation(phantom, written, tmp_path):
    runs = merscope_runs(written / "merscope")
    assert [r.name for r in runs] == ["section_00", "section_01"]
    report = ingest_merscope(runs, tmp_path / "genes.zarr", batch_rows=200, buffer_bins=250, progress_bar=False)
    store = zarr.open_group(str(tmp_path / "genes.zarr"), mode="r")
    names = list(store.attrs["gene_names"])
    assert names == sorted(phantom.panel.genes)
    # padded to whole 256-px tiles; the data's own extent is recorded
    assert store["genes"].shape == (len(names), 2, 16, 16) and store.attrs["data_shape_px"] == [96, 128]
    np.testing.assert_array_equal(store["genes"][...], direct_counts(runs, names, (256, 256)))
    # the DAPI/PolyT truth: max projection of uint16 planes = the phantom's images (black padding)
    images = store["images"][...]
    np.testing.assert_array_equal(images[:, :, :96, :128], phantom.images)
    assert not images[:, :, 96:].any() and not images[:, :, :, 128:].any()
    assert store.attrs["um_per_px"] == pytest.approx(UM)
    assert store.attrs["gene_bin"] == 16 and store.attrs["section_spacing_um"] == 150.0
    # pixel (0, 0) back in the runs' global microns
    corner = np.linalg.solve(read_micron_to_pixel(runs[0] / TRANSFORM_FILE), [0, 0, 1])
    assert store.attrs["origin_um"] == pytest.approx([corner[1], corner[0]])
    assert report.max_batch_rows <= 200 and report.batches > 4 and report.flushes > 1
    assert report.rows_binned == report.rows_read == len(phantom.transcripts)


def test_table_chunked_equals_one_batch_and_batch_bounds_what_is_held(phantom, written, tmp_path):
    path = written / "transcripts.parquet"
    whole = ingest_table(path, tmp_path / "whole.zarr", um_per_px=UM, batch_rows=10**9, progress_bar=False)
    small = ingest_table(path, tmp_path / "small.zarr", um_per_px=UM, batch_rows=100, buffer_bins=150, progress_bar=False)
    a = zarr.open_group(str(tmp_path / "whole.zarr"), mode="r")["genes"][...]
    b = zarr.open_group(str(tmp_path / "small.zarr"), mode="r")["genes"][...]
    np.testing.assert_array_equal(a, b)
    # same as the in-memory phantom binning (same transcripts, pixel coordinates)
    order = [list(phantom.panel.genes).index(name) for name in sorted(phantom.panel.genes)]
    np.testing.assert_array_equal(b[:, :, :6, :8], phantom.genes[order])
    assert b.sum() == phantom.genes.sum()
    assert whole.batches == 1 and small.batches == -(-len(phantom.transcripts) // 100)
    assert small.max_batch_rows == 100  # the reader's own accounting: never more rows than one batch
    assert small.max_pending_bins <= 150 + 100 and small.flushes > 1
    assert "images" not in zarr.open_group(str(tmp_path / "small.zarr"), mode="r")


def test_csv_and_column_mapping_and_microns(phantom, written, tmp_path):
    table = phantom.transcripts.rename(columns={"x": "gx", "y": "gy", "z": "section", "gene": "target"})
    table = table.assign(gx=table.gx * UM, gy=table.gy * UM)
    table.to_csv(tmp_path / "t.csv", index=False)
    report = ingest_table(
        tmp_path / "t.csv", tmp_path / "g.zarr", um_per_px=UM, units="um", batch_rows=1000, progress_bar=False,
        columns={"x": "gx", "y": "gy", "z": "section", "gene": "target"}, images=written / "images.tif",
    )
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")
    genes = group["genes"][...]
    np.testing.assert_array_equal(group["images"][:, :, :96, :128], phantom.images)
    assert genes.sum() == len(phantom.transcripts) == report.rows_binned
    assert genes.shape[1:] == (2, 16, 16)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, match",
    [
        ("x,y,z,gene\n1,2,0,A\nnan,3,0,B\n", r"bad.csv: column 'x' has 1 missing/non-numeric/NaN"),
        ("x,y,gene\n1,2,A\n", r"missing column\(s\) \['z'\]; expected columns x='x', y='y', z='z', gene='gene'"),
        ("x,y,z,gene\n1e13,2,0,A\n", r"column 'x' reaching 1e\+13 px .* TiB"),
        ("x,y,z,gene\n-5,2,0,A\n", r"column 'x' has negative pixel coordinates"),
        ("x,y,z,gene\n1,2,0.5,A\n", r"column 'z' must hold non-negative integer section"),
    ],
)
def test_bad_tables_are_refused_before_any_write(tmp_path, text, match):
    out = tmp_path / "out.zarr"
    with pytest.raises(ValueError, match=match):
        ingest_table(_csv(tmp_path, text), out, um_per_px=UM, progress_bar=False)
    assert not out.exists() and not any(p.name.startswith(".out.zarr") for p in tmp_path.iterdir())


def test_refusal_of_a_terabyte_grid_allocates_nothing(tmp_path):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"\(G, Z, Hb, Wb\)=\(1, 1, 1, 625000000001\)"):
        ingest_table(_csv(tmp_path, "x,y,z,gene\n1e13,0,0,A\n"), tmp_path / "o.zarr", um_per_px=UM, progress_bar=False)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: no big buffer


def test_cli_ingest_three_commands_and_errors(phantom, written, tmp_path, capsys):
    store = tmp_path / "g.zarr"
    assert cli_main(["ingest", "merscope", *map(str, merscope_runs(written / "merscope")), "--out", str(store), "--quiet"]) == 0
    assert "2 sections" in capsys.readouterr().out
    # an existing store is refused (no change), and a bad column mapping names the expected ones
    assert cli_main(["ingest", "merscope", str(written / "merscope"), "--out", str(store), "--quiet"]) == 2
    assert "exists; pass overwrite" in capsys.readouterr().err
    assert cli_main(["ingest", "table", str(written / "transcripts.parquet"), "--out", str(tmp_path / "t.zarr"),
                     "--um-per-px", "0.5", "--column", "x=nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['nope']" in err and "Traceback" not in err
    assert not (tmp_path / "t.zarr").exists()


def test_corrupt_mosaic_is_named_and_nothing_is_written(written, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(written / "merscope" / "section_01", run)
    (run / "images" / "mosaic_PolyT_z1.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "g.zarr"
    assert cli_main(["ingest", "merscope", str(run), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mosaic_PolyT_z1.tif: cannot read the TIFF mosaic" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # a truncated plane whose header reads fine fails while writing: named, and the partial store is removed
    good = (written / "merscope" / "section_01" / "images" / "mosaic_PolyT_z1.tif").read_bytes()
    (run / "images" / "mosaic_PolyT_z1.tif").write_bytes(good[: len(good) // 2])
    assert cli_main(["ingest", "merscope", str(run), "--out", str(out), "--quiet"]) == 2
    assert "PolyT" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_readme_set_up_is_what_ci_runs():
    root = Path(__file__).parents[1]
    readme, ci = (root / "README.md").read_text(), (root / ".ci" / "run").read_text()
    block = readme.split("## Set-up and the main job (two commands)")[1].split("```bash\n")[1].split("```")[0]
    install_and_run, tests = block.strip().splitlines()
    assert "teramind generate --out" in install_and_run and install_and_run in ci.splitlines()
    assert tests in ci.splitlines()


def test_memory_budget_sets_batch_and_buffer_sizes(written, tmp_path, capsys):
    from teramind_hf.data.ingest.engine import sizes_for_memory

    small, large = sizes_for_memory(300 * 2**20), sizes_for_memory(3000 * 2**20)
    assert small[0] < large[0] and small[1] < large[1]
    table = str(written / "transcripts.parquet")
    assert cli_main(["ingest", "table", table, "--out", str(tmp_path / "g.zarr"), "--um-per-px", "0.5", "--memory-mb", "100", "--quiet"]) == 2
    assert "at least 200 MB" in capsys.readouterr().err and not (tmp_path / "g.zarr").exists()
