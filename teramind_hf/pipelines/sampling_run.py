"""One preparation of a sampling run, shared by :class:`TeraMindPipeline` (in memory) and ``generate_to_zarr``
(streamed): the two entry points add only their state backend and their output.

:func:`prepare_sampling` resolves the preset, scheduler, steps and grid schedule, checks every sampling argument
once (numbers, tile order, region and sections against the genes, the exact-mode margin, the panel), draws the
seed, and builds the :class:`TileGrid`, the solver, the gene canvases and the :class:`TileSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..sampling.gene_canvas import GeneCanvases
from ..sampling.grid import TileGrid, exact_region
from ..sampling.presets import Preset
from ..sampling.sampler import TileSampler
from ..sampling.schedule import GridSchedule
from ..sampling.solver_state import TileSolver
from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler
from .acceleration import is_compiled
from .gene_source import GeneSource, RegionGenes
from .preflight import check_generate_arguments, check_region, check_steps_against_schedule

OUTPUT_TYPES = ("np", "pt", "uint8")


@dataclass(frozen=True)
class SamplingPlan:
    """Everything a sampling run is made of, resolved and checked; the caller adds a state and an output."""

    preset: Preset | None
    num_inference_steps: int
    grid_schedule: GridSchedule
    seed: int
    scheduler: BoundaryAwareScheduler
    solver: TileSolver
    region: tuple[int, int, int, int]  # the requested (y0, x0, h, w) px of the genes
    sections: tuple[int, int]  # image sections [start, stop)
    computed: tuple[int, int, int, int]  # the region computed: ``region`` plus the exact-mode margin
    tile_grid: TileGrid  # of ``computed``
    genes: RegionGenes  # of ``computed``, aligned to the model panel
    sampler: TileSampler


def check_sampling_arguments(*, num_inference_steps: Any, batch_size: Any, exact: bool, region: Any) -> None:
    """The arguments of a run that need no data: whole numbers, ``exact`` with a region (the tile order is
    :class:`TileSampler`'s own argument, checked where it is built)."""
    check_generate_arguments(num_inference_steps=num_inference_steps, batch_size=batch_size)
    if exact and region is None:
        raise ValueError("exact=True (--exact) needs a region (the sub-region of the genes to generate exactly)")


def prepare_sampling(
    pipe,
    source: GeneSource,
    *,
    region: tuple[int, int, int, int] | None = None,
    slices: tuple[int, int] | range | None = None,
    num_inference_steps: int | None = None,
    generator: torch.Generator | int | None = None,
    batch_size: int = 4,
    tile_order: str = "raster",
    halo: bool = True,
    exact: bool = False,
    grid: GridSchedule | str | None = None,
    preset: Preset | str | None = None,
    min_gene_overlap: float = 0.5,
    unit_tiles: int = 1,
    eta: float | None = None,
) -> SamplingPlan:
    """The sampling run of ``pipe`` over ``source``: named errors before any work, then the engine's parts.

    ``unit_tiles``: work units of that many tiles a side, aligned to the requested region (the output shards of
    a streamed run); no effect on the bytes. ``eta``: :meth:`TeraMindPipeline.sampling_scheduler`'s.
    """
    chosen, steps, schedule = pipe.sampling_plan(num_inference_steps, grid, preset)
    check_preset_weights(pipe.unet, chosen)
    check_sampling_arguments(num_inference_steps=steps, batch_size=batch_size, exact=exact, region=region)
    check_steps_against_schedule(steps, pipe.scheduler)
    cfg, tile = pipe.unet.config, pipe.config.tile_size
    try:
        probe = pipe.tile_grid(tile, tile)  # the geometry: TileGrid's rules, the only copy of them
    except (ValueError, ZeroDivisionError) as err:
        raise ValueError(
            f"the model's tile geometry does not fit (tile_size={tile}, halo={pipe.config.halo} in the pipeline "
            f"config; patch {cfg.sample_size} px, gene_bin {cfg.gene_bin} in the unet config): {err}"
        ) from err
    if isinstance(slices, range):
        slices = (slices.start, slices.stop)
    *wanted, start, stop = check_region(source.shape, cfg.gene_bin, tile, region, slices, source.location)
    wanted = tuple(wanted)
    computed = wanted
    if exact:
        extent = (source.shape[2] * cfg.gene_bin, source.shape[3] * cfg.gene_bin)
        computed = exact_region(wanted, extent, probe.margin_tiles(steps) * tile, tile)
    tile_grid = pipe.tile_grid(
        computed[2], computed[3], origin=computed[:2], start=start, stop=stop, unit_tiles=unit_tiles,
        unit_origin=((wanted[0] - computed[0]) // tile, (wanted[1] - computed[1]) // tile),
    )
    b = cfg.gene_bin
    genes = RegionGenes(source, cfg, (computed[0] // b, computed[1] // b), (computed[2] // b, computed[3] // b),
                        min_gene_overlap)
    seed = draw_seed(generator)
    scheduler = pipe.sampling_scheduler(chosen, eta)
    solver = TileSolver(scheduler, steps, seed)  # named error for a scheduler whose state cannot be kept per tile
    sampler = TileSampler(
        pipe.unet, solver, tile_grid, GeneCanvases(genes, tile_grid, schedule.all_offsets(steps), halo=halo),
        grid_schedule=schedule, batch_size=batch_size, tile_order=tile_order, halo=halo, device=pipe._execution_device,
        reuse_encoder=reuses_encoder(pipe.unet),
    )
    return SamplingPlan(chosen, steps, schedule, seed, scheduler, solver, wanted, (start, stop), computed, tile_grid,
                        genes, sampler)


def check_preset_weights(unet: torch.nn.Module, preset: Preset | None) -> None:
    """Refuse, by name, a preset that needs the weights of a pipeline shipped in the package (``preset.model``, a
    distilled student) on a model with other weights: its few steps would run another model's denoiser."""
    if preset is None or preset.model is None:
        return
    from safetensors.torch import load_file

    from .. import packaged_model_path

    folder = packaged_model_path(preset.model)
    shipped = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    own = {name.removeprefix("_orig_mod."): value for name, value in unet.state_dict().items()}  # a compiled model too
    same = own.keys() == shipped.keys() and all(
        own[name].shape == value.shape and torch.equal(own[name].detach().cpu(), value.to(own[name].dtype))
        for name, value in shipped.items()
    )
    if not same:
        raise ValueError(
            f"preset: this preset needs the weights shipped in {folder} (a distilled student), and this pipeline's UNet "
            "has other weights; load them with TeraMindPipeline.from_pretrained(teramind_hf.packaged_model_path("
            f"{preset.model!r})) (teramind generate --preset loads them when --model is not given), or pick another preset"
        )


def reuses_encoder(unet: torch.nn.Module) -> bool:
    """Whether the engine passes patch ids (encoder reuse) to ``unet``: not to a compiled model, since the count of
    distinct patches per call is data-dependent (``torch.unique``) and each new count would recompile it
    (docs/performance.md, "Encoder reuse")."""
    return not is_compiled(unet)


def draw_seed(generator: torch.Generator | int | None) -> int:
    """The run's one seed: an int as given, else drawn from the generator (or at random); tiles derive theirs."""
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


def to_output_type(volume: torch.Tensor, output_type: str):
    """A float volume in [-1, 1] as ``"pt"`` (itself), ``"np"`` or ``"uint8"`` (numpy)."""
    if output_type == "pt":
        return volume
    if output_type == "uint8":
        # in place on the first result: the same operations in the same order, one temporary instead of four
        return (volume + 1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return volume.numpy()
