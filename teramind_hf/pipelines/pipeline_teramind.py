"""TeraMindPipeline: spatial gene expression -> DAPI/PolyT morphology volume, tile by tile, seamlessly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..models.unet_genemorph_3d import GeneMorphUNet3DModel
from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler
from ..data.panel import PanelAlignment
from .genes import align_genes_to_model, as_dense_genes, check_counts
from .inputs import as_gene_input

OUTPUT_TYPES = ("np", "pt", "uint8")
TILE_ORDERS = ("raster", "reverse")


@dataclass
class TeraMindPipelineOutput(BaseOutput):
    """Output of :class:`TeraMindPipeline`.

    Args:
        images: ``(Z, stains, H, W)`` morphology, stain 0 DAPI and 1 PolyT; float in [-1, 1] (``"np"``/``"pt"``)
            or uint8 (``"uint8"``).
        gene_alignment: how the input genes were matched to the model panel (missing/unused genes).
    """

    images: np.ndarray | torch.Tensor
    gene_alignment: PanelAlignment | None = field(default=None)


def z_chunks(start: int, stop: int, num_slices: int = 2) -> list[int]:
    """First image slice of each chunk: 2-slice chunks from ``start`` moving by 2 (the last may overhang)."""
    return list(range(start, stop, num_slices))


def gene_window_range(chunk_start: int, num_slices: int = 2, gene_slices: int = 4) -> tuple[int, int]:
    """Gene sections ``[lo, hi)`` conditioning the chunk starting at ``chunk_start`` (may reach past either end)."""
    margin = (gene_slices - num_slices) // 2
    return chunk_start - margin, chunk_start + num_slices + margin


def gene_window(genes: torch.Tensor, chunk_start: int, num_slices: int = 2, gene_slices: int = 4) -> torch.Tensor:
    """Gene slices conditioning a chunk: the chunk's slices plus one section on each side, zero-padded.

    ``genes`` is ``(G, Z, Hb, Wb)``, one gene map per section; returns ``(G, gene_slices, Hb, Wb)``.
    """
    lo, hi = gene_window_range(chunk_start, num_slices, gene_slices)
    z = genes.shape[1]
    window = genes[:, max(lo, 0) : min(hi, z)]
    return F.pad(window, (0, 0, 0, 0, max(0, -lo), max(0, hi - z)))


class TeraMindPipeline(DiffusionPipeline):
    r"""Generate morphology (DAPI + PolyT) from spatial gene expression with Tera-MIND.

    Components:
        unet: :class:`GeneMorphUNet3DModel`.
        scheduler: :class:`BoundaryAwareScheduler`, or any diffusers scheduler (it is wrapped automatically).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(self, unet: GeneMorphUNet3DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=BoundaryAwareScheduler.wrap(scheduler))

    def __setattr__(self, name: str, value: Any) -> None:
        # `pipe.scheduler = DPMSolverMultistepScheduler.from_config(...)` keeps the tile/halo sampling
        if name == "scheduler" and isinstance(value, SchedulerMixin) and not isinstance(value, BoundaryAwareScheduler):
            previous = self.__dict__.get("scheduler")
            geometry = {}
            if isinstance(previous, BoundaryAwareScheduler):
                geometry = {k: previous.config[k] for k in ("tile_size", "halo", "patch_size", "fill_value")}
            value = BoundaryAwareScheduler.wrap(value, **geometry)
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs):
        """Load from a local folder or a Hub repo id (resolved with ``huggingface_hub.snapshot_download``,
        which honours ``revision``, ``cache_dir``, ``token``, ``local_files_only`` and ``HF_HUB_OFFLINE``)."""
        if pretrained_model_name_or_path is None:
            from .. import default_model_path

            pretrained_model_name_or_path = default_model_path()
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            if path.exists() or str(pretrained_model_name_or_path).startswith((".", "/", "~")):
                raise FileNotFoundError(f"pipeline folder not found: {pretrained_model_name_or_path}")
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                str(pretrained_model_name_or_path),
                revision=kwargs.pop("revision", None),
                cache_dir=kwargs.pop("cache_dir", None),
                token=kwargs.pop("token", None),
                local_files_only=kwargs.pop("local_files_only", False),
                allow_patterns=["*.json", "*.safetensors", "*.md", "*.txt"],
            )
            path = Path(local)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} has no model_index.json: not a TeraMindPipeline folder")
        if kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False: pickled (.bin) weights are never loaded; convert them to safetensors")
        kwargs["use_safetensors"] = True
        if "torch_dtype" in kwargs:  # the diffusers spelling users know; diffusers now warns for it and wants `dtype`
            kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
        return super().from_pretrained(str(path), **kwargs)

    # ------------------------------------------------------------------ acceleration
    def enable_compile(self, **compile_kwargs) -> "TeraMindPipeline":
        """``torch.compile`` the denoiser in place (optional; kwargs go to ``torch.compile``). Outputs change by
        float rounding only (fused kernels); see docs/performance.md for the measured speed-up and difference."""
        from .acceleration import compile_unet

        compile_unet(self.unet, **compile_kwargs)
        return self

    # ------------------------------------------------------------------ inputs
    def _prepare_genes(
        self, genes: Any, gene_names: list[str] | None, min_gene_overlap: float
    ) -> tuple[torch.Tensor, PanelAlignment | None]:
        dense = as_dense_genes(genes, argument="genes")
        if dense.ndim != 4:
            raise ValueError(
                f"genes must be 4-D (genes, sections, H/gene_bin, W/gene_bin), got shape {tuple(dense.shape)}"
            )
        check_counts(dense, argument="genes")
        return align_genes_to_model(dense, gene_names, self.unet.config, min_gene_overlap)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        genes: Any,
        gene_names: list[str] | None = None,
        num_inference_steps: int = 15,
        generator: torch.Generator | int | None = None,
        slices: tuple[int, int] | range | None = None,
        output_type: str = "np",
        batch_size: int = 4,
        tile_order: str = "raster",
        min_gene_overlap: float = 0.5,
        um_per_px: float | None = None,
        perturb: dict[str, float] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        return_dict: bool = True,
    ) -> TeraMindPipelineOutput | tuple:
        r"""Generate the morphology of a region.

        Args:
            genes: transcript counts ``(G, Z, H/gene_bin, W/gene_bin)``, one gene map per section (numpy, torch,
                torch sparse or ``sparse.COO``). H and W must be whole tiles (``scheduler.config.tile_size``).
                Also a ``SpatialVolume`` (genes and names from it) or a points DataFrame (x, y in microns, gene or
                feature_name, z or section; needs ``um_per_px``), binned on the model's grid and padded to tiles.
            gene_names: names of the G genes; aligned to the model panel by name (missing genes are zero).
                Without names, G must equal the model's panel size.
            num_inference_steps: denoising steps (15 official).
            generator: a ``torch.Generator`` (one seed is drawn from it) or an int seed. Each tile's initial
                noise comes from ``(seed, z chunk, row, col)``, so the result does not depend on tile order
                or batch size.
            slices: ``(start, stop)`` image slices to generate (default: all sections). Chunks of 2 slices
                start at ``start``; each is conditioned on 4 gene sections around it.
            output_type: ``"np"`` / ``"pt"`` (float in [-1, 1]) or ``"uint8"``.
            batch_size: tile canvases per model call.
            um_per_px: pixel size for a points DataFrame ``genes`` (ignored otherwise).
            tile_order: ``"raster"`` or ``"reverse"``: the order tiles are visited in a step (no effect on
                the result; sampling is synchronous over the tile grid).
            perturb: ``{gene: factor}`` in the model panel: multiply those genes' counts (0 = knockout) before
                sampling; with the same seed the result differs from the unperturbed one only by these genes.
            callback_on_step_end: ``fn(pipe, step_index, timestep, callback_kwargs) -> dict`` after each step;
                may replace ``latents``.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if tile_order not in TILE_ORDERS:
            raise ValueError(f"tile_order must be one of {TILE_ORDERS}, got {tile_order!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bad = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(bad)} not in {self._callback_tensor_inputs}")

        cfg = self.unet.config
        scheduler: BoundaryAwareScheduler = self.scheduler
        genes, gene_names = as_gene_input(genes, gene_names, um_per_px, cfg.gene_bin, scheduler.config.tile_size)
        gene_tensor, alignment = self._prepare_genes(genes, gene_names, min_gene_overlap)
        if perturb:
            from ..eval.perturb import perturb_genes

            gene_tensor = perturb_genes(gene_tensor, cfg.gene_names, perturb)
        _, sections, bins_h, bins_w = gene_tensor.shape
        height, width = bins_h * cfg.gene_bin, bins_w * cfg.gene_bin
        rows, cols = scheduler.tile_grid(height, width)
        start, stop = _slice_range(slices, sections)
        chunk_starts = z_chunks(start, stop, cfg.num_slices)
        seed = _draw_seed(generator)

        device, dtype = self._execution_device, self.unet.dtype
        tile, halo, bin_ = scheduler.config.tile_size, scheduler.config.halo, cfg.gene_bin
        halo_bins, tile_bins, canvas_bins = halo // bin_, tile // bin_, scheduler.canvas_size // bin_
        # per chunk: its 4 gene sections, padded by the halo so each tile's gene canvas is a slice
        gene_canvases = torch.stack(
            [F.pad(gene_window(gene_tensor, s, cfg.num_slices, cfg.gene_slices), (halo_bins,) * 4) for s in chunk_starts]
        ).to(device=device, dtype=dtype)

        stains, zc = cfg.out_channels, cfg.num_slices
        latents = torch.empty(len(chunk_starts), stains, zc, height, width, dtype=torch.float32)
        for k in range(len(chunk_starts)):
            for r in range(rows):
                for c in range(cols):
                    latents[k, :, :, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = scheduler.initial_noise(
                        seed, (chunk_starts[k], r, c), (stains, zc, tile, tile)
                    )
        latents = latents.to(device)

        scheduler.set_timesteps(num_inference_steps, device=device)
        jobs = [(k, r, c) for k in range(len(chunk_starts)) for r in range(rows) for c in range(cols)]
        if tile_order == "reverse":
            jobs = jobs[::-1]
        noise_pred = torch.empty_like(latents)
        was_training = self.unet.training
        self.unet.eval()  # dropout off while sampling; the mode is restored below (training validation)
        with self.progress_bar(total=len(scheduler.timesteps) * len(jobs)) as progress:
            for i, t in enumerate(scheduler.timesteps):
                padded = scheduler.pad_region(scheduler.scale_model_input(latents, t))
                for b in range(0, len(jobs), batch_size):
                    batch = jobs[b : b + batch_size]
                    canvases = torch.stack([scheduler.tile_canvas(padded[k], r, c) for k, r, c in batch])
                    gene_batch = torch.stack(
                        [gene_canvases[k, ..., r * tile_bins : r * tile_bins + canvas_bins, c * tile_bins : c * tile_bins + canvas_bins] for k, r, c in batch]
                    )
                    eps = self.unet(canvases.to(dtype), t, gene_batch, path="collage").sample.float()
                    for (k, r, c), e in zip(batch, eps):
                        noise_pred[k, :, :, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = e
                    progress.update(len(batch))
                latents = scheduler.step(noise_pred, t, latents).prev_sample
                if callback_on_step_end is not None:
                    local = {"latents": latents, "noise_pred": noise_pred}
                    out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    latents = out.pop("latents", latents)

        self.unet.train(was_training)
        # (chunks, stains, 2, H, W) -> (Z, stains, H, W), trimming a chunk that overhangs `stop`
        volume = latents.permute(0, 2, 1, 3, 4).reshape(-1, stains, height, width)[: stop - start].clamp(-1, 1)
        self.maybe_free_model_hooks()
        images = _to_output_type(volume.cpu(), output_type)
        if not return_dict:
            return (images, alignment)
        return TeraMindPipelineOutput(images=images, gene_alignment=alignment)

    # ------------------------------------------------------------------ interpretation
    @torch.no_grad()
    def gene_attention(self, genes: Any, gene_names: list[str] | None = None, min_gene_overlap: float = 0.5):
        """Gene x gene attention per model patch: ``(sections//2 chunks, patches_h, patches_w, G, G)``.

        Rows are query genes in the model's panel order (``unet.config.gene_names``).
        """
        cfg = self.unet.config
        gene_tensor, _ = self._prepare_genes(genes, gene_names, min_gene_overlap)
        _, sections, bins_h, bins_w = gene_tensor.shape
        per_patch = cfg.sample_size // cfg.gene_bin
        if bins_h % per_patch or bins_w % per_patch:
            raise ValueError(f"gene grid {bins_h}x{bins_w} must be whole patches of {per_patch} bins")
        windows = torch.stack([gene_window(gene_tensor, s, cfg.num_slices, cfg.gene_slices) for s in z_chunks(0, sections, cfg.num_slices)])
        maps = self.unet.gene_attention_maps(windows.to(self._execution_device))
        return maps.reshape(windows.shape[0], bins_h // per_patch, bins_w // per_patch, cfg.num_genes, cfg.num_genes)


def _slice_range(slices: tuple[int, int] | range | None, sections: int) -> tuple[int, int]:
    if slices is None:
        return 0, sections
    start, stop = (slices.start, slices.stop) if isinstance(slices, range) else slices
    if not 0 <= start < stop <= sections:
        raise ValueError(f"slices must satisfy 0 <= start < stop <= {sections} (sections in genes), got {start}, {stop}")
    return start, stop


def _draw_seed(generator: torch.Generator | int | None) -> int:
    if generator is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(generator, int):
        return generator
    if isinstance(generator, list):
        if len(generator) != 1:
            raise ValueError("pass one generator: a region is one sample whose tiles are seeded from it")
        generator = generator[0]
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def _to_output_type(volume: torch.Tensor, output_type: str):
    if output_type == "pt":
        return volume
    if output_type == "uint8":
        return ((volume + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return volume.numpy()
