"""Gene input for the pipeline: dense conversion, count checks, alignment to the model's panel and perturbation
(`perturb_genes`, the pipeline's ``perturb=``; re-exported by `teramind_hf.eval.perturb`)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data.panel import GenePanel, PanelAlignment, apply_alignment


def as_dense_genes(genes: Any, argument: str = "genes") -> torch.Tensor:
    """numpy / torch (dense or sparse COO) / ``sparse.COO`` counts -> dense float32 torch tensor. Refused by name:
    a dtype that is not real numbers (complex: the imaginary part would be dropped; objects, strings), and an array
    whose dense float32 copy would not fit in this machine's memory (e.g. a broadcast view of absurd size)."""
    from ..data.volume import physical_memory_bytes

    shape = tuple(int(n) for n in getattr(genes, "shape", ()))
    dtype = getattr(genes, "dtype", None)
    if isinstance(dtype, torch.dtype):
        kind = "c" if dtype.is_complex else ("f" if dtype.is_floating_point else "i")
    elif dtype is not None:
        kind = np.dtype(dtype).kind
    else:
        kind = None
    if kind is not None and kind not in "biuf":
        raise ValueError(f"{argument}: dtype {dtype} is not real numbers; expected integer or float transcript counts")
    if shape and 4 * math.prod(shape) > physical_memory_bytes():
        raise ValueError(
            f"{argument} of shape {shape} would take {4 * math.prod(shape) / 2**30:.3g} GiB as dense float32 counts, more "
            "than this machine's memory; pass a region of it (or use `teramind generate`, which streams from a store)"
        )
    if isinstance(genes, torch.Tensor):
        return (genes.to_dense() if genes.is_sparse else genes).float()
    if hasattr(genes, "todense") and hasattr(genes, "coords"):  # pydata sparse.COO
        return torch.from_numpy(np.asarray(genes.todense(), dtype=np.float32))
    try:
        array = np.asarray(genes)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype}")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{argument} must be an array of transcript counts (real numbers), got {type(genes).__name__} ({err})") from err


def check_counts(genes: torch.Tensor, argument: str = "genes") -> None:
    """Counts must be finite and non-negative (raw transcript counts, as the model was trained on)."""
    if not torch.isfinite(genes).all():
        bad = int((~torch.isfinite(genes)).sum())
        raise ValueError(f"{argument} contains {bad} NaN/inf values; expected finite transcript counts")
    if (genes < 0).any():
        raise ValueError(f"{argument} contains {int((genes < 0).sum())} negative values; expected counts >= 0")


def align_genes_to_model(
    genes: torch.Tensor,
    gene_names: list[str] | None,
    model_config,
    min_overlap: float = 0.5,
    orthologues: bool = False,
    overrides: Mapping[str, str] | None = None,
) -> tuple[torch.Tensor, PanelAlignment | None]:
    """Reorder ``genes`` (G, ...) to the model panel by name (missing genes zero-filled).

    Without names, G must equal the model's panel size and the order is taken as the model's.
    """
    num_genes = model_config.num_genes
    if gene_names is None:
        if genes.shape[0] != num_genes:
            raise ValueError(
                f"genes has {genes.shape[0]} genes on axis 0 but the model panel has {num_genes}; "
                "pass gene_names to align by name"
            )
        return genes, None
    if isinstance(gene_names, str) or not all(isinstance(n, str) and n.strip() for n in gene_names):
        found = sorted({type(n).__name__ for n in gene_names if not isinstance(n, str)}) or ["empty strings"]
        raise ValueError(f"gene_names must be non-empty gene symbols (strings), got {found} in it")
    if len(gene_names) != genes.shape[0]:
        raise ValueError(f"gene_names has {len(gene_names)} names but genes has {genes.shape[0]} rows on axis 0")
    if model_config.gene_names is None:
        raise ValueError("this model's config has no gene_names, so genes cannot be aligned by name")
    alignment = GenePanel(model_config.gene_names).align(
        list(gene_names), min_overlap=min_overlap, orthologues=orthologues, overrides=overrides
    )
    return apply_alignment(genes, alignment), alignment


def perturb_genes(genes: torch.Tensor, names: Sequence[str] | None, perturb: Mapping[str, float]) -> torch.Tensor:
    """A copy of ``genes`` ``(G, ...)`` with each named gene's counts multiplied by its factor (0 = knockout).

    ``names`` is the panel of axis 0 (case-insensitive match). Unknown genes and negative or non-finite factors
    raise a ValueError naming them; an empty ``perturb`` returns ``genes`` itself.
    """
    if not perturb:
        return genes
    if names is None:
        raise ValueError("perturb needs gene names: the model config has no gene_names")
    names = list(names)
    if len(names) != genes.shape[0]:
        raise ValueError(f"{len(names)} gene names for {genes.shape[0]} genes on axis 0")
    lowered = {n.lower(): i for i, n in enumerate(names)}
    unknown = [g for g in perturb if str(g).lower() not in lowered]
    if unknown:
        raise ValueError(f"perturb: gene(s) {unknown} not in the model panel ({len(names)} genes: {', '.join(names)})")
    bad = {g: f for g, f in perturb.items() if not (isinstance(f, (int, float)) and math.isfinite(f) and f >= 0)}
    if bad:
        raise ValueError(f"perturb: factors must be finite numbers >= 0 (0 = knockout), got {bad}")
    out = genes.clone()
    for gene, factor in perturb.items():
        out[lowered[str(gene).lower()]] *= float(factor)
    return out
