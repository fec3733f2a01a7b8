"""Micrometre placement end to end: a table whose micron origin is off zero and off the tile grid goes through
`teramind ingest`, `generate` and `export spatialdata`; the images land on the transcripts in SpatialData's own
transforms, the OME-Zarr says the same, and the export is the same from any working directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from teramind_hf.cli import main as cli_main

pytest.importorskip("spatialdata")

UM_PER_PX = 0.5
OFFSET_UM = (320.3, 1232.7)  # (y, x): not a multiple of the pixel, bin or tile
COMMON = ["--steps", "1", "--threads", "1", "--quiet", "--region", "0,0,256,512", "--slices", "0,2"]


def _cli(args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str]:
    """The CLI in this process, run from `cwd` (relative paths resolve there): (exit status, stderr)."""
    with monkeypatch.context() as patch:
        patch.chdir(cwd)
        status = cli_main(args)
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    assert cli_main(["phantom", str(root / "ph"), "--size", "256,512", "--slices", "2", "--seed", "3",
                     "--um-per-px", str(UM_PER_PX), "--formats", "table"]) == 0
    table = pd.read_parquet(root / "ph" / "transcripts.parquet")
    table["x"] = table["x"] * UM_PER_PX + OFFSET_UM[1]
    table["y"] = table["y"] * UM_PER_PX + OFFSET_UM[0]
    table.to_csv(root / "t_um.csv", index=False)
    assert cli_main(["ingest", "table", str(root / "t_um.csv"), "--out", str(root / "g.zarr"), "--units", "um",
                     "--um-per-px", str(UM_PER_PX), "--origin", "extent", "--pad-to", "256", "--quiet"]) == 0
    assert cli_main(["generate", "--genes", str(root / "g.zarr"), "--out", str(root / "o.ome.zarr"), *COMMON]) == 0
    return root, table


def _transforms_and_bytes(store: Path):
    import spatialdata
    from spatialdata.transformations import get_transformation

    sdata = spatialdata.read_zarr(store)
    out = {}
    for name, image in sdata.images.items():
        levels = [image[k]["image"] for k in sorted(image.keys())] if hasattr(image, "children") else [image]
        out[name] = (
            [get_transformation(level, "global").to_affine_matrix(("y", "x"), ("y", "x")) for level in levels],
            [np.asarray(level.data) for level in levels],
        )
    return out


def test_images_land_on_the_transcripts_from_any_folder(placed, monkeypatch, capsys):
    from spatialdata.transformations import get_transformation

    import spatialdata

    root, table = placed
    store = dict(zarr.open_group(str(root / "g.zarr"), mode="r").attrs)
    origin = np.array(store["origin_um"])
    run = dict(zarr.open_group(str(root / "o.ome.zarr"), mode="r").attrs["teramind"])["run"]
    assert run["origin_um"] == pytest.approx(list(origin))  # numbers in the run record, not a path
    # the OME-Zarr: every level's NGFF translation starts at the store's origin (plus the coarser levels' shift)
    datasets = zarr.open_group(str(root / "o.ome.zarr"), mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    for level, dataset in enumerate(datasets):
        translation = dataset["coordinateTransformations"][1]["translation"]
        shift = (2**level - 1) / 2 * UM_PER_PX
        assert translation[2:] == pytest.approx(list(origin + shift))
    assert len(datasets) == 2  # 256 x 512 px: level 1 is 128 x 256
    # the same placement as an independent reader (ome-zarr-py) sees it
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    image = list(Reader(parse_url(str(root / "o.ome.zarr")))())[0]
    assert [np.asarray(level).shape for level in image.data] == [(2, 2, 256, 512), (2, 2, 128, 256)]
    for level, transforms in enumerate(image.metadata["coordinateTransformations"]):
        assert transforms[0]["scale"][2:] == [UM_PER_PX * 2**level] * 2
        assert transforms[1]["translation"][2:] == pytest.approx(list(origin + (2**level - 1) / 2 * UM_PER_PX))

    # export from the output's folder and from an unrelated folder, with relative paths: same bytes, same transforms
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    assert _cli(["export", "spatialdata", "o.ome.zarr", "--to", "a.zarr"], root, monkeypatch, capsys)[0] == 0
    assert _cli(["export", "spatialdata", "../o.ome.zarr", "--to", "b.zarr"], elsewhere, monkeypatch, capsys)[0] == 0
    a, b = _transforms_and_bytes(root / "a.zarr"), _transforms_and_bytes(elsewhere / "b.zarr")
    assert sorted(a) == sorted(b) == ["teramind_z0", "teramind_z1"]
    for name in a:
        for matrix_a, matrix_b in zip(a[name][0], b[name][0]):
            np.testing.assert_array_equal(matrix_a, matrix_b)
        for data_a, data_b in zip(a[name][1], b[name][1]):
            np.testing.assert_array_equal(data_a, data_b)
    # the export carries the output's own pyramid: same levels, same pixels, scale 2^level
    output = zarr.open_group(str(root / "o.ome.zarr"), mode="r")
    for level, (matrix, data) in enumerate(zip(*a["teramind_z1"])):
        np.testing.assert_array_equal(data, output[str(level)][:, 1])
        np.testing.assert_allclose(np.diag(matrix)[:2], [UM_PER_PX * 2**level] * 2)
        np.testing.assert_allclose(matrix[:2, 2], origin)

    # each transcript maps, through SpatialData's own transform, into the pixel the gene store binned it in
    image = spatialdata.read_zarr(root / "a.zarr").images["teramind_z0"]["scale0"]["image"]
    to_pixels = get_transformation(image, "global").inverse().to_affine_matrix(("y", "x"), ("y", "x"))
    microns = table[["y", "x"]].to_numpy()
    intrinsic = (to_pixels @ np.c_[microns, np.ones(len(microns))].T).T[:, :2]
    stored_px = np.floor(microns / UM_PER_PX) - np.round(origin / UM_PER_PX)  # the ingest's binning frame
    inside = (stored_px >= 0).all(axis=1) & (stored_px < [256, 512]).all(axis=1)
    assert inside.sum() > 1000
    assert np.abs(intrinsic[inside] - (stored_px[inside] + 0.5)).max() <= 0.5 + 1e-6


def test_unknown_origin_is_said_and_needs_a_choice(placed, tmp_path, monkeypatch, capsys):
    root, _ = placed
    genes = np.asarray(zarr.open_group(str(root / "g.zarr"), mode="r")["genes"])
    np.save(tmp_path / "g.npy", genes)  # an array carries no origin
    out = tmp_path / "o.ome.zarr"
    argv = ["generate", "--genes", str(tmp_path / "g.npy"), "--out", str(out), *COMMON, "--min-gene-overlap", "0"]
    status, err = _cli(argv, tmp_path, monkeypatch, capsys)  # the CLI asks for a choice, before writing anything
    assert status == 2 and "--origin-unknown" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    status, _ = _cli([*argv, "--origin-unknown"], tmp_path, monkeypatch, capsys)
    assert status == 0
    assert dict(zarr.open_group(str(out), mode="r").attrs["teramind"])["run"]["origin_um"] is None
    status, err = _cli(["export", "spatialdata", str(out), "--to", str(tmp_path / "s.zarr")], tmp_path, monkeypatch, capsys)
    assert status == 2 and "--origin-um Y,X" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.zarr").exists()
    assert _cli(["export", "spatialdata", str(out), "--to", str(tmp_path / "s.zarr"), "--origin-um", "-10.5,7"],
                tmp_path, monkeypatch, capsys)[0] == 0
    from spatialdata import read_zarr
    from spatialdata.transformations import get_transformation

    image = read_zarr(tmp_path / "s.zarr").images["teramind_z0"]["scale0"]["image"]
    corner = get_transformation(image, "global").to_affine_matrix(("y", "x"), ("y", "x"))[:2, 2]
    np.testing.assert_allclose(corner, [-10.5, 7.0])


@pytest.mark.parametrize("value", ["1", "1,2,3", "a,b", "nan,0", ""])
def test_bad_origin_is_one_line_before_anything_is_written(tmp_path, capsys, value):
    out = tmp_path / "o.ome.zarr"
    assert cli_main(["generate", "--genes", str(tmp_path / "missing.zarr"), "--out", str(out), "--origin-um", value]) == 2
    err = capsys.readouterr().err.strip()
    assert "--origin-um" in err and len(err.splitlines()) == 1 and not out.exists()
    assert cli_main(["export", "spatialdata", str(tmp_path / "none.ome.zarr"), "--to", str(tmp_path / "s.zarr"),
                     "--origin-um", value]) == 2
    err = capsys.readouterr().err.strip()
    assert "--origin-um" in err and len(err.splitlines()) == 1 and not (tmp_path / "s.zarr").exists()


def test_an_output_from_before_origins_is_not_resumed_nor_placed_at_zero(placed, tmp_path, capsys):
    import shutil

    root, _ = placed
    old = tmp_path / "old.ome.zarr"
    shutil.copytree(root / "o.ome.zarr", old)
    group = zarr.open_group(str(old), mode="r+")
    state = dict(group.attrs["teramind"])
    state["run"] = {k: v for k, v in state["run"].items() if k not in ("origin_um", "coordinate_system")}
    group.attrs["teramind"] = state
    assert cli_main(["generate", "--genes", str(root / "g.zarr"), "--out", str(old), *COMMON]) == 2
    assert "older teramind" in capsys.readouterr().err
    assert cli_main(["export", "spatialdata", str(old), "--to", str(tmp_path / "s.zarr")]) == 2
    assert "predates micron origins" in capsys.readouterr().err and not (tmp_path / "s.zarr").exists()


def test_an_unknown_origin_is_an_error_for_the_cli_and_a_warning_for_the_api(tmp_path):
    from teramind_hf.pipelines.gene_source import open_gene_source
    from teramind_hf.pipelines.preflight import resolve_origin_um

    np.save(tmp_path / "g.npy", np.zeros((3, 1, 16, 16), np.float32))
    source = open_gene_source(str(tmp_path / "g.npy"))
    with pytest.raises(ValueError, match=r"g\.npy: the gene source records no micron origin.*--origin-unknown"):
        resolve_origin_um(source, None, False, required=True)
    with pytest.warns(UserWarning, match="records no micron origin"):
        assert resolve_origin_um(source, None, False) is None
    assert resolve_origin_um(source, None, True, required=True) is None
    assert resolve_origin_um(source, (1.5, -2), False, required=True) == (1.5, -2.0)
