"""Gene-gene attention against a null: does a model's attention to a gene pair reflect learning?

Ranking pairs by mean attention mostly measures co-expression: the gene branch attends between the *tokens* of
two genes (their local counts in a 64-px patch), and two genes with similar local counts get similar queries
under any weights, so a model with random weights ranks co-expressed pairs high too. Three corrections:

* **expressed patches only** (as the official analysis): a pair is summarised over the patches where both
  genes have more than ``threshold`` transcripts in the patch's gene window (the 4 sections conditioning it);
  elsewhere two silent genes have identical (empty) tokens and attend to each other for no biological reason;
* **specificity within a model**: a pair's expressed-patch mean is standardised against all pairs of the same
  model (z over pairs), so models with sharper or flatter softmax are comparable;
* **nulls**: (a) the same architecture with random weights (``GeneMorphUNet3DModel.from_config`` under
  ``torch.manual_seed(k)``, k = 0..n-1): the pair's specificity under each is the null of "no learning";
  (b) gene-label permutations: the input's gene axis is permuted (the same permutation in every patch), the
  attention is mapped back to gene names. The gene branch shares its weights across genes (no gene embedding),
  so its attention is permutation-equivariant and (b) reproduces the observation exactly: the attention says
  nothing about gene identity beyond the genes' local counts. The p-value against (b) is then 1 by
  construction; it is reported so that an architecture with gene-specific weights is tested too.

Per pair: z against each null, the percentile of the observation in it, a permutation p-value
``(1 + #{null >= observed}) / (n + 1)`` and the effect size (observation minus null mean, in specificity units)
with a 95 % interval from the null's empirical quantiles; ``learned`` is the Benjamini-Hochberg call at ``alpha``
over the tested pairs against the random-weight null.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .attention import _as_numpy, gene_index

__all__ = [
    "PairSignificance",
    "attention_null",
    "expressed_mask",
    "expressed_pair_attention",
    "model_gene_tensor",
    "pair_significance",
    "pair_specificity",
]

DEFAULT_THRESHOLD = 5.0  # transcripts in a patch's gene window; background alone gives ~2 at 0.5 um/px
MIN_PATCHES = 3  # a pair expressed together in fewer patches has no summary (NaN)


def model_gene_tensor(pipe: Any, genes: Any, gene_names: Sequence[str] | None) -> torch.Tensor:
    """Counts ``(G_model, Z, Hb, Wb)`` in the model panel's order (the pipeline's own alignment by name)."""
    from ..pipelines.genes import align_genes_to_model, as_dense_genes, check_counts

    dense = as_dense_genes(genes, argument="genes")
    if dense.ndim != 4:
        raise ValueError(f"genes must be 4-D (genes, sections, H/gene_bin, W/gene_bin), got {tuple(dense.shape)}")
    check_counts(dense, argument="genes")
    names = None if gene_names is None else list(gene_names)
    return align_genes_to_model(dense, names, pipe.unet.config)[0]


def expressed_mask(model_genes: Any, config: Any, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """``(chunks, patches_h, patches_w, G)``: genes with more than ``threshold`` transcripts in each patch.

    Counts are summed over the gene window of the chunk (the ``gene_slices`` sections its attention sees),
    in the layout of `TeraMindPipeline.gene_attention`.
    """
    from ..sampling.grid import gene_window, z_chunks

    genes = torch.as_tensor(_as_numpy(model_genes))
    g, sections, bins_h, bins_w = genes.shape
    per_patch = config.sample_size // config.gene_bin
    if bins_h % per_patch or bins_w % per_patch:
        raise ValueError(f"gene grid {bins_h}x{bins_w} must be whole patches of {per_patch} bins")
    windows = [gene_window(genes, s, config.num_slices, config.gene_slices) for s in z_chunks(0, sections, config.num_slices)]
    counts = torch.stack(windows).sum(dim=2)  # (chunks, G, Hb, Wb)
    k, ph, pw = counts.shape[0], bins_h // per_patch, bins_w // per_patch
    per = counts.reshape(k, g, ph, per_patch, pw, per_patch).sum(dim=(3, 5))
    return (per > threshold).permute(0, 2, 3, 1).numpy()


def expressed_pair_attention(
    attention: Any, expressed: np.ndarray, min_patches: int = MIN_PATCHES
) -> tuple[np.ndarray, np.ndarray]:
    """Mean symmetrised attention of every pair over the patches expressing both genes.

    Returns ``(G, G)`` means (NaN where fewer than ``min_patches`` patches express both, and on the
    diagonal) and ``(G, G)`` patch counts.
    """
    att = _as_numpy(attention)
    g = att.shape[-1]
    flat = att.reshape(-1, g, g).astype(np.float64)
    sym = 0.5 * (flat + flat.transpose(0, 2, 1))
    on = np.asarray(expressed, dtype=np.float64).reshape(-1, g)
    if on.shape[0] != flat.shape[0]:
        raise ValueError(f"expressed has {on.shape[0]} patches but attention has {flat.shape[0]}")
    both = np.einsum("pa,pb->ab", on, on)
    total = np.einsum("pa,pb,pab->ab", on, on, sym)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(both >= max(min_patches, 1), total / np.maximum(both, 1), np.nan)
    np.fill_diagonal(mean, np.nan)
    return mean, both.astype(np.int64)


def pair_specificity(pair_means: np.ndarray) -> np.ndarray:
    """Each pair's expressed-patch mean as a z over all pairs with a summary in the same model (``(G, G)``)."""
    upper = pair_means[np.triu_indices(pair_means.shape[0], k=1)]
    upper = upper[np.isfinite(upper)]
    if upper.size < 2 or upper.std() == 0:
        return np.full_like(pair_means, np.nan)
    return (pair_means - upper.mean()) / upper.std()


