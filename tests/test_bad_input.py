"""Bad input is refused before anything is written, with one line naming what is wrong, never a traceback.

`teramind generate` checks all its arguments and the whole gene input it reads (streamed, bounded memory) before it
creates the output, and a refusal leaves an earlier output exactly as it was, --overwrite or not. The sweep runs
bad arguments of every sub-command through `teramind_hf.cli.main` (an exception escaping it is what prints a
traceback) and a few through the real console script.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from teramind_hf import default_model_path
from teramind_hf.cli import main as cli_main
from teramind_hf.data.phantom import make_phantom
from teramind_hf.pipelines.gene_source import open_gene_source
from teramind_hf.pipelines.preflight import check_gene_values

from .conftest import OFFICIAL_SMALL

READ_ONLY_DIR = Path("/sys")  # not writable even for root (a chmod'ed folder is, for root)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A phantom gene source (.npz with names; held-out seed 2), and an earlier output generated from it."""
    root = tmp_path_factory.mktemp("bad_input")
    phantom = make_phantom(256, 256, num_slices=2, seed=2, um_per_px=0.5)
    np.savez(root / "genes.npz", genes=phantom.genes, gene_names=np.array(list(phantom.panel)))
    assert cli_main(["generate", "--genes", str(root / "genes.npz"), "--out", str(root / "earlier.ome.zarr"),
                     "--steps", "1", "--threads", "1", "--quiet"]) == 0  # fmt: skip
    return root


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with the sha256 of its bytes (what "not touched" means)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def refuse(argv: list[str], message: str, capsys) -> str:
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert _search(message, err), (message, err)
    return err


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def _genes_with(work: Path, name: str, edit) -> Path:
    with np.load(work / "genes.npz") as archive:
        genes, names = archive["genes"].copy(), archive["gene_names"]
    genes = edit(genes)
    np.savez(work / name, genes=genes, gene_names=names)
    return work / name


GENERATE_CASES = [
    (["--region", "-256,0,256,256"], r"region y0,x0,h,w = -256,0,256,256 px lies outside the gene data"),
    (["--region", "0,0,100,256"], r"region h=100 px must be a multiple of the tile size \(256 px\)"),
    (["--region", "1,2,3"], r"--region must be 4 comma-separated integers, got '1,2,3'"),
    (["--slices", "2,1"], r"slices 2,1 must satisfy 0 <= start < stop <= 2"),
    (["--slices", "-1,1"], r"slices -1,1 must satisfy"),
    (["--steps", "5000"], r"--steps\) = 5000 exceeds the 1000 timesteps of the model's training schedule"),
    (["--steps", "0"], r"num_inference_steps \(--steps\) must be a whole number >= 1, got 0"),
    (["--batch-size", "0"], r"batch_size \(--batch-size\) must be a whole number >= 1, got 0"),
    (["--threads", "-2"], r"--threads must be a whole number >= 0"),
    (["--memory-limit-mb", "nan"], r"--memory-limit-mb\) must be a finite number >= 0"),
    (["--um-per-px", "0"], r"um_per_px \(--um-per-px\) must be a finite number > 0, got 0.0"),
    (["--um-per-px", "-0.5"], r"um_per_px \(--um-per-px\) must be a finite number > 0"),
    (["--section-spacing-um", "inf"], r"section_spacing_um \(--section-spacing-um\) must be a finite number > 0"),
    (["--seed", "-1"], r"seed \(--seed\) must be in \[0, 2\*\*63 - 1\], got -1"),
    (["--report-json", str(READ_ONLY_DIR / "report.json")], r"--report-json /sys/report.json: /sys is not writable"),
    (["--report-json", "/"], r"--report-json / is a folder"),
    (["--report-json", "/nonexistent-folder/r.json"], r"folder /nonexistent-folder does not exist"),
    (["--model", "/nonexistent-model"], r"pipeline folder not found: /nonexistent-model"),
    (["--scheduler", "nonsense"], r"scheduler .nonsense. is not one of"),
]


@pytest.mark.parametrize("extra, message", GENERATE_CASES, ids=[" ".join(c[0])[:40] for c in GENERATE_CASES])
def test_generate_refuses_bad_arguments_without_creating_the_output(work, extra, message, capsys):
    out = work / "new.ome.zarr"
    refuse(["generate", "--genes", str(work / "genes.npz"), "--out", str(out), "--quiet", *extra], message, capsys)
    assert not out.exists()


