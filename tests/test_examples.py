"""Every example runs with its smallest settings on the embedded default model and writes its outputs.

Examples are run in-process through their ``main(argv)`` (the fine-tuning one launches the trainer with
``accelerate launch`` as a child process, as documented); the tera-scale example runs `teramind generate`
and its Python-API mode.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *argv: str) -> int:
    """Import ``examples/<name>.py`` fresh and call its ``main`` with ``argv``."""
    module_name = f"teramind_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        return module.main(list(argv))
    finally:
        sys.modules.pop(module_name, None)


def test_quickstart(tmp_path):
    assert run_example("quickstart", "--steps", "1", "--sections", "2", "--out", str(tmp_path)) == 0
    volume = np.load(tmp_path / "volume.npy")
    assert volume.shape == (2, 2, 256, 256) and volume.dtype == np.uint8
    assert (tmp_path / "quickstart.png").stat().st_size > 5_000


def test_attention_and_knockout(tmp_path):
    assert run_example("attention_and_knockout", "--steps", "1", "--random-models", "3", "--out", str(tmp_path)) == 0
    for name in ("attention_matrix.png", "pair_map.png", "knockout.png"):
        assert (tmp_path / name).stat().st_size > 2_000, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["knockout"]["gene"] and summary["planted_pairs"]
    assert "inside_targeted" in summary["knockout"]["changes"]
    for pair in summary["planted_pairs"].values():
        assert 1 <= pair["rank"] <= pair["of"] and pair["random_weights"]["n"] == 3


def test_finetune_new_tissue(tmp_path):
    argv = ["--train-steps", "1", "--batch-size", "1", "--size", "256", "--steps", "1", "--threads", "1", "--out", str(tmp_path)]
    assert run_example("finetune_new_tissue", *argv) == 0
    model = tmp_path / "finetuned"
    assert (model / "model_index.json").is_file() and (model / "README.md").is_file()
    config = json.loads((model / "unet" / "config.json").read_text())
    assert {"Vglut1", "Gad65"} <= set(config["gene_names"])  # --extend_panel added the renamed genes
    from teramind_hf.hub_cards import check_model_card

    assert check_model_card(model / "README.md") == []  # the trainer's card carries the project's Hub metadata
    assert (tmp_path / "finetuned.png").stat().st_size > 5_000


def _check_tera_output(out: Path, size: int) -> None:
    import zarr

    image = zarr.open_group(str(out / "brain.ome.zarr"), mode="r")
    assert image.attrs["ome"]["multiscales"][0]["axes"][0]["name"] == "c"
    assert image["0"].shape == (2, 2, size, size)
    assert (out / "overview.png").stat().st_size > 2_000 and (out / "report.json").is_file()


def test_tera_scale_generation_api(tmp_path):
    assert run_example("tera_scale_generation", "--api", "--size", "512", "--steps", "1", "--out", str(tmp_path)) == 0
    _check_tera_output(tmp_path, 512)


def test_tera_scale_generation_cli(tmp_path):
    assert run_example("tera_scale_generation", "--size", "256", "--steps", "1", "--out", str(tmp_path)) == 0
    _check_tera_output(tmp_path, 256)


def test_tera_scale_generation_two_processes(tmp_path):
    argv = ["--size", "512", "--steps", "1", "--processes", "2", "--out", str(tmp_path)]
    assert run_example("tera_scale_generation", *argv) == 0
    _check_tera_output(tmp_path, 512)
    assert json.loads((tmp_path / "report.json").read_text())["num_processes"] == 2
