"""Gene input for the pipeline: dense conversion, count checks and alignment to the model's panel."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..data.panel import GenePanel, PanelAlignment, apply_alignment


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
    if len(gene_names) != genes.shape[0]:
        raise ValueError(f"gene_names has {len(gene_names)} names but genes has {genes.shape[0]} rows on axis 0")
    if model_config.gene_names is None:
        raise ValueError("this model's config has no gene_names, so genes cannot be aligned by name")
    alignment = GenePanel(model_config.gene_names).align(
        list(gene_names), min_overlap=min_overlap, orthologues=orthologues, overrides=overrides
    )
    return apply_alignment(genes, alignment), alignment