def test_bad_gene_sources_are_refused_before_the_output_exists(work, capsys):
    out = work / "new.ome.zarr"
    cases = {
        "absent.npz": r"gene source not found: .*absent\.npz",
        "garbage.npy": r"garbage\.npy",
        "three_d.npy": r"three_d\.npy: genes must be 4-D \(G, Z, Hb, Wb\), got shape \(3, 4, 5\)",
        "complex.npy": r"complex\.npy: dtype complex64 is not a number type",
        "objects.npy": r"objects\.npy: not a readable \.npy gene array .*Python objects",
        "nan.npz": r"nan\.npz: 1 NaN/inf value\(s\) in section 1, first at gene '.+' \(index 18\), bin y=15, x=15",
        "negative.npz": r"negative\.npz: 1 negative value\(s\) in section 0, first at gene '.+' \(index 0\), bin y=3, x=4",
    }
    (work / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(work / "three_d.npy", np.zeros((3, 4, 5), np.float32))
    np.save(work / "complex.npy", np.zeros((19, 2, 16, 16), np.complex64))
    np.save(work / "objects.npy", np.array([[[[{"a": 1}]]]], dtype=object), allow_pickle=True)
    _genes_with(work, "nan.npz", lambda g: (g.__setitem__((18, 1, 15, 15), np.nan), g)[1])
    _genes_with(work, "negative.npz", lambda g: (g.__setitem__((0, 0, 3, 4), -1.0), g)[1])
    for name, message in cases.items():
        refuse(["generate", "--genes", str(work / name), "--out", str(out), "--quiet"], message, capsys)
        assert not out.exists(), name


def test_refusals_leave_an_earlier_output_untouched_even_with_overwrite(work, capsys):
    earlier = work / "earlier.ome.zarr"
    before = tree(earlier)
    assert any(name.startswith("0/") for name in before)  # a real output with its level 0
    nan = _genes_with(work, "nan_late.npz", lambda g: (g.__setitem__((5, 1, 15, 15), np.inf), g)[1])
    base = ["generate", "--out", str(earlier), "--quiet", "--overwrite"]
    refuse([*base, "--genes", str(nan)], r"nan_late\.npz: 1 NaN/inf value", capsys)
    refuse([*base, "--genes", str(work / "genes.npz"), "--steps", "5000"], r"exceeds the 1000 timesteps", capsys)
    refuse([*base, "--genes", str(work / "genes.npz"), "--report-json", "/sys/r.json"], r"not writable", capsys)
    refuse([*base, "--genes", str(work / "genes.npz"), "--region", "-256,0,256,256"], r"lies outside the gene data", capsys)
    assert tree(earlier) == before


def test_an_output_path_that_is_a_file_is_never_replaced(work, capsys):
    existing = work / "notes.txt"
    existing.write_text("keep me")
    for overwrite in ([], ["--overwrite"]):
        refuse(["generate", "--genes", str(work / "genes.npz"), "--out", str(existing), "--quiet", *overwrite],
               r"--out .*notes\.txt is an existing file, not an OME-Zarr folder", capsys)  # fmt: skip
        assert existing.read_text() == "keep me"
    refuse(["generate", "--genes", str(work / "genes.npz"), "--out", str(existing / "sub.ome.zarr"), "--quiet"],
           r"notes\.txt is a file, so no folder can be created below it", capsys)  # fmt: skip


def test_a_model_with_a_zero_tile_size_is_refused(work, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    config_path = model / "model_index.json"  # the pipeline config holds the tile geometry
    config = json.loads(config_path.read_text())
    for tile in (0, -256):
        config_path.write_text(json.dumps({**config, "tile_size": tile}))
        refuse(["generate", "--genes", str(work / "genes.npz"), "--out", str(tmp_path / "o"), "--model", str(model), "--quiet"],
               r"tile_size must be a positive number of px|tile_size .* must be multiples", capsys)  # fmt: skip
        assert not (tmp_path / "o").exists()


class RecordingArray:
    """An array-like that records the shape of every block read from it."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.ndim, self.dtype, self.reads = array, array.shape, array.ndim, array.dtype, []

    def __getitem__(self, key):
        block = self.array[key]
        self.reads.append(block.nbytes)
        return block


def test_gene_scan_streams_in_bounded_blocks_and_finds_the_last_bad_bin():
    genes = np.ones((7, 3, 64, 40), np.float32)
    genes[6, 2, 63, 39] = np.nan  # the very last value read
    recording = RecordingArray(genes)
    source = open_gene_source(recording)
    with pytest.raises(ValueError, match=r"<array>: 1 NaN/inf value\(s\) in section 2, first at gene index 6, bin y=63, x=39"):
        check_gene_values(source, block_bytes=7 * 40 * 8 * 5)  # five bin rows of one section per block
    assert len(recording.reads) == 3 * 13 and max(recording.reads) <= 7 * 40 * 4 * 5
    genes[6, 2, 63, 39] = 0
    check_gene_values(open_gene_source(genes))  # clean counts pass
    ints = open_gene_source(np.full((2, 1, 4, 4), -3, np.int16))
    with pytest.raises(ValueError, match=r"32 negative value\(s\) in section 0, first at gene index 0, bin y=0, x=0 \(-3\)"):
        check_gene_values(ints)


# ------------------------------------------------------------------------------------------ data readers
def test_corrupt_image_files_are_named(tmp_path):
    from teramind_hf.data.readers.table import read_transcript_table

    table = tmp_path / "t.csv"
    table.write_text("x,y,z,gene\n1,1,0,Gad2\n")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"broken\.tif: not a readable TIFF image"):
        read_transcript_table(table, images=tmp_path / "broken.tif")
    np.save(tmp_path / "objects.npy", np.array([None, {}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy: not a readable \.npy image .*allow_pickle"):
        read_transcript_table(table, images=tmp_path / "objects.npy")


def test_corrupt_merscope_mosaic_is_named(tmp_path):
    from teramind_hf.data.readers.merscope import read_section_image

    images = tmp_path / "run" / "images"
    images.mkdir(parents=True)
    (images / "mosaic_DAPI_z0.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match=r"mosaic_DAPI_z0\.tif: not a readable TIFF image"):
        read_section_image(tmp_path / "run", "DAPI")


def test_far_away_coordinates_are_refused_before_binning_allocates(tmp_path):
    import tracemalloc

    from teramind_hf.data.readers.table import read_transcript_table

    table = tmp_path / "far.csv"
    table.write_text("x,y,z,gene\n0,0,0,Gad2\n3e9,2e9,0,Gad2\n")  # one stray point: a grid of ~300 TB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"far\.csv: binning on 16-px bins .* array of [0-9.]+ (TB|PB), more than this machine's memory"):
            read_transcript_table(table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak
    with pytest.raises(ValueError, match=r"more than the limit"):
        read_transcript_table(table, shape=(4096, 4096), max_bytes=2**16)


@pytest.mark.parametrize("gene_bin", [0, -16, 2.5])
def test_gene_bin_must_be_a_positive_whole_number(tmp_path, gene_bin, capsys):
    from teramind_hf.data.readers.table import read_transcript_table

    table = tmp_path / "t.csv"
    table.write_text("x,y,z,gene\n1,1,0,Gad2\n")
    with pytest.raises(ValueError, match=rf"gene_bin must be a positive whole number of pixels, got {gene_bin}"):
        read_transcript_table(table, gene_bin=gene_bin)
    if isinstance(gene_bin, int):
        refuse(["phantom", str(tmp_path / "ph"), "--gene-bin", str(gene_bin)], r"gene_bin must be a positive whole number", capsys)
        assert not (tmp_path / "ph").exists()


# ------------------------------------------------------------------------------------------ every sub-command
def test_sweep_of_bad_arguments_over_every_sub_command(work, tmp_path, capsys):
    """Bad values for each sub-command: one line, status 2 (argparse usage errors also 2), nothing created."""
    out = tmp_path / "out"
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    table, bad_csv, bad_tif = tmp_path / "t.csv", tmp_path / "bad.csv", tmp_path / "bad.tif"
    table.write_text("x,y,z,gene\n1,1,0,Gad2\n20,30,0,Th\n")
    bad_csv.write_text('x,y,z,gene\n"unterminated\n')
    bad_tif.write_bytes(b"II*\x00garbage")
    cases = [
        ["phantom", str(a_file), "--size", "256", "--slices", "1"], ["phantom", str(a_file / "sub"), "--slices", "1"],
        ["convert-official", str(tmp_path / "junk.ckpt"), str(a_file)],
        ["convert-official", str(OFFICIAL_SMALL / "model.safetensors"), str(a_file), "--overwrite"],
        ["phantom", str(out), "--size", "abc"], ["phantom", str(out), "--size", "0"], ["phantom", str(out), "--slices", "0"],
        ["phantom", str(out), "--size", "99999999"], ["phantom", str(out), "--um-per-px", "nan"],
        ["phantom", str(out), "--formats", "nope"],
        ["eval", "seams", str(work / "earlier.ome.zarr"), "--tile-size", "0"],
        ["eval", "seams", str(work / "earlier.ome.zarr"), "--tile-size", "-5"],
        ["eval", "seams", str(tmp_path / "missing.ome.zarr")], ["eval", "seams", str(work / "genes.npz")],
        ["convert-official", str(tmp_path / "junk.ckpt"), str(out)],
        ["convert-official", str(tmp_path / "absent.ckpt"), str(out)],
        ["convert-official", str(tmp_path / "junk.ckpt"), str(out), "--gene-names", str(tmp_path / "absent.txt")],
        ["train", "--data", str(tmp_path / "missing.zarr"), "--output_dir", str(out)],
        ["train", "--data", str(work / "genes.npz"), "--output_dir", str(out), "--crop_size", "100"],
        ["train", "--data", str(work / "genes.npz"), "--output_dir", str(out), "--train_batch_size", "0"],
        ["ingest", "table", str(table), "--out", str(out), "--um-per-px", "0.5", "--gene-bin", "0"],
        ["ingest", "table", str(table), "--out", str(out), "--um-per-px", "nan"],
        ["ingest", "table", str(table), "--out", str(out), "--um-per-px", "0.5", "--section-spacing-um", "0"],
        ["ingest", "table", str(bad_csv), "--out", str(out), "--um-per-px", "0.5"],
        ["ingest", "table", str(table), "--out", str(out), "--um-per-px", "0.5", "--images", str(bad_tif)],
        ["ingest", "table", str(table), "--out", str(a_file), "--um-per-px", "0.5"],
        ["knockout", "--genes", str(work / "genes.npz"), "--out", str(out), "--set", "Gad2=0", "--region", "-256,0,256,256"],
        ["knockout", "--genes", str(work / "genes.npz"), "--out", str(out), "--set", "Gad2=0", "--steps", "0"],
        ["attention", "--genes", str(work / "genes.npz"), "--out", str(out), "--pair", "Gad2"],
        ["eval", "report", str(work / "earlier.ome.zarr")],
        ["generate", "--genes", str(work / "genes.npz"), "--out", str(out), "--region", "-1,-2,-3,-4"],
        ["generate", "--genes", str(work / "genes.npz"), "--out", str(out), "--steps", "-3"],
        ["generate", "--genes", str(work / "genes.npz"), "--out", str(out), "--steps", "abc"],
    ]  # fmt: skip
    for argv in cases:
        try:
            code = cli_main(argv)
        except SystemExit as exit_:  # argparse's own usage error: a message, no traceback
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2, (argv, code, err)
        assert "Traceback" not in err and err.strip(), (argv, err)
        assert not out.exists(), argv
    assert a_file.read_text() == "keep"


def test_console_script_prints_no_traceback(work, tmp_path):
    """The real `teramind` process: bad input gives one error line and exit status 2."""
    script = Path(sys.executable).with_name("teramind")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "teramind_hf.cli"]
    for argv in (
        ["generate", "--genes", str(work / "genes.npz"), "--out", str(tmp_path / "o"), "--region", "-256,0,256,256"],
        ["generate", "--genes", str(work / "genes.npz"), "--out", str(tmp_path / "o"), "--steps", "5000", "--quiet"],
    ):
        done = subprocess.run([*command, *argv], capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (argv, done.stderr)
        assert done.stderr.count("error:") == 1 and not done.stdout, (argv, done.stderr, done.stdout)
        assert "Loading pipeline components" not in done.stderr  # --quiet / refused before loading
        assert not (tmp_path / "o").exists()


def test_negative_values_parse_as_option_values():
    from teramind_hf.cli import join_negative_values

    options = {"--region", "--seed"}
    assert join_negative_values(["generate", "--region", "-256,0,512,512", "--seed", "-1"], options) == [
        "generate", "--region=-256,0,512,512", "--seed=-1",
    ]  # fmt: skip
    assert join_negative_values(["--region", "--quiet"], options) == ["--region", "--quiet"]  # not a value
    assert join_negative_values(["--quiet", "-5"], options) == ["--quiet", "-5"]  # a flag takes no value
