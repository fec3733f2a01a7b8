"""Gene input for the pipeline: dense conversion, count checks and alignment to the model's panel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class GeneAlignment:
    """How a dataset's genes map onto a model panel."""

    model_genes: list[str]
    missing: list[str]  # model genes absent from the data (filled with zeros)
    unused: list[str]  # data genes the model does not know
    index: list[int]  # for each model gene, its row in the data, or -1

    @property
    def overlap(self) -> float:
        return 1.0 - len(self.missing) / max(len(self.model_genes), 1)


def as_dense_genes(genes: Any, argument: str = "genes") -> torch.Tensor:
    """numpy / torch (dense or sparse COO) / ``sparse.COO`` counts -> dense float32 torch tensor."""
    if isinstance(genes, torch.Tensor):
        return (genes.to_dense() if genes.is_sparse else genes).float()
    if hasattr(genes, "todense") and hasattr(genes, "coords"):  # pydata sparse.COO
        return torch.from_numpy(np.asarray(genes.todense(), dtype=np.float32))
    try:
        return torch.from_numpy(np.asarray(genes, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{argument} must be an array of transcript counts, got {type(genes).__name__}") from err


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
) -> tuple[torch.Tensor, GeneAlignment | None]:
    """Reorder ``genes`` (G, ...) to the model panel by name; without names, G must equal the panel size."""
    num_genes = model_config.num_genes
    model_names = model_config.gene_names
    if gene_names is None:
        if genes.shape[0] != num_genes:
            raise ValueError(
                f"genes has {genes.shape[0]} genes on axis 0 but the model panel has {num_genes}; "
                "pass gene_names to align by name"
            )
        return genes, None
    if len(gene_names) != genes.shape[0]:
        raise ValueError(f"gene_names has {len(gene_names)} names but genes has {genes.shape[0]} rows on axis 0")
    if model_names is None:
        raise ValueError("this model's config has no gene_names, so genes cannot be aligned by name")
    lookup = {name.upper(): i for i, name in enumerate(gene_names)}
    index = [lookup.get(name.upper(), -1) for name in model_names]
    known = {name.upper() for name in model_names}
    alignment = GeneAlignment(
        model_genes=list(model_names),
        missing=[n for n, i in zip(model_names, index) if i < 0],
        unused=[n for n in gene_names if n.upper() not in known],
        index=index,
    )
    if alignment.overlap < min_overlap:
        raise ValueError(
            f"gene_names share {num_genes - len(alignment.missing)} of the model's {num_genes} genes "
            f"({alignment.overlap:.0%}); at least min_gene_overlap={min_overlap:.0%} is required"
        )
    rows = torch.as_tensor([max(i, 0) for i in index], dtype=torch.long)
    aligned = genes.index_select(0, rows)
    aligned[torch.as_tensor(index) < 0] = 0
    return aligned, alignment
