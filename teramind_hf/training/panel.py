"""Extend a trained model's gene panel with new genes, keeping every learned weight.

The gene-dependent tensors (found by comparing state-dict shapes of the same config with G and G + k genes,
so nothing is hard-coded): ``gene_conv_z`` (G -> G), ``gene_map_convs.0`` (G -> first map width), and at the
deepest level the ResBlocks that concatenate the G-channel gene map, their norms and skips, and the
gene-conditioned attention (AdaLN and K/V from the gene map) in encoder level 3, ``mid_block`` and decoder
level 3. Gene channels are always the *last* channels of a concatenation, so new genes are appended.

New slices: along an output axis (dim 0, biases, norm weights) they keep the fresh initialisation of a new
model; along an input axis they are zero, so no weight carries a new gene's channel into an existing one, and
the new genes learn from there (gradients reach them through the zero weights, as with zero-initialised
adapters).

The extended model does **not** reproduce the old one exactly, even where the new genes are all zero: the
gene-gene attention (`teramind_hf.models.blocks.GeneGeneAttention`) has every gene as a token, and a new gene's
token (zero counts still give the bias of its query and value projections) enters the softmax over genes of
every existing gene, so the old genes' embeddings shift before any training. Excluding the new tokens would need
a gene mask in that attention, which the official architecture and weights do not have; fine-tuning after
``--extend_panel`` is expected to absorb the shift.
"""

from __future__ import annotations

import torch

from ..models.unet_genemorph_3d import GeneMorphUNet3DModel


def gene_axes(config: dict, extra: int = 1) -> dict[str, list[int]]:
    """Per state-dict key, the axes whose size grows with the panel (found by building a G + extra model)."""
    base = {k: v for k, v in config.items() if not k.startswith("_")}
    small = GeneMorphUNet3DModel(**{**base, "gene_names": None}).state_dict()
    big = GeneMorphUNet3DModel(**{**base, "gene_names": None, "num_genes": base["num_genes"] + extra}).state_dict()
    axes = {}
    for key, tensor in small.items():
        grown = [d for d, (a, b) in enumerate(zip(tensor.shape, big[key].shape)) if a != b]
        if grown:
            axes[key] = grown
    return axes


def extend_gene_panel(unet: GeneMorphUNet3DModel, new_genes: list[str], seed: int = 0) -> GeneMorphUNet3DModel:
    """A copy of ``unet`` whose panel is its own genes followed by ``new_genes`` (see module doc)."""
    names = list(unet.config.gene_names or [])
    if not names:
        raise ValueError("extend_gene_panel: the model config has no gene_names, so new genes cannot be placed by name")
    known = {n.upper() for n in names}
    dup = [g for g in new_genes if g.upper() in known]
    if dup:
        raise ValueError(f"extend_gene_panel: genes already in the model panel: {dup}")
    if not new_genes:
        return unet
    new_g = len(names) + len(new_genes)
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    axes = gene_axes(config)
    torch.manual_seed(seed)
    fresh = GeneMorphUNet3DModel(**{**config, "num_genes": new_g, "gene_names": names + list(new_genes)})
    target = fresh.state_dict()
    merged = {}
    for key, old in unet.state_dict().items():
        new = target[key].clone()
        if key not in axes:
            merged[key] = old.clone()
            continue
        grown = axes[key]
        new[tuple(slice(0, s) for s in old.shape)] = old  # learned weights, gene channels at the end
        for d in grown:
            if d == 0 or new.ndim == 1:
                continue
            # new input channels feeding existing outputs start at zero
            index = [slice(None)] * new.ndim
            index[d] = slice(old.shape[d], None)
            if 0 in grown:
                index[0] = slice(0, old.shape[0])
            new[tuple(index)] = 0
        merged[key] = new
    fresh.load_state_dict(merged, strict=True)
    return fresh.to(unet.dtype)
