"""`teramind generate` / generate_to_zarr: same bytes as the in-memory pipeline, resume, scale-out, OME-Zarr."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline
from teramind_hf.cli import main as cli_main
from teramind_hf.pipelines.ome_zarr import downsample_2x
from teramind_hf.pipelines.streaming import generate_to_zarr
from teramind_hf.eval.seams import seam_score, seam_score_array

from .conftest import FAST_CONFIG, TINY_GENES, kill_when, make_tiny_unet

STEPS = 2
REGION = (0, 0, 512, 512)  # 2 x 2 tiles
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("generate")


@pytest.fixture(scope="module")
def pipe() -> TeraMindPipeline:
    pipeline = TeraMindPipeline(unet=make_tiny_unet(**FAST_CONFIG), scheduler=BoundaryAwareScheduler())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def model_dir(pipe, workdir) -> Path:
    path = workdir / "tiny_model"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def genes() -> np.ndarray:
    # 3 sections (chunks starting at 0 and 2, the second overhanging), 512 x 768 px of genes
    return np.random.default_rng(0).poisson(1.0, (len(TINY_GENES), 3, 32, 48)).astype(np.float32)


@pytest.fixture(scope="module")
def gene_store(genes, workdir) -> Path:
    path = workdir / "genes.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("genes", data=genes, chunks=(len(TINY_GENES), 1, 16, 16))
    group.attrs.update({"origin_um": [0.0, 0.0], "gene_names": TINY_GENES, "gene_bin": 16, "um_per_px": 0.5})
    return path


@pytest.fixture(scope="module")
def reference(pipe, genes) -> np.ndarray:
    """The in-memory pipeline's uint8 output for REGION, as (c, z, y, x)."""
    images = pipe(genes[:, :, :32, :32], gene_names=TINY_GENES, num_inference_steps=STEPS, generator=0, output_type="uint8").images
    return images.transpose(1, 0, 2, 3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(processes: int) -> list[str]:
    """`accelerate launch` of the CLI on N CPU processes (torchrun + gloo; `--cpu` alone starts one process)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "teramind_hf.cli",
    ]


def level0(out: Path) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["0"][...]


def cli_args(gene_store: Path, out: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        "generate", "--genes", str(gene_store), "--out", str(out), "--model", str(model_dir),
        "--region", ",".join(map(str, REGION)), "--steps", str(STEPS), "--seed", "0", "--quiet", *extra,
    ]


@pytest.mark.parametrize("batch_size,memory_limit", [(4, 2**40), (1, 0)], ids=["memory-batch4", "disk-batch1"])
def test_streaming_equals_in_memory_pipeline(pipe, gene_store, reference, workdir, batch_size, memory_limit):
    out = workdir / f"stream_{batch_size}.ome.zarr"
    report = generate_to_zarr(
        pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0, batch_size=batch_size,
        memory_limit_bytes=memory_limit, progress_bar=False,
    )
    assert report.step_buffers == ("memory" if memory_limit else "disk")
    assert report.voxels == reference.size and report.tiles == 8
    np.testing.assert_array_equal(level0(out), reference)
    assert not (out / "_teramind_steps").exists()  # step buffers removed once complete
    # a second call on the finished output does nothing and keeps the bytes
    again = generate_to_zarr(pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0, progress_bar=False)
    assert again.tile_steps_run == 0
    np.testing.assert_array_equal(level0(out), reference)


def test_killed_run_resumes_to_identical_bytes(gene_store, model_dir, reference, workdir):
    out = workdir / "killed.ome.zarr"
    args = cli_args(gene_store, out, model_dir, "--batch-size", "1", "--memory-limit-mb", "0")
    proc = subprocess.Popen([sys.executable, "-m", "teramind_hf.cli", *args], env=ENV, stderr=subprocess.PIPE)
    # inside the first step, or inside the last (some tiles done, others not)
    killed_at = kill_when(proc, out, lambda p: (p.max() >= 1 and p.min() < 1) or (p.min() >= 1 and p.max() < STEPS), timeout=120)
    assert killed_at is not None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not zarr.open_group(str(out), mode="r").attrs["teramind"]["complete"]

    report_path = workdir / "resume_report.json"
    assert cli_main([*args, "--report-json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["resumed_from_stage"] is not None
    assert report["tile_steps_run"] < 8 * (STEPS + 1)  # work done before the kill was not redone
    np.testing.assert_array_equal(level0(out), reference)


def test_two_processes_with_accelerate(gene_store, model_dir, reference, workdir):
    out = workdir / "two_procs.ome.zarr"
    launch = accelerate_launch(2)
    result = subprocess.run([*launch, *cli_args(gene_store, out, model_dir, "--batch-size", "2", "--threads", "1", "--shard-tiles", "1")],
                            env=ENV, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    np.testing.assert_array_equal(level0(out), reference)


def test_output_is_valid_ome_zarr_with_consistent_pyramid(pipe, gene_store, workdir):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    out = workdir / "ome.ome.zarr"
    generate_to_zarr(pipe, gene_store, out, region=REGION, slices=(1, 3), num_inference_steps=1, generator=3, progress_bar=False)
    nodes = list(Reader(parse_url(str(out)))())
    image = nodes[0]
    assert image.specs and isinstance(image.specs[0], Multiscales)
    levels = [np.asarray(level) for level in image.data]
    assert [lv.shape for lv in levels] == [(2, 2, 512, 512), (2, 2, 256, 256)]
    assert all(lv.dtype == np.uint8 for lv in levels)
    multiscales = image.metadata
    assert [a["name"] for a in multiscales["axes"]] == ["c", "z", "y", "x"]
    scale0 = multiscales["coordinateTransformations"][0][0]["scale"]
    scale1 = multiscales["coordinateTransformations"][1][0]["scale"]
    assert scale0 == [1.0, 150.0, 0.5, 0.5] and scale1 == [1.0, 150.0, 1.0, 1.0]  # um_per_px from the gene store
    np.testing.assert_array_equal(levels[1], downsample_2x(levels[0]))
    mean = levels[0].reshape(2, 2, 256, 2, 256, 2).astype(np.float64).mean(axis=(3, 5))
    assert np.abs(levels[1] - mean).max() <= 0.5
    assert zarr.open_array(str(out / "0"), mode="r").chunks == (1, 1, 256, 256)  # aligned to tiles


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_inputs_are_named_and_destroy_nothing(pipe, gene_store, model_dir, genes, workdir, capsys):
    out = workdir / "stream_4.ome.zarr"
    if not out.exists():
        generate_to_zarr(pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0, progress_bar=False)
    before = _snapshot(out)

    with pytest.raises(FileExistsError, match="seed"):
        generate_to_zarr(pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=1, progress_bar=False)
    other_model = TeraMindPipeline(unet=make_tiny_unet(seed=1, **FAST_CONFIG), scheduler=BoundaryAwareScheduler())
    with pytest.raises(FileExistsError, match="model_sha256"):
        generate_to_zarr(other_model, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0, progress_bar=False)
    with pytest.raises(ValueError, match="outside the gene data"):
        generate_to_zarr(pipe, gene_store, out, region=(256, 0, 512, 512), num_inference_steps=STEPS, progress_bar=False)
    with pytest.raises(ValueError, match="multiple of the tile size"):
        generate_to_zarr(pipe, gene_store, out, region=(0, 0, 512, 300), num_inference_steps=STEPS, progress_bar=False)

    # a gene store with another panel: refused on resume (recorded panel differs) and, sharing too few genes,
    # refused by name alignment even with --overwrite
    renamed = workdir / "other_panel.zarr"
    group = zarr.open_group(str(renamed), mode="w")
    group.create_array("genes", data=genes, chunks=(len(TINY_GENES), 1, 16, 16))
    group.attrs["gene_names"] = ["Slc17a7", "Slc17a6", "Gad1", "Foo1", "Th"]
    with pytest.raises(FileExistsError, match="genes"):
        generate_to_zarr(pipe, renamed, out, region=REGION, num_inference_steps=STEPS, generator=0, progress_bar=False)
    group.attrs["gene_names"] = ["Gad1", "Th", "Foo1", "Foo2", "Foo3"]
    with pytest.raises(ValueError, match="overlap"):
        generate_to_zarr(pipe, renamed, out, region=REGION, num_inference_steps=STEPS, generator=0, overwrite=True, progress_bar=False)

    # the CLI reports them as errors (exit 2)
    assert cli_main(cli_args(gene_store, out, model_dir)[:-1] + ["--seed", "7", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["generate", "--genes", str(workdir / "missing.zarr"), "--out", str(out), "--model", str(model_dir)]) == 2
    assert cli_main(cli_args(gene_store, out, model_dir, "--scheduler", "NoSuchScheduler", "--overwrite")) == 2
    assert "NoSuchScheduler" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_read_only_output_location(pipe, gene_store, workdir):
    if os.geteuid() == 0:  # root ignores permission bits; /sys is read-only for everyone
        target = Path("/sys/teramind-test.ome.zarr")
    else:
        locked = workdir / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        target = locked / "out.ome.zarr"
    with pytest.raises(PermissionError, match="not writable"):
        generate_to_zarr(pipe, gene_store, target, region=REGION, num_inference_steps=1, progress_bar=False)
    assert not target.exists()


def test_seam_score_cli_and_naive_tiling(pipe, gene_store, model_dir, workdir, capsys):
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 50, (1, 1, 512, 512))
    blocky = smooth + np.kron(rng.integers(0, 150, (2, 2)), np.ones((256, 256), dtype=int))
    assert seam_score_array(smooth, 256).score == pytest.approx(1.0, abs=0.05)
    assert seam_score_array(blocky, 256).score > 2
    # tiles moved off the phase-0 lines: the phase-0 score misses them, the worst-2-D-phase score does not
    moved = seam_score_array(np.roll(blocky, (30, 70), axis=(-2, -1)), 256)
    assert moved.score < 1.1 and moved.worst_phase_score > 2 and moved.worst_phases == (30, 70)
    assert seam_score_array(smooth, 256).worst_phase_score == pytest.approx(1.0, abs=0.1)
    # dark bands along tile borders (what a tile generated alone fades into) leave the score ~1 but not the band ratio
    faded = np.full((1, 1, 768, 768), 100)
    offset = np.arange(768) % 256
    ramp = np.minimum(np.minimum(offset, 255 - offset) / 16, 1.0)  # 1 inside, fading to 0 at every tile border
    faded = (faded * np.minimum(ramp[:, None], ramp[None, :])).astype(int)
    banded = seam_score_array(faded, 256)
    assert banded.score < 1.1 and banded.band_ratio < 0.6
    assert seam_score_array(smooth, 256).band_ratio == pytest.approx(1.0, abs=0.02)

    out = workdir / "naive.ome.zarr"
    assert cli_main(cli_args(gene_store, out, model_dir, "--no-halo")) == 0
    assert zarr.open_group(str(out), mode="r").attrs["teramind"]["run"]["halo"] is False
    assert cli_main(["eval", "seams", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seam score" in printed and "border band ratio" in printed and "worst-phase border score" in printed
    assert np.isfinite(seam_score(str(out)).score)
