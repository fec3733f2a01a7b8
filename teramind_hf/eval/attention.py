"""Gene-gene attention maps and in-silico knockouts: what the model says about gene interactions.

The model's gene branch runs one-head self-attention over genes (key = query, so the logits are symmetric) in
every 64-px patch; `TeraMindPipeline.gene_attention` returns those maps as ``(chunks, patches_h, patches_w,
G, G)`` in the model panel's order. The helpers here turn that tensor into things a person reads: the map of
one gene pair over the tissue, the panel-wide mean matrix, the rank of a pair among all pairs (to check the
planted co-expressed pairs of the phantom), and the effect on the generated morphology of zeroing one gene
(an in-silico knockout, sampled with the same seed so the only difference is the gene).

Used by the demo (`demo/app.py`) and by `examples/attention_and_knockout.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = [
    "KnockoutResult",
    "gene_expression_map",
    "gene_index",
    "in_silico_knockout",
    "knock_out",
    "mean_attention",
    "pair_attention_map",
    "pair_rank",
]


def gene_index(names: Sequence[str], gene: str) -> int:
    """Position of ``gene`` in ``names`` (case-insensitive), with a clear error naming the panel otherwise."""
    lowered = [n.lower() for n in names]
    try:
        return lowered.index(gene.lower())
    except ValueError:
        shown = ", ".join(list(names)[:12]) + (" ..." if len(names) > 12 else "")
        raise ValueError(f"gene {gene!r} is not in the panel ({len(names)} genes: {shown})") from None


def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().float().numpy()
    return np.asarray(array, dtype=np.float32)


def pair_attention_map(attention: Any, names: Sequence[str], gene_a: str, gene_b: str) -> np.ndarray:
    """Attention between two genes in every patch: ``(chunks, patches_h, patches_w)``.

    ``attention`` is the output of `TeraMindPipeline.gene_attention` and ``names`` its panel
    (``pipe.unet.config.gene_names``). Softmax rows are not symmetric even though the logits are, so the
    value is the mean of a->b and b->a: one number per patch for an unordered pair.
    """
    att = _as_numpy(attention)
    if att.ndim != 5 or att.shape[-1] != att.shape[-2] or att.shape[-1] != len(names):
        raise ValueError(f"attention must be (chunks, ph, pw, G, G) with G = {len(names)}, got {att.shape}")
    a, b = gene_index(names, gene_a), gene_index(names, gene_b)
    return 0.5 * (att[..., a, b] + att[..., b, a])


def mean_attention(attention: Any, weights: Any | None = None) -> np.ndarray:
    """Panel-wide ``(G, G)`` attention averaged over patches (optionally weighted, e.g. by expression)."""
    att = _as_numpy(attention)
    flat = att.reshape(-1, att.shape[-2], att.shape[-1])
    if weights is None:
        return flat.mean(axis=0)
    w = _as_numpy(weights).reshape(-1)
    if w.shape[0] != flat.shape[0] or w.sum() <= 0:
        raise ValueError(f"weights must give one non-negative value per patch ({flat.shape[0]}), not all zero")
    return np.tensordot(w / w.sum(), flat, axes=1)


def pair_rank(matrix: np.ndarray, names: Sequence[str], gene_a: str, gene_b: str) -> tuple[int, int]:
    """Rank (1 = strongest) of an unordered gene pair among all pairs of distinct genes, and the pair count.

    Uses the symmetrised mean matrix; a planted co-expressed pair ranking near the top is the expected sign
    that the model's gene attention has learned the co-expression.
    """
    sym = 0.5 * (matrix + matrix.T)
    a, b = gene_index(names, gene_a), gene_index(names, gene_b)
    if a == b:
        raise ValueError("pick two different genes")
    upper = np.triu_indices(len(names), k=1)
    values = sym[upper]
    return int((values > sym[a, b]).sum()) + 1, int(values.size)


def gene_expression_map(genes: Any, names: Sequence[str], gene: str) -> np.ndarray:
    """Counts of one gene, ``(Z, Hb, Wb)``, from a ``(G, Z, Hb, Wb)`` gene array with panel ``names``."""
    array = _as_numpy(genes)
    if array.ndim != 4 or array.shape[0] != len(names):
        raise ValueError(f"genes must be (G, Z, Hb, Wb) with G = {len(names)}, got {array.shape}")
    return array[gene_index(names, gene)]


def knock_out(genes: Any, names: Sequence[str], knocked: str | Sequence[str]) -> np.ndarray:
    """A copy of the ``(G, Z, Hb, Wb)`` gene counts with the named gene(s) set to zero everywhere."""
    out = np.array(_as_numpy(genes), copy=True)
    for gene in [knocked] if isinstance(knocked, str) else list(knocked):
        out[gene_index(names, gene)] = 0.0
    return out


@dataclass
class KnockoutResult:
    """Morphology with and without a gene, sampled from the same noise.

    ``baseline`` and ``knocked_out`` are ``(Z, 2, H, W)`` floats in [-1, 1]; ``difference`` is
    ``knocked_out - baseline``. ``mean_abs_change`` is per stain (DAPI, PolyT).
    """

    gene: str
    baseline: np.ndarray
    knocked_out: np.ndarray

    @property
    def difference(self) -> np.ndarray:
        return self.knocked_out - self.baseline

    @property
    def mean_abs_change(self) -> tuple[float, float]:
        diff = np.abs(self.difference)
        return float(diff[:, 0].mean()), float(diff[:, 1].mean())


def in_silico_knockout(
    pipe: Any,
    genes: Any,
    gene_names: Sequence[str],
    gene: str,
    *,
    seed: int = 0,
    baseline: np.ndarray | None = None,
    callback_on_step_end: Callable | None = None,
    **pipe_kwargs: Any,
) -> KnockoutResult:
    """Generate with and without ``gene`` (zeroed) from the same seed, so the change is due to the gene alone.

    ``baseline`` (a float ``(Z, 2, H, W)`` result of the same call without knockout) skips the first run.
    Extra keyword arguments (``num_inference_steps``, ``slices``, ``batch_size`` ...) go to the pipeline.
    """
    names = list(gene_names)
    gene_index(names, gene)  # fail before sampling if the gene is unknown
    model_names = [n.lower() for n in (pipe.unet.config.gene_names or [])]
    if model_names and gene.lower() not in model_names:
        raise ValueError(f"gene {gene!r} is not in the model panel: knocking it out cannot change the output")
    kwargs = {**pipe_kwargs, "output_type": "np", "callback_on_step_end": callback_on_step_end}
    if baseline is None:
        baseline = pipe(genes, gene_names=names, generator=seed, **kwargs).images
    knocked = pipe(knock_out(genes, names, gene), gene_names=names, generator=seed, **kwargs).images
    return KnockoutResult(gene=gene, baseline=np.asarray(baseline), knocked_out=np.asarray(knocked))
