"""In-silico gene perturbations: scale or zero genes (several at once, or all markers of a cell type).

`perturb_genes` is the pure function `TeraMindPipeline(..., perturb={...})` applies to the prepared gene tensor
(model panel order) right after gene preparation and before sampling, so a perturbed and an unperturbed call with
the same seed start from the same noise and differ only by the genes.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

__all__ = ["cell_type_markers", "parse_gene_factors", "perturb_genes"]


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


def cell_type_markers(cell_type: str, cell_types=None) -> tuple[str, ...]:
    """Marker genes of a cell type (default: the phantom's `CELL_TYPES`), with an error naming the known types."""
    if cell_types is None:
        from ..data.phantom import CELL_TYPES as cell_types
    for kind in cell_types:
        if kind.name.lower() == cell_type.lower():
            return tuple(kind.markers)
    raise ValueError(f"unknown cell type {cell_type!r}; known: {', '.join(k.name for k in cell_types)}")


def parse_gene_factors(text: str, argument: str = "--set") -> dict[str, float]:
    """``"Th=0,Nr4a2=0.5"`` -> ``{"Th": 0.0, "Nr4a2": 0.5}``, with an error naming ``argument`` otherwise."""
    factors: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        gene, sep, value = item.partition("=")
        try:
            if not sep or not gene.strip():
                raise ValueError
            factors[gene.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{argument}: expected GENE=FACTOR[,GENE=FACTOR...], got {item!r} in {text!r}") from None
    if not factors:
        raise ValueError(f"{argument}: no GENE=FACTOR given in {text!r}")
    return factors
