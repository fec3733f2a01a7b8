"""Shared test fixtures: the official small-model fixtures and a tiny random pipeline."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_SMALL = FIXTURES / "official_small"
TINY_GENES = ["Slc17a7", "Slc17a6", "Gad1", "Nr4a2", "Th"]


TINY_CONFIG = dict(block_out_channels=(4, 8, 16, 32), time_embed_dim=32, gene_map_channels=(16, 8, 8))
# a narrower, faster model than TINY_CONFIG, for tests about the engine and the pipeline rather than the model's
# width: byte equality across batch sizes needs a model whose CPU kernels are batch-invariant, which is not true of
# every small config (e.g. layers_per_block=1 with level-2 attention is not); this one is
FAST_CONFIG = dict(block_out_channels=(2, 4, 8, 16), time_embed_dim=16, gene_map_channels=(4, 4, 2), layers_per_block=1,
                   attention_levels=())
# narrower than TINY_CONFIG, for the bf16 / fp16 cases: low-precision convolutions have no fast CPU kernels
NARROW_CONFIG = dict(block_out_channels=(4, 4, 8, 16), time_embed_dim=16, gene_map_channels=(8, 4, 4), layers_per_block=1)


def make_tiny_unet(gene_names: list[str] = TINY_GENES, seed: int = 0, **config):
    """A small random model (TINY_CONFIG, entries overridden by ``config``)."""
    from teramind_hf import GeneMorphUNet3DModel

    torch.manual_seed(seed)
    unet = GeneMorphUNet3DModel(num_genes=len(gene_names), gene_names=list(gene_names), **{**TINY_CONFIG, **config})
    # zero-initialised-like layers would make every tile the same; small random weights everywhere instead
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (this machine is shared), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_pipeline(**config):
    """The tiny random model (``config`` overrides TINY_CONFIG) with the official scheduler."""
    from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline

    pipe = TeraMindPipeline(unet=make_tiny_unet(**config), scheduler=BoundaryAwareScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_tiny_genes():
    """Counts for a 2x2-tile region (512 px, 32 bins of 16 px) and 2 sections."""
    generator = torch.Generator().manual_seed(1)
    return torch.poisson(torch.full((len(TINY_GENES), 2, 32, 32), 0.8), generator=generator)


@pytest.fixture
def tiny_pipeline():
    return make_tiny_pipeline()


@pytest.fixture
def tiny_genes():
    return make_tiny_genes()


@pytest.fixture(scope="session")
def official_io():
    from safetensors.torch import load_file

    return load_file(str(OFFICIAL_SMALL / "io.safetensors"))


@pytest.fixture(scope="session")
def official_small_model():
    from teramind_hf.convert.official import convert_official_state_dict, load_state_dict

    return convert_official_state_dict(load_state_dict(OFFICIAL_SMALL / "model.safetensors"))


@pytest.fixture(scope="session")
def official_config():
    return json.loads((OFFICIAL_SMALL / "config.json").read_text())


def kill_when(proc: subprocess.Popen, out: Path, ready: Callable, timeout: float = 600):
    """SIGKILL ``proc`` as soon as ``ready(progress)`` holds for the step-progress record of the streamed output
    ``out`` (polled); returns the progress seen at the kill, or None if the run ended first."""
    import zarr

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            progress = zarr.open_group(str(out / "_teramind_steps"), mode="r")["progress"][...]
        except Exception:  # not created yet
            time.sleep(0.05)
            continue
        if ready(progress):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return progress.copy()
        time.sleep(0.02)
    proc.wait(timeout=60)
    return None


def kill_at_checkpoint(cmd: list[str], output_dir: Path, env: dict, step: int = 2, timeout: float = 120) -> None:
    """Start a training run (``cmd``) and SIGKILL it as soon as its checkpoint ``step`` is complete (its
    training_config.json, written last, exists); fails if the run ends before it can be killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = output_dir / f"checkpoint-{step}" / "training_config.json"
    deadline = time.time() + timeout
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
