"""`benchmarks/heldout_presets.py` caches samples: the cache key must change with the weights and configs that
sample them, or retrained weights in the same folder would be scored on the old weights' samples."""

import importlib.util
from pathlib import Path

import torch

from teramind_hf import TeraMindPipeline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "heldout_presets.py"


def load_script():
    spec = importlib.util.spec_from_file_location("heldout_presets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cache_key_follows_weights_scheduler_and_pipeline_config():
    script = load_script()
    pipe = TeraMindPipeline.from_pretrained()
    same = TeraMindPipeline.from_pretrained()
    assert script.pipeline_identity(pipe) == script.pipeline_identity(same)

    retrained = TeraMindPipeline.from_pretrained()
    with torch.no_grad():
        next(retrained.unet.parameters()).view(-1)[0] += 1e-3
    other_steps = TeraMindPipeline.from_pretrained()
    other_steps.register_to_config(num_inference_steps=pipe.config.num_inference_steps + 1)
    other_scheduler = TeraMindPipeline.from_pretrained()
    spacing = "trailing" if pipe.scheduler.config.get("timestep_spacing") == "leading" else "leading"
    other_scheduler.scheduler.register_to_config(timestep_spacing=spacing)
    keys = {script.pipeline_identity(p) for p in (pipe, retrained, other_steps, other_scheduler)}
    assert len(keys) == 4
