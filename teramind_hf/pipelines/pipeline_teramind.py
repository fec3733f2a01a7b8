"""TeraMindPipeline: spatial gene expression -> DAPI/PolyT morphology volume, tile by tile, seamlessly."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..data.panel import PanelAlignment
from ..data.volume import physical_memory_bytes
from ..models.unet_genemorph_3d import GeneMorphUNet3DModel
from ..sampling.grid import TileGrid, gene_window, z_chunks
from ..sampling.presets import Preset, resolve_preset, scheduler_from_name
from ..sampling.sampler import tile_noise
from ..sampling.schedule import GridSchedule, resolve_grid
from ..sampling.state import MemoryState
from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler, check_eta
from .gene_source import GeneSource
from .device import check_step_state_fits, resolve_device
from .genes import align_genes_to_model, as_dense_genes, check_counts, perturb_genes
from .inputs import as_gene_input
from .sampling_run import OUTPUT_TYPES, SamplingPlan, prepare_sampling, to_output_type
DEFAULT_GEOMETRY = {"tile_size": 256, "halo": 32, "fill_value": -1.0}
DEFAULT_STEPS = 15  # the official sampler's; a checkpoint may set its own (``num_inference_steps`` in its config)


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


class TeraMindPipeline(DiffusionPipeline):
    r"""Generate morphology (DAPI + PolyT) from spatial gene expression with Tera-MIND.

    Components:
        unet: :class:`GeneMorphUNet3DModel`.
        scheduler: :class:`BoundaryAwareScheduler` (official DDIM), or any diffusers scheduler: it is sampled
            through the official spacing/clip wrapper (``pipe.scheduler = X.from_config(pipe.scheduler.config)``).
    Config:
        tile_size, halo, fill_value: the tile grid (256 px tiles, a 32-px halo, -1 outside the region, official).
        grid: the default grid schedule (a name in ``teramind_hf.sampling.GRID_SCHEDULES`` or a schedule dict):
            ``"official"`` unless the checkpoint says otherwise.
        num_inference_steps: the default number of steps (15 unless the checkpoint says otherwise).
        The embedded default model ships the ``seamless`` sampler this way: its scheduler is DPM-Solver++ (2M SDE),
        its grid ``"diagonal"`` and its steps 8; ``preset="official"`` gives the official DDIM-15 sampler.

    Sampling runs in :class:`teramind_hf.sampling.TileSampler`, the same loop ``teramind generate`` streams.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self, unet: GeneMorphUNet3DModel, scheduler: SchedulerMixin, tile_size: int | None = None,
        halo: int | None = None, fill_value: float | None = None, grid: str | dict | None = None,
        num_inference_steps: int | None = None, eta: float | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        given = {"tile_size": tile_size, "halo": halo, "fill_value": fill_value}
        self.register_to_config(**{k: v if v is not None else DEFAULT_GEOMETRY[k] for k, v in given.items()})
        resolve_grid(grid)  # a bad name fails at load time, naming the known schedules
        self.register_to_config(grid=grid.to_dict() if isinstance(grid, GridSchedule) else (grid or "official"))
        if num_inference_steps is not None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
            raise ValueError(f"num_inference_steps in the pipeline config must be a positive integer, got {num_inference_steps!r}")
        self.register_to_config(num_inference_steps=num_inference_steps or DEFAULT_STEPS)
        check_eta(eta, "eta in the pipeline config")
        self.register_to_config(eta=eta)

    def sampling_plan(
        self, num_inference_steps: int | None, grid: "GridSchedule | str | dict | None", preset: "Preset | str | None"
    ) -> tuple[Preset | None, int, GridSchedule]:
        """(preset, steps, grid schedule) of a call: explicit arguments win over the preset's, which win over the
        pipeline's defaults (the ``num_inference_steps`` and ``grid`` of the pipeline config: 15, official)."""
        chosen = resolve_preset(preset) if preset is not None else None
        if num_inference_steps is None:
            num_inference_steps = chosen.num_inference_steps if chosen else self.config.get("num_inference_steps", DEFAULT_STEPS)
        if grid is None:
            grid = chosen.grid if chosen is not None and chosen.grid is not None else self.config.get("grid")
        return chosen, num_inference_steps, resolve_grid(grid)

    def tile_grid(self, height: int, width: int, **kwargs) -> TileGrid:
        """The :class:`TileGrid` of a ``height x width``-px region with this pipeline's geometry."""
        cfg = self.config
        return TileGrid.for_model(self.unet.config, height, width, tile=cfg.tile_size, halo=cfg.halo,
                                  fill_value=cfg.fill_value, **kwargs)

    def sampling_scheduler(self, preset: Preset | None = None, eta: float | None = None) -> BoundaryAwareScheduler:
        """The scheduler sampling runs with: the preset's, else ``self.scheduler``, wrapped in the official
        spacing/clip rule (a :class:`BoundaryAwareScheduler` is used as is), with ``eta`` if given, else the preset's,
        else (without a preset) the pipeline config's ``eta``, for solvers whose step takes one (TCD's gamma)."""
        scheduler = self.scheduler
        if preset is not None:
            scheduler = scheduler_from_name(preset.scheduler, scheduler, **preset.scheduler_config)
        wrapped = BoundaryAwareScheduler.wrap(scheduler)
        if eta is None:
            eta = self.config.get("eta") if preset is None else preset.eta
        if eta is None:
            return wrapped
        return BoundaryAwareScheduler.from_config({**dict(wrapped.config), "eta": eta})  # checks eta by name

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs):
        """Load from a local folder or a Hub repo id (resolved with ``huggingface_hub.snapshot_download``,
        which honours ``revision``, ``cache_dir``, ``token``, ``local_files_only`` and ``HF_HUB_OFFLINE``)."""
        from .model_folder import check_loading_kwargs, check_pipeline_folder

        check_loading_kwargs(kwargs)
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
        check_pipeline_folder(path)
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
    def prepare_sampling(self, source: GeneSource, **kwargs) -> SamplingPlan:
        """The one preparation of a sampling run (this call and ``generate_to_zarr``): :func:`prepare_sampling`."""
        return prepare_sampling(self, source, **kwargs)

    def check_inputs(self, output_type: str, callback_on_step_end_tensor_inputs: list[str], step_state_device=None) -> None:
        """Named errors for the arguments only this in-memory call has (the sampling ones: :meth:`prepare_sampling`)."""
        if step_state_device is not None:
            resolve_device(step_state_device, option="step_state_device")  # raises for a device this machine lacks
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        bad = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(bad)} not in {self._callback_tensor_inputs}")

    def check_in_memory(self, plan: SamplingPlan, gene_shape: tuple[int, ...], latents: torch.Tensor | None) -> None:
        """The whole computed region fits in memory, and ``latents`` has the whole genes' layout."""
        grid = plan.tile_grid
        # the in-memory run holds the output and two step buffers of the whole region at once
        needed = 3 * 4 * math.prod(MemoryState.shape(grid, self.unet.config.out_channels))
        if needed > physical_memory_bytes():
            raise ValueError(
                f"region {grid.height} x {grid.width} px x {plan.sections[1] - plan.sections[0]} sections needs about "
                f"{needed / 2**30:.3g} GiB in memory, more than this machine has; pass a smaller region, or stream it "
                "with generate_to_zarr"
            )
        if latents is not None:
            full = (gene_shape[2] * self.unet.config.gene_bin, gene_shape[3] * self.unet.config.gene_bin)
            expected = (len(grid.chunk_starts), self.unet.config.out_channels, grid.num_slices, *full)
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents must have shape {expected} (z chunks, stains, slices, H, W), got {tuple(latents.shape)}")

    def prepare_latents(self, grid: TileGrid, seed: int, init_noise_sigma: float, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise of the grid's region ``(z chunks, stains, slices, h, w)``: the given ``latents``
        (whole-genes layout, cropped to the region) or per-tile noise seeded by global tile coordinates."""
        (y0, x0), h, w = grid.origin, grid.height, grid.width
        if latents is not None:
            return latents[..., y0 : y0 + h, x0 : x0 + w].float().cpu()
        stains = self.unet.config.out_channels
        noise = torch.empty(len(grid.chunk_starts), stains, grid.num_slices, h, w)
        for k in range(len(grid.chunk_starts)):
            for r, c in grid.tiles():
                ys, xs = grid.tile_slices(r, c)
                noise[k, :, :, ys, xs] = tile_noise(grid, seed, k, r, c, stains, init_noise_sigma)
        return noise

    @torch.no_grad()
    def __call__(
        self,
        genes: Any,
        gene_names: list[str] | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | int | None = None,
        slices: tuple[int, int] | range | None = None,
        output_type: str = "np",
        batch_size: int = 4,
        tile_order: str = "raster",
        min_gene_overlap: float = 0.5,
        um_per_px: float | None = None,
        perturb: dict[str, float] | None = None,
        latents: torch.Tensor | None = None,
        region: tuple[int, int, int, int] | None = None,
        exact: bool = False,
        halo: bool = True,
        grid: GridSchedule | str | None = None,
        preset: Preset | str | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        return_dict: bool = True,
        step_state_device: str | torch.device | None = None,
        eta: float | None = None,
    ) -> TeraMindPipelineOutput | tuple:
        r"""Generate the morphology of a region.

        Args:
            genes: transcript counts ``(G, Z, H/gene_bin, W/gene_bin)``, one gene map per section (numpy, torch,
                torch sparse or ``sparse.COO``). H and W must be whole tiles (``config.tile_size``).
                Also a ``SpatialVolume`` (genes and names from it) or a points DataFrame (x, y in microns, gene or
                feature_name, z or section; needs ``um_per_px``), binned on the model's grid and padded to tiles.
            gene_names: names of the G genes; aligned to the model panel by name (missing genes are zero).
                Without names, G must equal the model's panel size.
            num_inference_steps: denoising steps (default: the preset's, else the pipeline config's).
            generator: a ``torch.Generator`` (one seed is drawn from it) or an int seed. Each tile's initial
                noise comes from ``(seed, z chunk, global row, global col)``, so the result does not depend on
                tile order or batch size, and a sub-region draws the noise the whole run draws there.
            slices: ``(start, stop)`` image slices to generate (default: all sections). Chunks of 2 slices
                start at ``start``; each is conditioned on 4 gene sections around it.
            output_type: ``"np"`` / ``"pt"`` (float in [-1, 1]) or ``"uint8"``.
            batch_size: tile canvases per model call.
            um_per_px: pixel size for a points DataFrame ``genes`` (ignored otherwise).
            tile_order: ``"raster"`` or ``"reverse"``: the order tiles are visited in a step (no effect on
                the result; sampling is synchronous over the tile grid).
            perturb: ``{gene: factor}`` in the model panel: multiply those genes' counts (0 = knockout) before
                sampling; with the same seed the result differs from the unperturbed one only by these genes.
            latents: initial noise ``(z chunks, stains, 2, H, W)`` for the whole genes (default: seeded per tile).
            region: ``(y0, x0, h, w)`` px (whole tiles) of the genes to generate (default: all). Alone it
                generates that sub-region as a region of its own (fill outside it).
            exact: with ``region``, compute the region plus the margin the dependency cone of the steps needs
                (``TileGrid.margin_tiles``), so the output equals the same pixels of the run over all the genes.
            halo: False for the naive-tiling baseline (each tile alone).
            grid: grid schedule (name in ``teramind_hf.sampling.GRID_SCHEDULES`` or a ``GridSchedule``;
                default the preset's, else the pipeline config's ``grid``).
            preset: a name in ``teramind_hf.sampling.PRESETS`` (``"official"``, ``"fast"``): scheduler, steps
                and grid schedule for this call (explicit ``num_inference_steps`` / ``grid`` win).
            callback_on_step_end: ``fn(pipe, step_index, timestep, callback_kwargs) -> dict`` after each step;
                may replace ``latents`` (``(z chunks, stains, 2, h, w)`` of the computed region).
            step_state_device: where the step state (x_t and the solver history of the whole region, float32) lives
                and the solver steps it: default the model's device (after ``pipe.to("cuda")`` the whole step runs
                on the GPU); ``"cpu"`` keeps it in host memory (a region too large for the accelerator's memory;
                ``generate_to_zarr`` streams larger ones). The noise is drawn on the CPU either way.
            eta: the step's ``eta`` for solvers that take one, in [0, 1] (TCD's gamma: 0 deterministic, 1 fresh noise
                at every step; DDIM's eta); default the pipeline config's ``eta`` (without a preset), else the
                solver's own default. Other solvers ignore it.
        """
        # 1. the arguments only this call has
        self.check_inputs(output_type, callback_on_step_end_tensor_inputs, step_state_device)
        # 2. the genes, as a tensor aligned to the model panel
        genes, gene_names = as_gene_input(genes, gene_names, um_per_px, self.unet.config.gene_bin, self.config.tile_size)
        gene_tensor, alignment = self._prepare_genes(genes, gene_names, min_gene_overlap)
        if perturb:
            gene_tensor = perturb_genes(gene_tensor, self.unet.config.gene_names, perturb)
        # 3. the sampling run (checked once, as for generate_to_zarr), in memory
        plan = self.prepare_sampling(
            GeneSource(gene_tensor, None, "genes"), region=region, slices=slices, num_inference_steps=num_inference_steps,
            generator=generator, batch_size=batch_size, tile_order=tile_order, halo=halo, exact=exact, grid=grid,
            preset=preset, min_gene_overlap=min_gene_overlap, eta=eta,
        )
        self.check_in_memory(plan, tuple(gene_tensor.shape), latents)
        tile_grid, wanted, num_inference_steps = plan.tile_grid, plan.region, plan.num_inference_steps
        state_device = self._execution_device if step_state_device is None else resolve_device(step_state_device, option="step_state_device")
        check_step_state_fits(MemoryState.nbytes(tile_grid, plan.solver.slots, self.unet.config.out_channels), state_device)
        state = MemoryState(tile_grid, plan.solver.slots, self.unet.config.out_channels, device=state_device)
        # 4. the initial noise: per tile from the seed (on the CPU, whatever the device), or the given latents
        noise = self.prepare_latents(tile_grid, plan.seed, plan.solver.init_noise_sigma, latents)

        callback = None
        if callback_on_step_end is not None:
            def callback(step, timestep, latents_fn, model_output_fn):
                local = {}
                if "latents" in callback_on_step_end_tensor_inputs:
                    local["latents"] = latents_fn()
                if "noise_pred" in callback_on_step_end_tensor_inputs:
                    local["noise_pred"] = model_output_fn()
                out = callback_on_step_end(self, step, timestep, local) or {}
                return out.get("latents")

        # 5. the steps
        plan.sampler.run(state, chunks_together=True, latents=noise, callback=callback,
                    progress_bar=lambda total: self.progress_bar(total=total))

        # 6. the output: (chunks, stains, 2, h, w) -> (Z, stains, H, W) of the requested region, trimming an overhanging chunk
        y, x = wanted[0] - tile_grid.origin[0], wanted[1] - tile_grid.origin[1]
        final = state.x[num_inference_steps % 2][..., y : y + wanted[2], x : x + wanted[3]].cpu()
        stains = final.shape[1]
        volume = final.permute(0, 2, 1, 3, 4).reshape(-1, stains, wanted[2], wanted[3])
        volume = volume[: tile_grid.stop - tile_grid.start].clamp(-1, 1)
        self.maybe_free_model_hooks()
        images = to_output_type(volume, output_type)
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
