"""Real-data route end to end with the embedded model: MERSCOPE in three commands, on-the-fly ingest from
`generate --genes`, `--min-gene-overlap`, and the one-command main job (no --genes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from teramind_hf.cli import main as cli_main

COMMON = ["--steps", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("real_route") / "ph"
    assert cli_main(["phantom", str(out), "--size", "256,512", "--slices", "2", "--seed", "3", "--um-per-px", "0.5",
                     "--formats", "merscope"]) == 0
    return out


def test_merscope_in_three_commands_and_on_the_fly(phantom_dir, tmp_path, capsys):
    store, out = tmp_path / "genes.zarr", tmp_path / "a.ome.zarr"
    assert cli_main(["ingest", "merscope", str(phantom_dir / "merscope"), "--out", str(store), "--quiet"]) == 0
    assert cli_main(["generate", "--genes", str(store), "--out", str(out), *COMMON]) == 0
    assert cli_main(["eval", "seams", str(out)]) == 0
    # the ingested store (DAPI/PolyT from the mosaics) is the truth of `teramind eval report`
    assert cli_main(["eval", "report", str(out), "--truth", str(store), "--out", str(tmp_path / "eval"), "--no-controls", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "seam score" in text and f"output: {out}" in text and "nuclei F1" in text
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["rows"]["model"]["all"]["nuclei_count_truth"] > 50  # the truth's nuclei were found
    first = zarr.open_group(str(out), mode="r")["0"][...]
    assert first.shape == (2, 2, 256, 512) and first.std() > 0
    # the same MERSCOPE folder straight into generate: ingested beside the output, same bytes
    direct = tmp_path / "b.ome.zarr"
    assert cli_main(["generate", "--genes", str(phantom_dir / "merscope"), "--out", str(direct), *COMMON]) == 0
    assert f"-> gene store {tmp_path / 'b.genes.zarr'}" in capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_group(str(direct), mode="r")["0"][...], first)
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "b.genes.zarr"), mode="r")["genes"][...], zarr.open_group(str(store), mode="r")["genes"][...]
    )
    # run again (complete output, resumed): the sibling store is reused, not ingested twice
    assert cli_main(["generate", "--genes", str(phantom_dir / "merscope"), "--out", str(direct), *COMMON]) == 0
    assert "reused" in capsys.readouterr().out


def test_min_gene_overlap_option(phantom_dir, tmp_path, capsys):
    store = zarr.open_group(str(tmp_path / "few.zarr"), mode="w")
    store.create_array("genes", data=np.ones((2, 2, 16, 16), dtype=np.float32))
    store.attrs.update({"origin_um": [0.0, 0.0], "gene_names": ["Gad2", "Th"], "gene_bin": 16, "um_per_px": 0.5})
    out = tmp_path / "few.ome.zarr"
    assert cli_main(["generate", "--genes", str(tmp_path / "few.zarr"), "--out", str(out), *COMMON]) == 2
    assert "overlap" in capsys.readouterr().err and not out.exists()
    assert cli_main(["generate", "--genes", str(tmp_path / "few.zarr"), "--out", str(out), "--min-gene-overlap", "0.05", *COMMON]) == 0


def test_main_job_with_the_fast_preset(tmp_path, capsys):
    """`teramind generate --out ... --preset fast` runs the README's main job with the preset's solver and steps."""
    import json

    out = tmp_path / "out" / "region.ome.zarr"
    assert cli_main(["generate", "--out", str(out), "--preset", "fast", "--threads", "1", "--quiet"]) == 0
    assert "nuclei_f1" in capsys.readouterr().out
    record = zarr.open_group(str(out), mode="r").attrs["teramind"]["run"]
    assert record["num_inference_steps"] == 5 and '"use_lu_lambdas": true' in json.dumps(record)
    assert record["grid_schedule"]["blend_steps"] == "all"  # the embedded model's default grid: diagonal


def test_main_job_one_command(tmp_path, capsys):
    out = tmp_path / "out" / "region.ome.zarr"
    assert cli_main(["generate", "--out", str(out), *COMMON]) == 0
    text = capsys.readouterr().out
    truth = tmp_path / "out" / "region.truth.zarr"
    assert f"output: {out}" in text and "scores against the phantom's truth: seam_score" in text
    assert "nuclei_f1" in text and "mean_image" in text  # the report's table, with the mean-image control
    assert (tmp_path / "out" / "region.eval" / "report.json").is_file()
    group = zarr.open_group(str(truth), mode="r")
    assert group["images"].shape == (2, 2, 256, 512) and zarr.open_group(str(out), mode="r")["0"].shape == (2, 2, 256, 512)
    # a folder of that name that is not the phantom truth is never overwritten
    other = tmp_path / "other.ome.zarr"
    (tmp_path / "other.truth.zarr").mkdir()
    assert cli_main(["generate", "--out", str(other), *COMMON]) == 2
    assert "is not this main job's phantom truth" in capsys.readouterr().err
