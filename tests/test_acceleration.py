"""Mixed precision and compilation: bf16/fp16 models run on CPU end to end, state stays float32, the run record
names the precision, and the compiled model matches the eager one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from teramind_hf.cli import main as cli_main
from teramind_hf.models.blocks import downsample_hw
from teramind_hf.pipelines.acceleration import cast_unet, compile_unet, is_compiled, resolve_dtype

from .conftest import NARROW_CONFIG, TINY_GENES, make_tiny_pipeline, make_tiny_unet


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d], ids=["contiguous", "channels_last"])
def test_downsample_is_avg_pool_in_float32_and_runs_in_bf16(layout):
    x = torch.randn(2, 8, 2, 16, 16, generator=torch.Generator().manual_seed(0)).to(memory_format=layout)
    assert torch.equal(downsample_hw(x), F.avg_pool3d(x, (1, 2, 2), (1, 2, 2)))  # bit-identical: the fp32 bytes stay
    for dtype in (torch.bfloat16, torch.float16):  # avg_pool3d has no CPU kernel for these
        low = x.to(dtype)
        out = downsample_hw(low)
        assert out.dtype == dtype
        assert torch.equal(out, F.avg_pool3d(low.float(), (1, 2, 2), (1, 2, 2)).to(dtype))  # one rounding


def test_resolve_dtype_names_and_refusal():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float16") is torch.float16
    assert resolve_dtype(None) is torch.float32 and resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="--dtype must be one of fp32, bf16, fp16"):
        resolve_dtype("int8")


# fp16 convolutions are slow on CPU: its case is `slow`; bf16 checks the same float32 state in CI
@pytest.mark.parametrize("dtype", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_low_precision_pipeline_keeps_float32_state(tiny_genes, dtype):
    tiny_pipeline = make_tiny_pipeline(**NARROW_CONFIG)
    tiny_genes = tiny_genes[..., :16, :16]  # one tile: fp16 convolutions are slow on CPU
    reference = tiny_pipeline(tiny_genes, gene_names=TINY_GENES, num_inference_steps=2, generator=0, output_type="pt").images
    cast_unet(tiny_pipeline.unet, dtype)
    seen = []
    out = tiny_pipeline(
        tiny_genes, gene_names=TINY_GENES, num_inference_steps=2, generator=0, output_type="pt",
        callback_on_step_end=lambda p, i, t, kw: seen.append(kw["latents"].dtype) or {},
    ).images
    assert seen == [torch.float32, torch.float32] and out.dtype == torch.float32  # scheduler state stays float32
    difference = (out - reference).abs()
    assert 0 < float(difference.max()) < 0.5 and float(difference.mean()) < 0.02  # rounding, not a different image


def test_generate_cli_bf16_end_to_end_and_recorded(tmp_path, tiny_genes):
    tiny_pipeline = make_tiny_pipeline(**NARROW_CONFIG)
    model_dir, store, out = tmp_path / "model", tmp_path / "genes.zarr", tmp_path / "bf16.ome.zarr"
    tiny_pipeline.save_pretrained(model_dir)
    group = zarr.open_group(str(store), mode="w")
    group.create_array("genes", data=tiny_genes.numpy(), chunks=(len(TINY_GENES), 1, 16, 16))
    group.attrs.update({"origin_um": [0.0, 0.0], "gene_names": TINY_GENES})
    args = ["generate", "--genes", str(store), "--out", str(out), "--model", str(model_dir), "--steps", "1", "--quiet",
            "--region", "0,0,256,512", "--slices", "0,2"]
    assert cli_main([*args, "--dtype", "bf16"]) == 0
    result = zarr.open_group(str(out), mode="r")
    assert result.attrs["teramind"]["run"]["model_dtype"] == "bfloat16"
    bf16_pixels = result["0"][...]
    assert bf16_pixels.std() > 0
    # the same output path with fp32 is another run (other bytes): refused, naming the field
    assert cli_main(args) == 2
    assert cli_main([*args, "--overwrite", "--out", str(tmp_path / "fp32.ome.zarr")]) == 0
    fp32_pixels = zarr.open_group(str(tmp_path / "fp32.ome.zarr"), mode="r")["0"][...]
    assert np.abs(bf16_pixels.astype(int) - fp32_pixels).mean() < 3  # grey levels


def _compiled_difference(**compile_kwargs) -> float:
    unet = make_tiny_unet()
    generator = torch.Generator().manual_seed(0)
    canvas = torch.randn(2, 2, 2, 320, 320, generator=generator)
    genes = torch.poisson(torch.full((2, len(TINY_GENES), 4, 20, 20), 0.8), generator=generator)
    with torch.no_grad():
        eager = unet(canvas, torch.tensor(500), genes).sample
        compile_unet(unet, **compile_kwargs)
        assert is_compiled(unet) and "conv_in.weight" in unet.state_dict()  # same module, same keys
        compiled = unet(canvas, torch.tensor(500), genes).sample
    return float((compiled - eager).abs().max())


@pytest.mark.parametrize(("backend", "tolerance"), [("aot_eager", 1e-6), ("aot_eager_decomp_partition", 1e-4)])
def test_model_compiles_as_one_graph(backend, tolerance):
    # fullgraph: no graph break anywhere in the collage path, so inductor sees (and can fuse) the whole forward.
    # aot_eager runs the traced ATen graph as is (the same numbers); aot_eager_decomp_partition first applies
    # inductor's decompositions and partitioner, i.e. everything inductor does but generate kernels (the slow
    # test below), to the inductor test's tolerance (decomposed norms round differently: ~5e-6 here)
    assert _compiled_difference(backend=backend, fullgraph=True) <= tolerance


# inductor's C++ code generation: 2.5 min cold on a shared 2-core machine; the test above covers tracing, the
# decomposed graph and compile_unet (which sets no inductor option), so this one runs with -m slow only
@pytest.mark.slow
def test_inductor_compiled_model_matches_eager():
    assert _compiled_difference(fullgraph=True) <= 1e-4
