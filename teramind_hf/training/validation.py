"""Validation during training and benchmarks: sample a held-out region and compare it with ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ValidationRegion:
    """Genes ``(G, Z, H/bin, W/bin)`` and ground-truth images ``(Z, stains, H, W)`` in [-1, 1] of one region."""

    genes: np.ndarray
    images: np.ndarray
    gene_names: list[str]


def read_region(store: str | Path, size: int = 256, slices: int = 2, top: int = 0, left: int = 0) -> ValidationRegion:
    """A ``size`` x ``size`` region of the first ``slices`` sections of a training store."""
    from .data import open_training_store

    dataset = open_training_store(store, crop_size=size, length=1, seed=0, argument="--validation_data")
    group = dataset._arrays()
    images, genes = group
    b = dataset.gene_bin
    if top % b or left % b:
        raise ValueError(f"validation region origin ({top}, {left}) must be on the {b}-px gene grid")
    z = min(slices, dataset.num_slices)
    img = images[:, :z, top : top + size, left : left + size].astype(np.float32) / 127.5 - 1.0
    gen = genes[:, :z, top // b : (top + size) // b, left // b : (left + size) // b].astype(np.float32)
    return ValidationRegion(genes=gen, images=img.transpose(1, 0, 2, 3), gene_names=list(dataset.panel.genes))


def mean_pool(images: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` pixel blocks of the last two axes."""
    if factor == 1:
        return images
    *lead, h, w = images.shape
    return images.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def image_metrics(pred: np.ndarray, target: np.ndarray, pool: int = 1) -> dict[str, float]:
    """Mean PSNR / SSIM over sections and stains of ``(Z, stains, H, W)`` images in [-1, 1] (data range 2).

    ``pool > 1`` compares ``pool`` x ``pool`` block means instead of pixels: the gene grid locates cells only
    to a bin, so a faithful *sample* cannot match sub-bin detail pixel for pixel; pooled metrics measure
    agreement at the scale the genes carry.
    """
    # here, not at import: scikit-image pulls in scipy.stats, which a run without validation never needs
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"image_metrics: shapes differ {pred.shape} vs {target.shape}")
    pred, target = mean_pool(pred, pool), mean_pool(target, pool)
    psnr, ssim = [], []
    for z in range(pred.shape[0]):
        for s in range(pred.shape[1]):
            psnr.append(peak_signal_noise_ratio(target[z, s], pred[z, s], data_range=2.0))
            ssim.append(structural_similarity(target[z, s], pred[z, s], data_range=2.0))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def mean_image_control(images: np.ndarray, stain_means: np.ndarray | None = None) -> np.ndarray:
    """The per-stain mean image: every pixel of stain s set to that stain's mean (of ``stain_means`` if given)."""
    means = images.mean(axis=(0, 2, 3)) if stain_means is None else np.asarray(stain_means)
    return np.broadcast_to(means[None, :, None, None], images.shape).copy()


def shuffle_gene_bins(genes: np.ndarray, seed: int = 0) -> np.ndarray:
    """Genes with whole bins (all genes of a bin together) permuted across the region, per section."""
    rng = np.random.default_rng(seed)
    g, z, h, w = genes.shape
    flat = genes.reshape(g, z, h * w).copy()
    for k in range(z):
        flat[:, k] = flat[:, k, rng.permutation(h * w)]
    return flat.reshape(g, z, h, w)


@torch.no_grad()
def sample_region(pipe, region: ValidationRegion, *, num_inference_steps: int = 15, seed: int = 0, genes=None) -> np.ndarray:
    """Generate the region with ``pipe``: ``(Z, stains, H, W)`` float in [-1, 1]."""
    out = pipe(
        torch.from_numpy(region.genes if genes is None else genes),
        gene_names=region.gene_names,
        num_inference_steps=num_inference_steps,
        generator=seed,
        output_type="np",
        min_gene_overlap=0.0,
    )
    return np.asarray(out.images, dtype=np.float32)


def save_comparison(pred: np.ndarray, target: np.ndarray, path: str | Path) -> Path:
    """A PNG: rows = stains (DAPI, PolyT), columns = generated | ground truth, first section."""
    from PIL import Image

    rows = [np.concatenate([pred[0, s], target[0, s]], axis=1) for s in range(pred.shape[1])]
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((grid.clip(-1, 1) + 1) * 127.5).round().astype(np.uint8)).save(path)
    return path


def quality_comparison(
    pipe, region: ValidationRegion, *, num_inference_steps: int = 15, seed: int = 0, pool: int = 1
) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of the model against two controls on one region.

    * ``model``: the pipeline given the region's genes;
    * ``shuffled_genes``: the same pipeline and seed given the genes with bins shuffled across the region
      (tests that the output follows the gene input, not just the tissue's statistics);
    * ``mean_image``: every pixel at the region's own per-stain mean (the best constant image).
    """
    pred = sample_region(pipe, region, num_inference_steps=num_inference_steps, seed=seed)
    shuffled = sample_region(
        pipe, region, num_inference_steps=num_inference_steps, seed=seed, genes=shuffle_gene_bins(region.genes, seed)
    )
    mean = mean_image_control(region.images)
    table = {}
    for factor in sorted({1, pool}):
        suffix = "" if factor == 1 else f"@{factor}x{factor}"
        table[f"model{suffix}"] = image_metrics(pred, region.images, factor)
        table[f"shuffled_genes{suffix}"] = image_metrics(shuffled, region.images, factor)
        table[f"mean_image{suffix}"] = image_metrics(mean, region.images, factor)
    return table


def format_comparison(table: dict[str, dict[str, float]]) -> str:
    """The comparison as an aligned text table."""
    lines = [f"{'':22s} {'PSNR (dB)':>10s} {'SSIM':>8s}"]
    for name, m in table.items():
        lines.append(f"{name:22s} {m['psnr']:10.2f} {m['ssim']:8.4f}")
    return "\n".join(lines)
