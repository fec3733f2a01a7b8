"""The tile-sampling engine: geometry, grid schedules, solver history, state backends and the one loop.

* :mod:`.grid` -- :class:`TileGrid`: tiles, halos, patches, z chunks, gene windows, work units;
* :mod:`.schedule` -- :class:`GridSchedule`: grid offsets and blending per step;
* :mod:`.solver_state` -- :class:`TileSolver`: any diffusers scheduler stepped tile by tile;
* :mod:`.state` -- :class:`MemoryState`, :class:`ZarrState`: x_t, solver history and progress per tile;
* :mod:`.gene_canvas` -- :class:`GeneCanvases`: each tile's genes read once per z chunk;
* :mod:`.sampler` -- :class:`TileSampler`: the region/step/tile loop;
* :mod:`.presets` -- named (scheduler, steps, grid schedule) presets and scheduler names.
"""

from .._lazy import lazy_attributes

_ATTRIBUTES = {
    "TileGrid": ".grid",
    "exact_region": ".grid",
    "GridSchedule": ".schedule",
    "GRID_SCHEDULES": ".schedule",
    "resolve_grid": ".schedule",
    "TileSolver": ".solver_state",
    "MemoryState": ".state",
    "ZarrState": ".state",
    "GeneCanvases": ".gene_canvas",
    "TileSampler": ".sampler",
    "Processes": ".sampler",
    "PRESETS": ".presets",
    "Preset": ".presets",
    "scheduler_from_name": ".presets",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)
__all__ = sorted(_ATTRIBUTES)
