"""In-silico gene perturbations: scale or zero genes (several at once, or all markers of a cell type).

`perturb_genes` (defined with the pipeline's gene input, `teramind_hf.pipelines.genes`, and re-exported here) is
the pure function `TeraMindPipeline(..., perturb={...})` applies to the prepared gene tensor
(model panel order) right after gene preparation and before sampling, so a perturbed and an unperturbed call with
the same seed start from the same noise and differ only by the genes.
"""

from __future__ import annotations

from ..pipelines.genes import perturb_genes

__all__ = ["cell_type_markers", "parse_gene_factors", "perturb_genes"]


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
