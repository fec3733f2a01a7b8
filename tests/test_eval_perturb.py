"""perturb_genes (exact on constructed input, named errors) and `TeraMindPipeline(..., perturb=...)`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teramind_hf.eval.perturb import cell_type_markers, parse_gene_factors, perturb_genes

NAMES = ["Th", "Nr4a2", "Gad2", "Serpine2"]


def test_perturb_genes_is_exact_and_pure():
    genes = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    before = genes.clone()
    out = perturb_genes(genes, NAMES, {"th": 0, "Gad2": 0.5})  # case-insensitive, several at once
    torch.testing.assert_close(out[0], torch.zeros(2, 3, 3), rtol=0, atol=0)
    torch.testing.assert_close(out[2], before[2] * 0.5, rtol=0, atol=0)
    torch.testing.assert_close(out[[1, 3]], before[[1, 3]], rtol=0, atol=0)
    torch.testing.assert_close(genes, before, rtol=0, atol=0)  # input untouched
    assert perturb_genes(genes, NAMES, {}) is genes


def test_perturb_genes_lives_in_the_pipelines_layer_and_keeps_its_eval_name():
    """The pipeline applies ``perturb=`` without importing from `teramind_hf.eval`, the layer above it."""
    import ast
    from pathlib import Path

    import teramind_hf.pipelines as pipelines
    from teramind_hf.pipelines.genes import perturb_genes as in_pipelines

    assert perturb_genes is in_pipelines
    for module in Path(pipelines.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):  # `from ..eval...` (level 2) or `from teramind_hf.eval...`
                target = ("teramind_hf." if node.level == 2 else "") + (node.module or "")
                assert not target.startswith("teramind_hf.eval"), (module.name, ast.dump(node))
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("teramind_hf.eval") for a in node.names), module.name


def test_perturb_errors_name_the_problem():
    genes = torch.ones(4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"\['Nope'\] not in the model panel .*Th, Nr4a2"):
        perturb_genes(genes, NAMES, {"Nope": 0, "Th": 0})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        perturb_genes(genes, NAMES, {"Th": -1})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        perturb_genes(genes, NAMES, {"Th": float("nan")})
    with pytest.raises(ValueError, match="unknown cell type 'neuron'; known: glutamatergic, gabaergic"):
        cell_type_markers("neuron")
    assert cell_type_markers("Dopaminergic") == ("Th", "Nr4a2", "Ddc")
    assert parse_gene_factors("Th=0, Nr4a2=0.5") == {"Th": 0.0, "Nr4a2": 0.5}
    with pytest.raises(ValueError, match="--scale: expected GENE=FACTOR"):
        parse_gene_factors("Th", "--scale")


def test_pipeline_perturb_equals_perturbed_input_with_the_same_seed(tiny_pipeline):
    from teramind_hf.eval.attention import knock_out

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    names = list(tiny_pipeline.unet.config.gene_names)
    genes = rng.poisson(2.0, (len(names), 2, 16, 16)).astype(np.float32)
    kwargs = dict(gene_names=names, num_inference_steps=2, generator=3, output_type="np")
    perturbed = tiny_pipeline(genes, perturb={"Th": 0, "Nr4a2": 0}, **kwargs).images
    knocked = tiny_pipeline(knock_out(genes, names, ["Th", "Nr4a2"]), **kwargs).images
    np.testing.assert_array_equal(perturbed, knocked)
    assert not np.array_equal(perturbed, tiny_pipeline(genes, **kwargs).images)
    with pytest.raises(ValueError, match=r"\['Ddc'\] not in the model panel"):
        tiny_pipeline(genes, perturb={"Ddc": 0}, **kwargs)
