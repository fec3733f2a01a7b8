"""Foreign checkpoints and weights checks: a Lightning-style .ckpt naming globals of packages that are not installed
converts to the same weights as its safetensors twin, a payload planted in it runs nothing, and integer or
non-finite weights are refused (named) by convert-official and from_pretrained."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from teramind_hf import TeraMindPipeline
from teramind_hf.cli import main as cli_main
from teramind_hf.convert.official import CheckpointError, convert_official_checkpoint, load_state_dict
from teramind_hf.models.weights import WeightsError

from .conftest import OFFICIAL_SMALL

LIGHTNING = ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing",
             "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")


class Payload:
    """Unpickling this runs ``os.system("touch <marker>")``: what a crafted checkpoint would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Exec:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _lightning_checkpoint(state: dict, path: pathlib.Path, marker: pathlib.Path) -> None:
    """torch.save a Lightning-style checkpoint whose hyper-parameters and callbacks are objects of (fake, then
    removed) pytorch_lightning modules, with numpy scalars, a pathlib path and two planted payloads."""
    assert all(importlib.util.find_spec(name.split(".")[0]) is None for name in LIGHTNING), "lightning is installed"
    modules = {name: types.ModuleType(name) for name in LIGHTNING}

    class AttributeDict(dict):
        pass

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_path = pathlib.PurePosixPath("/runs/epoch=3.ckpt")
            self.best_model_score = np.float64(0.125)

    for cls, module in ((AttributeDict, "pytorch_lightning.utilities.parsing"), (ModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint")):
        cls.__module__, cls.__qualname__ = module, cls.__name__
        setattr(modules[module], cls.__name__, cls)
    hparams = AttributeDict(lr=np.float32(2e-5), data_dir=pathlib.PurePosixPath("/data/brain"), steps=np.int64(10))
    checkpoint = {
        "epoch": 3,
        "global_step": np.int64(1200),
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": hparams,
        "callbacks": {"ModelCheckpoint": ModelCheckpoint()},
        "loops": {"payload": Payload(marker), "exec": Exec(marker)},
    }
    sys.modules.update(modules)
    try:
        torch.save(checkpoint, path)
    finally:
        for name in LIGHTNING:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def official_state():
    return load_file(str(OFFICIAL_SMALL / "model.safetensors"))


def test_foreign_lightning_checkpoint_converts_like_its_safetensors_twin_and_runs_nothing(official_state, tmp_path):
    marker = tmp_path / "pwned"
    _lightning_checkpoint(official_state, tmp_path / "last.ckpt", marker)
    with pytest.raises(Exception):  # torch's own safe loader refuses the foreign globals: this is the hard case
        torch.load(tmp_path / "last.ckpt", weights_only=True)

    state = load_state_dict(tmp_path / "last.ckpt")
    assert not marker.exists()
    assert state.keys() == official_state.keys()
    assert all(torch.equal(state[k], official_state[k]) and state[k].dtype == official_state[k].dtype for k in state)

    from_ckpt = convert_official_checkpoint(tmp_path / "last.ckpt", tmp_path / "a").unet.state_dict()
    twin = convert_official_checkpoint(OFFICIAL_SMALL / "model.safetensors", tmp_path / "b").unet.state_dict()
    assert from_ckpt.keys() == twin.keys() and all(torch.equal(from_ckpt[k], twin[k]) for k in twin)
    assert not marker.exists()


def test_a_payload_in_place_of_the_state_dict_is_refused_without_running(official_state, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"model.conv": Payload(marker)}}, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError, match=r"crafted\.ckpt: expected a mapping of parameter names to tensors"):
        load_state_dict(tmp_path / "crafted.ckpt")
    torch.save(Exec(marker), tmp_path / "top.pt")
    with pytest.raises(CheckpointError, match=r"top\.pt: expected a mapping"):
        load_state_dict(tmp_path / "top.pt")
    assert not marker.exists()


def test_views_and_half_precision_storages_are_rebuilt(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"t": base.t(), "slice": base[1:3, 2:5], "half": base.half(), "bf16": base.bfloat16()[::2]}
    torch.save(state, tmp_path / "views.pt")
    loaded = load_state_dict(tmp_path / "views.pt")
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)


def test_convert_refuses_non_finite_and_integer_weights_naming_the_tensor(official_state, tmp_path):
    key = "input_blocks.0.0.weight"
    bad = dict(official_state)
    bad[key] = official_state[key].clone()
    bad[key][0, 0, 0, 0] = float("nan")
    save_file(bad, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match=r"NaN or inf in input_blocks\.0\.0\.weight"):
        convert_official_checkpoint(tmp_path / "nan.safetensors", tmp_path / "out")
    bad[key] = official_state[key].round().to(torch.int32)
    torch.save({"state_dict": {f"model.{k}": v for k, v in bad.items()}}, tmp_path / "int.ckpt")
    assert cli_main(["convert-official", str(tmp_path / "int.ckpt"), str(tmp_path / "out")]) == 2
    with pytest.raises(WeightsError, match=r"not floating-point.*input_blocks\.0\.0\.weight \(int32\)|are not: input_blocks\.0\.0\.weight \(int32\)"):
        convert_official_checkpoint(tmp_path / "int.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_from_pretrained_refuses_non_finite_and_integer_weights(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    good = dict(state)
    state["conv_out.weight"] = state["conv_out.weight"].clone()
    state["conv_out.weight"].view(-1)[0] = float("inf")
    save_file(state, str(weights))
    with pytest.raises(WeightsError, match=r"unet: weights hold NaN or inf in conv_out\.weight"):
        TeraMindPipeline.from_pretrained(tmp_path / "pipe")
    state = dict(good, **{"conv_in.weight": good["conv_in.weight"].to(torch.int64)})
    save_file(state, str(weights))
    with pytest.raises(WeightsError, match=r"diffusion_pytorch_model\.safetensors: expected floating-point weights.*conv_in\.weight \(I64\)"):
        TeraMindPipeline.from_pretrained(tmp_path / "pipe")


def test_pickled_pipeline_weights_are_never_loaded(tiny_pipeline, tmp_path):
    """A folder with .bin (pickle) weights only is refused, and use_safetensors=False is not an escape hatch."""
    import shutil

    from teramind_hf import GeneMorphUNet3DModel

    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    marker = tmp_path / "pwned"
    torch.save({"payload": Payload(marker)}, weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(ValueError, match="use_safetensors=False: pickled"):
        TeraMindPipeline.from_pretrained(tmp_path / "pipe", use_safetensors=False)
    with pytest.raises(ValueError, match="use_safetensors=False: pickled"):
        GeneMorphUNet3DModel.from_pretrained(tmp_path / "pipe", subfolder="unet", use_safetensors=False)
    with pytest.raises(Exception, match="safetensors"):
        GeneMorphUNet3DModel.from_pretrained(tmp_path / "pipe", subfolder="unet")
    assert not marker.exists()
    shutil.rmtree(tmp_path / "pipe")
