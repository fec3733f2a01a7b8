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
import torch

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
    assert cli_main(["generate", "--genes", str(root / "genes.npz"), "--origin-unknown", "--out", str(root / "earlier.ome.zarr"),
                     "--steps", "1", "--threads", "1", "--quiet"]) == 0
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
    refuse(["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--quiet", *extra], message, capsys)
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
    refuse([*base, "--genes", str(work / "genes.npz"), "--origin-unknown", "--steps", "5000"], r"exceeds the 1000 timesteps", capsys)
    refuse([*base, "--genes", str(work / "genes.npz"), "--origin-unknown", "--report-json", "/sys/r.json"], r"not writable", capsys)
    refuse([*base, "--genes", str(work / "genes.npz"), "--origin-unknown", "--region", "-256,0,256,256"], r"lies outside the gene data", capsys)
    assert tree(earlier) == before


def test_an_output_path_that_is_a_file_is_never_replaced(work, capsys):
    existing = work / "notes.txt"
    existing.write_text("keep me")
    for overwrite in ([], ["--overwrite"]):
        refuse(["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(existing), "--quiet", *overwrite],
               r"--out .*notes\.txt is an existing file, not an OME-Zarr folder", capsys)
        assert existing.read_text() == "keep me"
    refuse(["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(existing / "sub.ome.zarr"), "--quiet"],
           r"notes\.txt is a file, so no folder can be created below it", capsys)


def test_a_model_with_a_zero_tile_size_is_refused(work, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    config_path = model / "model_index.json"  # the pipeline config holds the tile geometry
    config = json.loads(config_path.read_text())
    for tile in (0, -256):
        config_path.write_text(json.dumps({**config, "tile_size": tile}))
        refuse(["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(tmp_path / "o"), "--model", str(model), "--quiet"],
               rf"tile geometry does not fit \(tile_size={tile}, .*must be a positive multiple of the patch", capsys)
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
        ["knockout", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--set", "Gad2=0", "--region", "-256,0,256,256"],
        ["knockout", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--set", "Gad2=0", "--steps", "0"],
        ["attention", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--pair", "Gad2"],
        ["eval", "report", str(work / "earlier.ome.zarr")],
        ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--region", "-1,-2,-3,-4"],
        ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--steps", "-3"],
        ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--steps", "abc"],
    ]
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
        ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(tmp_path / "o"), "--region", "-256,0,256,256"],
        ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(tmp_path / "o"), "--steps", "5000", "--quiet"],
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
    ]
    assert join_negative_values(["--region", "--quiet"], options) == ["--region", "--quiet"]  # not a value
    assert join_negative_values(["--quiet", "-5"], options) == ["--quiet", "-5"]  # a flag takes no value


# ================================================================================== inputs are sacred
# No command writes on, over or inside one of its inputs (after resolving symlinks), --overwrite deletes only what
# teramind wrote (recognised by its marker), and OS errors on the target (read-only, full disk) are named, exit 2.
# Every data-loss case runs WITH --overwrite; inputs and earlier outputs are compared byte for byte afterwards.
@pytest.fixture(scope="module")
def sacred(work, tmp_path_factory) -> Path:
    """MERSCOPE runs (2 sections of 256 px), the gene store ingested from them (S.zarr, ours), a tiny table, a
    foreign folder, and a copy of the module's earlier generate output."""
    import shutil

    from teramind_hf.data.readers.merscope import write_merscope_runs

    root = tmp_path_factory.mktemp("sacred")
    phantom = make_phantom(256, 256, num_slices=2, seed=2, um_per_px=0.5)
    write_merscope_runs(root / "runs", phantom.images, phantom.transcripts, 0.5)
    assert cli_main(["ingest", "merscope", str(root / "runs"), "--out", str(root / "S.zarr"), "--quiet"]) == 0
    (root / "t.csv").write_text("x,y,z,gene\n1,1,0,Gad2\n20,30,0,Th\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "thesis.txt").write_text("years of work")
    shutil.copytree(work / "earlier.ome.zarr", root / "G.ome.zarr")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return tree(root)


def _refused_and_untouched(argv: list[str], message: str, root: Path, capsys) -> None:
    before = _snapshot(root)
    refuse(argv, message, capsys)
    assert _snapshot(root) == before, argv


def test_generate_never_writes_on_over_or_inside_its_gene_store(sacred, capsys):
    store = sacred / "S.zarr"
    (sacred / "link.zarr").symlink_to(store, target_is_directory=True)
    base = ["generate", "--genes", str(store), "--quiet", "--steps", "1"]
    cases = [
        ([*base, "--out", str(store), "--overwrite"], r"--out .*S\.zarr is the input --genes .*S\.zarr"),
        ([*base, "--out", str(store / "out.ome.zarr"), "--overwrite"], r"out\.ome\.zarr lies inside the input --genes"),
        ([*base, "--out", str(sacred / "link.zarr"), "--overwrite"], r"link\.zarr is the input --genes"),
        ([*base, "--out", str(sacred), "--overwrite"], r"--out .* contains the input --genes .*S\.zarr"),
        ([*base, "--out", str(sacred / "foreign"), "--overwrite"], r"foreign exists and is not an output of teramind.*not deleting it"),
        ([*base, "--out", str(sacred / "new.ome.zarr"), "--report-json", str(store / "r.json")], r"--report-json .*r\.json lies inside the input --genes"),
        ([*base, "--out", str(sacred / "new.ome.zarr"), "--spatialdata", str(store), "--overwrite"], r"--spatialdata .*S\.zarr is the input --genes"),
        ([*base, "--out", str(sacred / "new.ome.zarr"), "--spatialdata", str(sacred / "new.ome.zarr" / "sd.zarr")], r"--spatialdata .*sd\.zarr lies inside the input --out"),
        (["generate", "--genes", str(sacred / "runs"), "--out", str(sacred / "runs" / "section_00" / "o.ome.zarr"), "--quiet", "--overwrite"],
         r"lies inside the input --genes .*runs"),
    ]
    for argv, message in cases:
        _refused_and_untouched(argv, message, sacred, capsys)
    assert not (sacred / "new.ome.zarr").exists()
    (sacred / "link.zarr").unlink()


def test_the_gene_store_ingested_beside_the_output_stays_out_of_the_raw_input(sacred):
    from teramind_hf.data.ingest.auto import gene_store_for
    from teramind_hf.output_guard import OutputOverlapsInputError

    with pytest.raises(OutputOverlapsInputError, match=r"gene store .*section_00/x\.genes\.zarr beside --out .*lies inside the input --genes"):
        gene_store_for(sacred / "runs", sacred / "runs" / "section_00" / "x.ome.zarr", progress_bar=False)
    assert not (sacred / "runs" / "section_00" / "x.genes.zarr").exists()


def test_ingest_never_replaces_its_input_or_a_foreign_folder(sacred, capsys):
    runs = sacred / "runs"
    table = ["--um-per-px", "0.5", "--quiet", "--overwrite"]
    cases = [
        (["ingest", "merscope", str(runs), "--out", str(runs), "--overwrite", "--quiet"], r"--out .*runs is the input INPUT"),
        (["ingest", "merscope", str(runs), "--out", str(runs / "section_00" / "genes.zarr"), "--quiet"], r"genes\.zarr lies inside the input INPUT"),
        (["ingest", "merscope", str(runs / "section_00"), str(runs / "section_01"), "--out", str(runs), "--overwrite", "--quiet"],
         r"--out .*runs contains the input INPUT .*section_00"),
        (["ingest", "merscope", str(runs), "--out", str(sacred / "foreign"), "--overwrite", "--quiet"],
         r"foreign exists and is not an output of teramind \(expected a gene store written by `teramind ingest`.*not deleting it"),
        (["ingest", "table", str(sacred / "t.csv"), "--out", str(sacred / "t.csv"), *table], r"t\.csv is the input INPUT"),
        (["ingest", "table", str(sacred / "t.csv"), "--out", str(sacred / "G.ome.zarr"), *table], r"G\.ome\.zarr exists and is not an output of teramind"),
        (["ingest", "table", str(sacred / "t.csv"), "--out", str(sacred / "t.zarr"), "--panel", str(sacred / "t.zarr"), *table],
         r"t\.zarr is the input --panel"),
    ]
    for argv, message in cases:
        _refused_and_untouched(argv, message, sacred, capsys)


def test_the_ingest_library_checks_its_own_inputs(sacred):
    from teramind_hf.data.ingest import ingest_merscope, ingest_table, merscope_runs
    from teramind_hf.output_guard import NotOurOutputError, OutputOverlapsInputError

    before = _snapshot(sacred)
    runs = merscope_runs(sacred / "runs")
    with pytest.raises(OutputOverlapsInputError, match=r"contains the input input .*section_00"):
        ingest_merscope(runs, sacred / "runs", overwrite=True, progress_bar=False)
    with pytest.raises(NotOurOutputError, match=r"foreign exists and is not an output of teramind"):
        ingest_merscope(runs, sacred / "foreign", overwrite=True, progress_bar=False)
    with pytest.raises(OutputOverlapsInputError, match=r"t\.csv is the input table"):
        ingest_table(sacred / "t.csv", sacred / "t.csv", um_per_px=0.5, overwrite=True, progress_bar=False)
    assert _snapshot(sacred) == before


def test_overwrite_still_replaces_our_own_earlier_outputs(sacred, work, tmp_path, capsys):
    import shutil

    import zarr

    # a gene store written by `teramind ingest`
    store = tmp_path / "again.zarr"
    args = ["ingest", "table", str(sacred / "t.csv"), "--um-per-px", "0.5", "--quiet", "--out", str(store)]
    assert cli_main(args) == 0
    assert cli_main([*args, "--gene-bin", "32", "--pad-to", "256", "--overwrite"]) == 0
    assert zarr.open_group(str(store), mode="r").attrs["gene_bin"] == 32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial or old copy left behind
    # a `teramind generate` output (its run record), with another seed
    out = tmp_path / "G.ome.zarr"
    shutil.copytree(sacred / "G.ome.zarr", out)
    before = tree(out)
    argv = ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--steps", "1", "--threads", "1", "--quiet", "--seed", "5"]
    refuse(argv, r"differs in .*pass --overwrite", capsys)
    assert cli_main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert tree(out) != before and zarr.open_group(str(out), mode="r").attrs["teramind"]["complete"]


def test_train_export_attention_knockout_eval_and_convert_stay_off_their_inputs(sacred, work, capsys):
    store, generated = sacred / "S.zarr", sacred / "G.ome.zarr"
    cases = [
        (["train", "--data", str(store), "--output_dir", str(store / "run")], r"--output_dir .*run lies inside the input --data"),
        (["train", "--data", str(store), "--output_dir", str(sacred), "--max_train_steps", "1", "--no_validation"],
         r"--output_dir .* contains the input --data"),
        (["export", "spatialdata", str(generated), "--to", str(generated), "--overwrite"], r"--to .*G\.ome\.zarr is the input OUT \(the generated output\)"),
        (["export", "spatialdata", str(generated), "--to", str(generated / "sd.zarr")], r"sd\.zarr lies inside the input OUT"),
        (["export", "spatialdata", str(generated), "--to", str(store), "--like", str(store)], r"--to .*S\.zarr is the input --like"),
        (["attention", "--genes", str(store), "--pair", "Gad2,Th", "--out", str(store / "att")], r"att lies inside the input --genes"),
        (["knockout", "--genes", str(store), "--set", "Gad2=0", "--out", str(store / "ko")], r"ko lies inside the input --genes"),
        (["eval", "report", str(generated), "--truth", str(store), "--out", str(generated), "--no-controls"], r"--out .*G\.ome\.zarr is the input GENERATED"),
        (["eval", "report", str(generated), "--truth", str(store), "--out", str(store / "rep"), "--no-controls"], r"rep lies inside the input --truth"),
        (["convert-official", str(OFFICIAL_SMALL / "model.safetensors"), str(OFFICIAL_SMALL), "--overwrite"], r"OUT_DIR .* contains the input CHECKPOINT"),
        (["convert-official", str(OFFICIAL_SMALL / "model.safetensors"), str(sacred / "foreign"), "--overwrite"],
         r"foreign exists and is not an output of teramind \(expected a TeraMindPipeline folder"),
    ]
    official_before = tree(OFFICIAL_SMALL)
    for argv, message in cases:
        _refused_and_untouched(argv, message, sacred, capsys)
    assert tree(OFFICIAL_SMALL) == official_before


def test_read_only_targets_are_named_before_the_work(sacred, capsys):
    """`/sys` refuses writes even for root: each command names it with exit 2, before computing anything."""
    store, generated = sacred / "S.zarr", sacred / "G.ome.zarr"
    ro = READ_ONLY_DIR
    cases = [
        (["attention", "--genes", str(store), "--pair", "Gad2,Th", "--out", str(ro / "att")], r"--out /sys/att: /sys is not writable"),
        (["knockout", "--genes", str(store), "--set", "Gad2=0", "--out", str(ro / "ko")], r"--out /sys/ko: /sys is not writable"),
        (["eval", "report", str(generated), "--truth", str(store), "--out", str(ro / "rep"), "--no-controls"], r"--out /sys/rep: /sys is not writable"),
        (["train", "--data", str(store), "--output_dir", str(ro / "run")], r"--output_dir /sys/run: /sys is not writable"),
        (["export", "spatialdata", str(generated), "--to", str(ro / "sd.zarr")], r"--to /sys/sd\.zarr: /sys is not writable"),
        (["generate", "--genes", str(store), "--out", str(ro / "o.ome.zarr"), "--quiet", "--min-gene-overlap", "0"],
         r"/sys/o\.ome\.zarr: output location: /sys is not writable"),
    ]
    for argv, message in cases:
        _refused_and_untouched(argv, message, sacred, capsys)


def test_a_full_disk_is_a_named_error(work, tmp_path, capsys):
    """ENOSPC for real: /dev/full accepts the open and fails the write. The run summary goes there after the run."""
    if not os.access("/dev/full", os.W_OK):
        pytest.skip("/dev/full is not writable here")
    out = tmp_path / "o.ome.zarr"
    argv = ["generate", "--genes", str(work / "genes.npz"), "--origin-unknown", "--out", str(out), "--steps", "1", "--threads", "1", "--quiet",
            "--report-json", "/dev/full"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _search(r"error: /dev/full: No space left on device \(errno ENOSPC\)", err), err


def test_os_errors_are_described_with_their_path():
    """The errnos of the user's files and disks are named (any other OSError, a bug, keeps its traceback)."""
    import argparse
    import errno

    from teramind_hf.cli import IO_ERRNOS, describe_os_error

    assert errno.ENOSPC in IO_ERRNOS and errno.EROFS in IO_ERRNOS and errno.EBADF not in IO_ERRNOS
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x/y")) == "/x/y: No space left on device (errno ENOSPC)"
    unnamed = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), argparse.Namespace(output_dir="runs/a"))
    assert unnamed == "No space left on device (errno ENOSPC), the system did not say for which file; this command was writing --output_dir runs/a"


# ---------------------------------------------------------------------------------- the helper itself
def test_output_guard_relations(tmp_path):
    import re

    from teramind_hf.output_guard import OutputOverlapsInputError, check_output_location

    data = tmp_path / "data.zarr"
    (data / "genes").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(data, target_is_directory=True)
    for output, relation in [
        (data, "is"), (tmp_path / "alias", "is"), (tmp_path, "contains"), (data / "genes" / "o.zarr", "lies inside"),
        (tmp_path / "alias" / "o.zarr", "lies inside"), (f"file://{data}", "is"),
    ]:
        with pytest.raises(OutputOverlapsInputError, match=rf" {relation} the input --genes {re.escape(str(data))}:"):
            check_output_location(output, {"--genes": data, "--model": None})
    for output in (tmp_path / "data.zarr2", tmp_path / "other" / "data.zarr", "s3://bucket/data.zarr"):
        check_output_location(output, {"--genes": data})  # siblings with a shared prefix, URLs vs paths: disjoint
    check_output_location(None, {"--genes": data})
    with pytest.raises(OutputOverlapsInputError, match=r"s3://b/x/y lies inside the input --genes s3://b/x"):
        check_output_location("s3://b/x/y", {"--genes": "s3://b/x/"})
    with pytest.raises(OutputOverlapsInputError, match=r"contains the input runs .*r2"):
        check_output_location(tmp_path, {"runs": [tmp_path.parent / "elsewhere", tmp_path / "r2"]})
    check_output_location("s3://b/xy", {"--genes": "s3://b/x"})


def test_output_guard_markers(tmp_path):
    import zarr

    from teramind_hf.output_guard import NotOurOutputError, check_replaceable, output_kind, remove_output

    ours = zarr.open_group(str(tmp_path / "ours.ome.zarr"), mode="w")
    ours.attrs["teramind"] = {"run": {}, "complete": True}
    theirs = zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w")
    theirs.attrs["teramind"] = "something else"
    store = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")
    store.attrs.update({"origin_um": [0.0, 0.0], "gene_names": ["Gad2"], "ingest": {"source": "t.csv"}})
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "ours.ome.zarr", target_is_directory=True)
    assert output_kind(tmp_path / "ours.ome.zarr", ["gene_store", "generate"]) == "generate"
    assert output_kind(tmp_path / "store.zarr", ["generate", "gene_store"]) == "gene_store"
    assert output_kind(tmp_path / "store.zarr", ["generate"]) is None
    assert check_replaceable(tmp_path / "absent", ["generate"]) is False
    assert check_replaceable(tmp_path / "empty", ["generate"]) is True
    for foreign in ("theirs.zarr", "notes.txt", "store.zarr"):
        with pytest.raises(NotOurOutputError, match=rf"{foreign} exists and is not an output of teramind"):
            remove_output(tmp_path / foreign, ["generate"])
    with pytest.raises(NotOurOutputError, match=r"link is a symbolic link"):
        remove_output(tmp_path / "link", ["generate"])  # a link to our own output: the link is not ours
    assert (tmp_path / "theirs.zarr").is_dir() and (tmp_path / "notes.txt").read_text() == "keep"
    remove_output(tmp_path / "ours.ome.zarr", ["generate"])
    remove_output(tmp_path / "store.zarr", ["gene_store"])
    assert not (tmp_path / "ours.ome.zarr").exists() and not (tmp_path / "store.zarr").exists()


def test_export_overwrite_replaces_only_its_own_image_elements(sacred, tmp_path, capsys):
    spatialdata = pytest.importorskip("spatialdata")
    from spatialdata.models import Image2DModel

    generated = sacred / "G.ome.zarr"
    theirs = tmp_path / "theirs.zarr"  # a user's store with an element that happens to have our name
    image = Image2DModel.parse(np.zeros((2, 8, 8), np.uint8), dims=("c", "y", "x"))
    spatialdata.SpatialData(images={"teramind_z0": image}).write(theirs)
    argv = ["export", "spatialdata", str(generated), "--to", str(theirs), "--overwrite"]
    message = r"--to .*theirs\.zarr/images/teramind_z0 exists and is not an output of teramind"
    _refused_and_untouched(argv, message, theirs, capsys)
    ours = tmp_path / "ours.zarr"
    # (the module's output came from an .npz, which carries no micron origin)
    assert cli_main(["export", "spatialdata", str(generated), "--to", str(ours), "--origin-unknown"]) == 0
    assert cli_main(["export", "spatialdata", str(generated), "--to", str(ours), "--overwrite", "--origin-unknown"]) == 0
    capsys.readouterr()
    assert {"teramind_z0", "teramind_z1"} <= set(spatialdata.read_zarr(ours).images)


# ==================================================================================================================
# damaged data and bad values: damaged or foreign files, attribute / argument values, memory, code execution
# ==================================================================================================================
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A tiny gene/training store (19 genes, 2 sections, 256 x 256 px) and MERSCOPE runs of the same phantom."""
    from teramind_hf.data.datasets import write_training_store
    from teramind_hf.data.readers.merscope import write_merscope_runs

    root = tmp_path_factory.mktemp("damaged")
    phantom = make_phantom(256, 256, num_slices=2, seed=2, um_per_px=0.5)
    write_training_store(phantom.to_volume(), root / "store.zarr")
    write_merscope_runs(root / "merscope", phantom.images, phantom.transcripts, 0.5)
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _refuse_untouched(argv: list[str], message: str, capsys, inputs: list[Path], absent: list[Path]) -> str:
    """``refuse`` plus: every input byte-identical afterwards and no output created."""
    before = {p: tree(p) if p.is_dir() else p.read_bytes() for p in inputs}
    err = refuse([str(a) for a in argv], message, capsys)
    for p, content in before.items():
        assert (tree(p) if p.is_dir() else p.read_bytes()) == content, p
    for p in absent:
        assert not p.exists(), p
    return err


def test_damaged_chunks_and_metadata_of_a_gene_store_are_named(store, tmp_path, capsys):
    from teramind_hf.data.store import DamagedDataError

    damaged = _copy(store / "store.zarr", tmp_path / "damaged.zarr")
    (damaged / "genes" / "c" / "0" / "0" / "0" / "0").write_bytes(b"\x00not zstd" * 8)
    out = tmp_path / "out"
    chunk = r"damaged\.zarr/genes: a chunk cannot be read \(RuntimeError: Zstd"
    _refuse_untouched(["generate", "--genes", damaged, "--out", out, "--steps", "1", "--quiet"], chunk, capsys, [damaged], [out])
    _refuse_untouched(["attention", "--genes", damaged, "--out", out, "--pair", "Gad2,Th", "--random-models", "1",
                       "--permutations", "0"], chunk, capsys, [damaged], [out])
    # (train reads the validation region before it creates --output_dir; a chunk first read mid-training is named too)
    _refuse_untouched(["train", "--data", damaged, "--output_dir", out, "--max_train_steps", "1"], chunk, capsys, [damaged], [out])
    with pytest.raises(DamagedDataError, match=chunk):
        open_gene_source(str(damaged)).read((0, 1), (0, 16), (0, 16))

    wrong_dtype = _copy(store / "store.zarr", tmp_path / "dtype.zarr")
    _edit_json(wrong_dtype / "genes" / "zarr.json", lambda m: m.__setitem__("data_type", "float33"))
    _refuse_untouched(["generate", "--genes", wrong_dtype, "--out", out, "--quiet"],
                      r"dtype\.zarr/genes/zarr\.json: not a readable zarr array .*float33", capsys, [wrong_dtype], [out])
    not_json = _copy(store / "store.zarr", tmp_path / "notjson.zarr")
    (not_json / "genes" / "zarr.json").write_text("{not json")
    _refuse_untouched(["generate", "--genes", not_json, "--out", out, "--quiet"],
                      r"notjson\.zarr/genes/zarr\.json: not valid JSON", capsys, [not_json], [out])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("um_per_px", -1.0, r"attribute 'um_per_px' must be a finite number > 0, got -1\.0"),
        ("um_per_px", float("nan"), r"attribute 'um_per_px' must be a finite number > 0, got nan"),
        ("um_per_px", "abc", r"attribute 'um_per_px' must be a finite number > 0, got 'abc'"),
        ("gene_bin", 0, r"attribute 'gene_bin' must be a whole number of px >= 1, got 0"),
        ("gene_bin", "16", r"attribute 'gene_bin' must be a whole number of px >= 1, got '16'"),
        ("gene_names", [None] * 19, r"attribute 'gene_names' must be a list of non-empty gene symbols"),
    ],
)
def test_bad_store_attributes_are_refused_naming_store_and_attribute(store, tmp_path, key, value, message, capsys):
    bad = _copy(store / "store.zarr", tmp_path / "attrs.zarr")
    _edit_json(bad / "zarr.json", lambda m: m["attributes"].__setitem__(key, value))
    out = tmp_path / "out.ome.zarr"
    _refuse_untouched(["generate", "--genes", bad, "--out", out, "--quiet"], rf"attrs\.zarr: {message}", capsys, [bad], [out])
    with pytest.raises(ValueError, match=message):
        open_gene_source(str(bad))


class ClaimedArray:
    """An array-like claiming any shape and chunk shape; each read returns zeros without allocating (a broadcast
    view) and records how many values it was asked for."""

    def __init__(self, shape, chunks):
        self.shape, self.chunks, self.ndim, self.dtype, self.values = shape, chunks, len(shape), np.dtype("float32"), []

    def __getitem__(self, key):
        block_shape = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape))
        self.values.append(int(np.prod(block_shape)))
        return np.broadcast_to(np.float32(0), block_shape)


@pytest.mark.parametrize("chunks", [(3, 1, 64, 10**6), (3, 1, 64, 64), (3, 1, 1, 1)])
def test_gene_scan_memory_is_bounded_for_any_chunk_shape(chunks):
    """A chunk row wider than the scan block (huge claimed dimensions) is read in parts, in y and in x."""
    block_bytes = 8 * 2**20
    array = ClaimedArray((3, 1, 64, 10**6), chunks)
    check_gene_values(open_gene_source(array), block_bytes=block_bytes)
    assert max(array.values) * 8 <= block_bytes  # float64 copy of every block within the bound
    assert sum(array.values) == 3 * 64 * 10**6  # and every value was scanned once


def _merscope_with_transform(store: Path, tmp_path: Path, text: str) -> Path:
    runs = _copy(store / "merscope", tmp_path / "runs")
    for run in sorted(runs.iterdir()):
        (run / "images" / "micron_to_mosaic_pixel_transform.csv").write_text(text)
    return runs


@pytest.mark.parametrize(
    "transform, message",
    [
        ("0 0 0\n0 0 0\n0 0 1\n", r"section_00/images/micron_to_mosaic_pixel_transform\.csv: transform is singular"),
        ("nan 0 0\n0 nan 0\n0 0 1\n", r"section_00/images/micron_to_mosaic_pixel_transform\.csv: transform has NaN/inf"),
        ("-2 0 0\n0 -2 0\n0 0 1\n", r"runs: no transcript falls inside the 256 x 256 px image canvas"),
    ],
    ids=["singular", "nan", "negative"],
)
def test_bad_merscope_transforms_are_refused_naming_the_file(store, tmp_path, transform, message, capsys):
    runs = _merscope_with_transform(store, tmp_path, transform)
    out = tmp_path / "genes.zarr"
    _refuse_untouched(["ingest", "merscope", runs, "--out", out, "--quiet"], message, capsys, [runs], [out])


def test_bad_merscope_runs_and_gene_bin_are_refused(store, tmp_path, capsys):
    runs = _copy(store / "merscope", tmp_path / "runs")
    out = tmp_path / "genes.zarr"
    _refuse_untouched(["ingest", "merscope", runs, "--out", out, "--gene-bin", "0", "--quiet"],
                      r"gene_bin must be a positive whole number of pixels, got 0", capsys, [runs], [out])
    (runs / "section_01" / "detected_transcripts.csv").unlink()
    _refuse_untouched(["ingest", "merscope", runs, "--out", out, "--quiet"],
                      r"section_01/detected_transcripts\.csv: MERSCOPE transcripts file not found", capsys, [runs], [out])


def test_generate_checks_the_region_against_merscope_runs_before_ingesting(store, tmp_path, capsys):
    runs = _copy(store / "merscope", tmp_path / "runs")
    out = tmp_path / "gen" / "region.ome.zarr"
    out.parent.mkdir()
    _refuse_untouched(["generate", "--genes", runs, "--out", out, "--region", "0,0,512,512", "--quiet"],
                      r"region y0,x0,h,w = 0,0,512,512 px lies outside .* MERSCOPE runs .*runs", capsys, [runs], [out])
    assert not any(out.parent.iterdir())  # no <out>.genes.zarr ingested before the refusal


def test_damaged_or_foreign_scverse_inputs_are_named(work, store, tmp_path, capsys):
    pytest.importorskip("spatialdata")
    not_hdf5, truncated = tmp_path / "text.h5ad", tmp_path / "cut.h5ad"
    not_hdf5.write_text("not an HDF5 file")
    truncated.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "genes.zarr"
    for path in (not_hdf5, truncated):
        _refuse_untouched(["ingest", "anndata", path, "--out", out, "--um-per-px", "0.5", "--quiet"],
                          rf"{path.name}: not a readable \.h5ad \(HDF5\) file", capsys, [path], [out])
    foreign = store / "store.zarr"  # a gene store, not SpatialData
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("keep")
    _refuse_untouched(["ingest", "spatialdata", foreign, "--out", out, "--um-per-px", "0.5", "--quiet"],
                      r"store\.zarr: not a SpatialData store", capsys, [foreign], [out])
    earlier = work / "earlier.ome.zarr"
    for target in (foreign, plain):
        _refuse_untouched(["export", "spatialdata", earlier, "--to", target],
                          rf"--to .*{target.name}: not a (SpatialData|zarr) store", capsys, [earlier, target], [])
    new = tmp_path / "new_sdata.zarr"
    _refuse_untouched(["export", "spatialdata", earlier, "--to", new, "--like", plain],
                      r"--like .*plain: not a zarr store", capsys, [earlier, plain], [new])
    _refuse_untouched(["export", "spatialdata", earlier, "--to", new, "--name", ""],
                      r"--name '': an element name prefix must be non-empty", capsys, [earlier], [new])


def test_model_folders_with_pickles_loops_or_code_are_refused(work, tmp_path, capsys):
    from teramind_hf.pipelines.model_folder import ModelFolderError, RemoteCodeError
    from teramind_hf.pipelines.pipeline_teramind import TeraMindPipeline

    genes, out = work / "genes.npz", tmp_path / "out.ome.zarr"
    pickled = _copy(default_model_path(), tmp_path / "pickled")
    for weights in (pickled / "unet").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    _refuse_untouched(["generate", "--genes", genes, "--out", out, "--model", pickled, "--quiet"],
                      r"pickled/unet: holds only pickled weights \['diffusion_pytorch_model\.bin'\], which are never unpickled",
                      capsys, [pickled], [out])
    loop = _copy(default_model_path(), tmp_path / "loop")
    for path in (loop / "unet").iterdir():
        path.unlink()
    (loop / "unet").rmdir()
    (loop / "unet").symlink_to(loop / "unet")
    _refuse_untouched(["generate", "--genes", genes, "--out", out, "--model", loop, "--quiet"],
                      r"loop/unet: component folder 'unet' cannot be resolved", capsys, [], [out])

    planted = _copy(default_model_path(), tmp_path / "planted")
    marker = tmp_path / "payload_ran"
    (planted / "pipeline.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (planted / "unet" / "modeling.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    # diffusers imports unet/modeling.py for this entry when trust_remote_code is set (checked: the payload runs)
    _edit_json(planted / "model_index.json", lambda m: m.__setitem__("unet", ["modeling", "Evil"]))
    with pytest.raises(RemoteCodeError, match=r"trust_remote_code=True: nothing in a model folder is imported or run"):
        TeraMindPipeline.from_pretrained(planted, trust_remote_code=True)
    with pytest.raises(ModelFolderError, match=r"component 'unet' names library 'modeling'"):
        TeraMindPipeline.from_pretrained(planted)
    assert not marker.exists()


def test_odd_or_deeply_nested_resume_records_are_named(work, store, tmp_path, capsys):
    from teramind_hf.training.checkpoint import CheckpointFileError, _join_state, read_checkpoint_config

    nested = {"$list": []}
    for _ in range(200):
        nested = {"$list": [nested]}
    with pytest.raises(CheckpointFileError, match=r"opt\.json: nested deeper than"):
        _join_state(nested, {}, Path("opt.json"))
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    for text, message in (("[1, 2]", r"expected a JSON dict, got list"), ("[" * 100000 + "]" * 100000, r"nested too deeply"),
                          ('{"unet": {}, "seconds": "abc"}', r"'seconds' must be a number >= 0")):
        (checkpoint / "training_config.json").write_text(text)
        with pytest.raises(CheckpointFileError, match=rf"checkpoint-1/training_config\.json: .*{message}"):
            read_checkpoint_config(checkpoint)

    # generate's run record in an earlier output, damaged: named, and the output left as it was
    earlier = _copy(work / "earlier.ome.zarr", tmp_path / "earlier.ome.zarr")
    _edit_json(earlier / "zarr.json", lambda m: m["attributes"]["teramind"].__setitem__("complete", "yes"))
    _refuse_untouched(["generate", "--genes", work / "genes.npz", "--origin-unknown", "--out", earlier, "--steps", "1", "--threads", "1", "--quiet"],
                      r"earlier\.ome\.zarr/zarr\.json: the 'teramind' run record is damaged", capsys, [earlier], [])


def test_bad_argument_values_are_refused_before_any_output(work, store, tmp_path, capsys):
    genes, data, out = work / "genes.npz", store / "store.zarr", tmp_path / "out"
    attention = ["attention", "--genes", genes, "--out", out, "--pair", "Gad2,Th"]
    cases = [
        ([*attention, "--alpha", "2"], r"alpha \(--alpha\) must be a false discovery rate in \(0, 1\), got 2\.0"),
        ([*attention, "--threshold", "nan"], r"threshold \(--threshold\) must be a finite number of transcripts >= 0, got nan"),
        ([*attention, "--threshold", "-1"], r"threshold \(--threshold\) must be a finite number .* got -1\.0"),
        ([*attention, "--threads", "-1"], r"--threads must be a whole number >= 0 .* got -1"),
        ([*attention, "--um-per-px", "-1"], r"um_per_px \(--um-per-px\) must be a finite number > 0, got -1\.0"),
        (["eval", "report", work / "earlier.ome.zarr", "--truth", data, "--out", out, "--match-distance-um", "-1"],
         r"match_distance_um \(--match-distance-um\) must be a finite number > 0, got -1\.0"),
        (["train", "--data", data, "--output_dir", out, "--ema_decay", "2", "--use_ema"], r"--ema_decay must be in \[0, 1\)"),
        (["train", "--data", data, "--output_dir", out, "--checkpoints_total_limit", "-1"], r"--checkpoints_total_limit must be >= 1"),
    ]
    for argv, message in cases:
        _refuse_untouched(argv, message, capsys, [genes, data], [out])


def test_bad_python_api_values_raise_named_errors(work):
    from teramind_hf.pipelines.pipeline_teramind import TeraMindPipeline

    pipe = TeraMindPipeline.from_pretrained()
    with np.load(work / "genes.npz") as archive:
        genes, names = archive["genes"], [str(n) for n in archive["gene_names"]]
    call = {"genes": genes, "gene_names": names, "num_inference_steps": 1, "output_type": "np"}
    cases = [
        ({"genes": genes.astype(np.complex64)}, r"genes: dtype complex64 is not real numbers"),
        ({"num_inference_steps": True}, r"num_inference_steps \(--steps\) must be a whole number >= 1, got True"),
        ({"gene_names": [None] * len(names)}, r"gene_names must be non-empty gene symbols \(strings\), got \['NoneType'\]"),
        ({"gene_names": list(range(len(names)))}, r"gene_names must be non-empty gene symbols \(strings\), got \['int'\]"),
        ({"genes": np.broadcast_to(np.float32(1), (19, 2, 10**6, 10**6))}, r"genes of shape \(19, 2, 1000000, 1000000\) would take"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(**{**call, **change})


def test_refusals_name_the_culprit(store, tmp_path, capsys):
    import shutil

    import tifffile

    from teramind_hf.models.unet_genemorph_3d import ConfigFieldError
    from teramind_hf.pipelines.pipeline_teramind import TeraMindPipeline

    header_only, images, out = tmp_path / "header_only.csv", tmp_path / "images.tif", tmp_path / "genes.zarr"
    header_only.write_text("x,y,z,gene\n")
    tifffile.imwrite(images, np.zeros((2, 1, 256, 256), np.uint8))
    _refuse_untouched(["ingest", "table", header_only, "--out", out, "--um-per-px", "0.5", "--images", images, "--quiet"],
                      r"header_only\.csv: no transcripts \(no rows after the header\)", capsys, [header_only, images], [out])
    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    _edit_json(model / "unet" / "config.json", lambda c: c.__setitem__("num_genes", str(c["num_genes"])))
    with pytest.raises(ConfigFieldError, match=r"model/unet/config\.json: model config field 'num_genes' must be a whole number >= 1, got '19' \(str\)"):
        TeraMindPipeline.from_pretrained(model)


def test_report_json_files_are_strict_json(tmp_path):
    """knockout.json, attention.json and report.json share one writer (`eval.report.write_json`): a non-finite
    float is null, never a bare NaN (a `teramind knockout` run is exercised in test_eval_knockout.py)."""
    from teramind_hf.eval.report import write_json

    def refuse_constant(name):
        raise AssertionError(f"non-JSON constant {name}")

    write_json(tmp_path / "k.json", {"ratio": float("nan"), "rows": [np.float32(np.inf), 1.5], "n": np.int64(3),
                                     "t": torch.tensor(float("nan"))})
    parsed = json.loads((tmp_path / "k.json").read_text(), parse_constant=refuse_constant)
    assert parsed == {"ratio": None, "rows": [None, 1.5], "n": 3, "t": None}


@pytest.mark.parametrize("script", ["train_student.py", "train_default_model.py"])
def test_training_scripts_refuse_to_replace_an_out_that_is_not_a_pipeline(script, tmp_path):
    """The staged training scripts copy their result over ``--out``: a folder that is not a pipeline is refused
    before any training (exit 2, one line), and kept."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "data.txt").write_text("keep")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "scripts" / script), "--work", str(tmp_path / "work"), "--out", str(out)],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"--out {out} exists and is not an output of teramind" in result.stderr and "Traceback" not in result.stderr
    assert (out / "data.txt").read_text() == "keep" and not (tmp_path / "work").exists()
