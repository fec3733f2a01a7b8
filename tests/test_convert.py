"""Official checkpoint conversion: formats, the pipeline folder it writes, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from teramind_hf import TeraMindPipeline
from teramind_hf.cli import main as cli_main
from teramind_hf.convert.official import CheckpointError, convert_official_state_dict, load_state_dict

from .conftest import OFFICIAL_SMALL


@pytest.fixture(scope="module")
def official_state():
    return load_file(str(OFFICIAL_SMALL / "model.safetensors"))


def test_lightning_checkpoint_with_prefix_and_ema_keys(official_state, tmp_path):
    ckpt = {
        "epoch": 3,
        "state_dict": {
            **{f"model.{k}": v for k, v in official_state.items()},
            **{f"ema_model.{k}": v for k, v in list(official_state.items())[:3]},
        },
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    state = load_state_dict(tmp_path / "last.ckpt")
    assert set(state) == set(official_state)
    torch.save(official_state, tmp_path / "bare.pt")
    assert set(load_state_dict(tmp_path / "bare.pt")) == set(official_state)


def test_cli_convert_writes_a_loadable_pipeline(official_state, official_small_model, tmp_path):
    torch.save({"state_dict": {f"model.{k}": v for k, v in official_state.items()}}, tmp_path / "last.ckpt")
    names = [f"Gene{i}" for i in range(23)]
    (tmp_path / "genes.txt").write_text("# panel\n" + "\n".join(names) + "\n")
    assert cli_main(["convert-official", str(tmp_path / "last.ckpt"), str(tmp_path / "out"), "--gene-names", str(tmp_path / "genes.txt")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "model_index.json", "scheduler", "unet"]
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.library_name == "diffusers" and "last.ckpt" in card.text
    pipe = TeraMindPipeline.from_pretrained(tmp_path / "out")
    assert pipe.unet.config.gene_names == names
    for (name, ours), (_, reference) in zip(pipe.unet.state_dict().items(), official_small_model.state_dict().items()):
        assert torch.equal(ours, reference), name
    # a second conversion into the same folder is refused unless --overwrite
    assert cli_main(["convert-official", str(tmp_path / "last.ckpt"), str(tmp_path / "out")]) == 2
    assert cli_main(["convert-official", str(tmp_path / "last.ckpt"), str(tmp_path / "out"), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    pipe.set_progress_bar_config(disable=True)
    genes = torch.poisson(torch.full((23, 2, 16, 16), 0.3), generator=torch.Generator().manual_seed(0))
    images = pipe(genes, num_inference_steps=2, generator=0).images
    assert images.shape == (2, 2, 256, 256) and np.isfinite(images).all()


def test_missing_and_unexpected_keys_are_listed(official_state):
    state = dict(official_state)
    state.pop("middle_block.1.attn.q.weight")
    state["input_blocks.99.0.in_layers.2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        convert_official_state_dict(state)
    message = str(err.value)
    assert "mid_block.attn.to_q.weight" in message and "missing parameters (1)" in message
    assert "input_blocks.99.0.in_layers.2.weight" in message and "unmapped/unexpected keys (1)" in message


def test_wrong_shapes_are_listed(official_state):
    state = dict(official_state)
    state["out.2.weight"] = torch.zeros(2, 4, 1, 3, 5)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\).*out\.2\.weight \(2, 4, 1, 3, 5\)"):
        convert_official_state_dict(state)


def test_not_an_official_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not an official Tera-MIND UNet"):
        convert_official_state_dict({"foo.weight": torch.zeros(1)})


def test_gene_names_of_wrong_length(official_state):
    with pytest.raises(CheckpointError, match="gene_names lists 2 genes but the checkpoint has 23"):
        convert_official_state_dict(official_state, gene_names=["A", "B"])


def test_pickle_where_safetensors_expected(official_state, tmp_path):
    torch.save(official_state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: expected a safetensors file, but it is a pickle"):
        load_state_dict(tmp_path / "model.safetensors")


def test_unreadable_and_missing_checkpoints(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt: could not be read"):
        load_state_dict(tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_state_dict(tmp_path / "absent.ckpt")
    assert cli_main(["convert-official", str(tmp_path / "absent.ckpt"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_from_pretrained_refuses_a_mismatched_unet_checkpoint(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_out.weight"] = torch.zeros(3, 4, 1, 3, 3)
    save_file(state, str(weights))
    with pytest.raises(Exception, match="conv_out.weight"):
        TeraMindPipeline.from_pretrained(tmp_path / "pipe")