@dataclass
class PairSignificance:
    """One gene pair's attention against both nulls (see the module docstring)."""

    pair: tuple[str, str]
    patches: int  # patches expressing both genes
    observed: float  # expressed-patch mean attention of the model
    specificity: float  # that mean as a z over all pairs of the model
    rank: int  # 1 = highest specificity among pairs with a summary
    pairs_ranked: int
    random_weights: dict  # z, percentile, p, n, null mean/std of the specificity, effect and its 95 % interval
    label_permutation: dict
    learned: bool = False  # BH-significant against the random-weight null at alpha
    p_adjusted: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def _null_summary(observed: float, null: np.ndarray) -> dict:
    """z, percentile, p and the effect size of ``observed`` against the ``null`` draws (non-finite draws dropped).

    ``effect`` is the observation minus the null mean, in the units of ``observed``: a narrow null turns a small
    absolute difference into a large z, so the effect says how large the difference is. ``effect_interval`` is
    ``[observed - q97.5(null), observed - q2.5(null)]`` from the empirical quantiles of the draws.
    """
    null = null[np.isfinite(null)]
    n = int(null.size)
    if n == 0 or not np.isfinite(observed):
        nan = float("nan")
        return {"n": n, "z": nan, "percentile": nan, "p": nan, "mean": nan, "std": 0.0, "effect": nan,
                "effect_interval": [nan, nan]}
    std = float(null.std(ddof=1)) if n > 1 else 0.0
    # ties (up to float noise) count against the observation, so an exact reproduction gives p = 1
    tol = 1e-6 * max(1.0, abs(observed))  # float32 attention: a reproduction differs by ~1e-8
    exceed = int((null >= observed - tol).sum())
    z = (observed - float(null.mean())) / std if std > tol else 0.0
    low, high = np.quantile(null, [0.025, 0.975])
    return {
        "n": n, "z": float(z), "percentile": float(100.0 * (null < observed - tol).mean()),
        "p": (1 + exceed) / (n + 1), "mean": float(null.mean()), "std": std,
        "effect": float(observed - null.mean()), "effect_interval": [float(observed - high), float(observed - low)],
    }


def _random_unet(config: Any, seed: int):
    from ..models.unet_genemorph_3d import GeneMorphUNet3DModel

    torch.manual_seed(seed)
    return GeneMorphUNet3DModel.from_config(config)


def attention_null(
    pipe: Any,
    model_genes: torch.Tensor,
    expressed: np.ndarray,
    *,
    random_models: int = 39,
    permutations: int = 19,
    seed: int = 0,
    min_patches: int = MIN_PATCHES,
) -> tuple[np.ndarray, np.ndarray]:
    """Specificity ``(n, G, G)`` matrices under random-weight models and under gene-label permutations.

    Random model k is initialised under ``torch.manual_seed(seed + k)``; permutation k is drawn from
    ``numpy.random.default_rng([seed, k])``. Both use the pipeline's public ``gene_attention``.
    """
    from ..pipelines.pipeline_teramind import TeraMindPipeline

    random_spec = []
    for k in range(random_models):
        unet = _random_unet(pipe.unet.config, seed + k).to(device=pipe.device, dtype=pipe.unet.dtype)
        null_pipe = TeraMindPipeline(unet=unet, scheduler=pipe.scheduler)
        att = null_pipe.gene_attention(model_genes)
        random_spec.append(pair_specificity(expressed_pair_attention(att, expressed, min_patches)[0]))
    g = model_genes.shape[0]
    label_spec = []
    for k in range(permutations):
        perm = np.random.default_rng([seed, k]).permutation(g)  # slot j gets gene perm[j]'s counts
        att = _as_numpy(pipe.gene_attention(model_genes[torch.from_numpy(perm)]))
        slot = np.argsort(perm)  # slot of each gene
        back = att[..., slot[:, None], slot[None, :]]
        label_spec.append(pair_specificity(expressed_pair_attention(back, expressed, min_patches)[0]))
    empty = np.zeros((0, g, g))
    return (np.stack(random_spec) if random_spec else empty), (np.stack(label_spec) if label_spec else empty)


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok])]
    ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
    out[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return out


def check_significance_arguments(*, threshold: float, random_models: int, permutations: int, alpha: float) -> None:
    """The numbers of :func:`pair_significance`, named as the CLI spells them (checked before any model runs)."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold (--threshold) must be a finite number of transcripts >= 0, got {threshold!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):  # (NaN fails this too)
        raise ValueError(f"alpha (--alpha) must be a false discovery rate in (0, 1), got {alpha!r}")
    for name, value, least in (("random_models", random_models, 1), ("permutations", permutations, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a whole number >= {least}, got {value!r}")


def pair_significance(
    pipe: Any,
    genes: Any,
    gene_names: Sequence[str] | None,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    random_models: int = 39,
    permutations: int = 19,
    alpha: float = 0.05,
    seed: int = 0,
    min_patches: int = MIN_PATCHES,
) -> list[PairSignificance]:
    """Score gene pairs of ``pipe``'s attention on a region against both nulls (module docstring).

    ``pairs`` are gene names of the model panel (default: every pair of the panel); the BH correction runs
    over the pairs given. With ``random_models`` < 19 no pair can reach p <= 0.05.
    """
    check_significance_arguments(threshold=threshold, random_models=random_models, permutations=permutations, alpha=alpha)
    names = list(pipe.unet.config.gene_names or [])
    if not names:
        raise ValueError("the model config has no gene_names: pairs cannot be named")
    if pairs is None:
        pairs = [(names[a], names[b]) for a in range(len(names)) for b in range(a + 1, len(names))]
    index_pairs = []
    for a, b in pairs:
        ia, ib = gene_index(names, a), gene_index(names, b)
        if ia == ib:
            raise ValueError(f"pair {a},{b}: pick two different genes")
        index_pairs.append((ia, ib))
    if random_models < 1:
        raise ValueError(f"random_models must be >= 1, got {random_models}")
    model_genes = model_gene_tensor(pipe, genes, gene_names)
    expressed = expressed_mask(model_genes, pipe.unet.config, threshold)
    means, counts = expressed_pair_attention(pipe.gene_attention(model_genes), expressed, min_patches)
    spec = pair_specificity(means)
    upper = spec[np.triu_indices(len(names), k=1)]
    ranked = upper[np.isfinite(upper)]
    random_null, label_null = attention_null(
        pipe, model_genes, expressed, random_models=random_models, permutations=permutations, seed=seed,
        min_patches=min_patches,
    )
    results = []
    for (a, b), (ia, ib) in zip(pairs, index_pairs):
        obs = float(spec[ia, ib])
        results.append(
            PairSignificance(
                pair=(names[ia], names[ib]), patches=int(counts[ia, ib]), observed=float(means[ia, ib]),
                specificity=obs, rank=int((ranked > obs).sum()) + 1 if np.isfinite(obs) else 0,
                pairs_ranked=int(ranked.size), random_weights=_null_summary(obs, random_null[:, ia, ib]),
                label_permutation=_null_summary(obs, label_null[:, ia, ib]),
            )
        )
    adjusted = benjamini_hochberg([r.random_weights["p"] for r in results])
    for r, q in zip(results, adjusted):
        r.p_adjusted = float(q)
        r.learned = bool(np.isfinite(q) and q <= alpha)
    return results
