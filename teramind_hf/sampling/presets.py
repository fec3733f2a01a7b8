"""Scheduler names and sampling presets (a solver, a number of steps and a grid schedule, by name).

Scheduler names (``teramind generate --scheduler NAME``, ``preset.scheduler``): ``ddim`` (official: DDIM with the
official spacing and clip), ``dpm`` (DPM-Solver++ multistep, ``algorithm_type="dpmsolver++"``), ``dpm-sde``
(its stochastic SDE variant, ``"sde-dpmsolver++"``: fresh noise per tile and step, seeded by the run seed, the
step and the tile's global index), ``unipc`` (UniPC multistep), ``euler`` (Euler discrete), or any diffusers
scheduler class name. Each is built from the pipeline scheduler's training schedule
(``X.from_config(pipe.scheduler.config)``) and sampled through the official clip rule
(:class:`BoundaryAwareScheduler`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .schedule import GridSchedule

SCHEDULER_NAMES = {
    "ddim": ("DDIMScheduler", {}),
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
}


@dataclass(frozen=True)
class Preset:
    """A named way to sample: scheduler name (see module doc) + its options, steps, grid schedule, the solver's
    ``eta`` (None: its own default), and ``model``: the pipeline folder shipped in the package whose weights the
    preset needs (a distilled student samples well only with its own weights; None: any model)."""

    scheduler: str
    num_inference_steps: int
    grid: GridSchedule | str | None = None  # None: the pipeline's default grid schedule
    scheduler_config: dict = field(default_factory=dict)
    eta: float | None = None
    model: str | None = None


PRESETS: dict[str, Preset] = {
    # the official sampler: DDIM, 15 steps, official grid (parity with official outputs); the reference that the
    # other presets are judged against
    "official": Preset("ddim", 15, "official"),
    # DPM-Solver++ (2M, deterministic) in 5 steps with timesteps uniform in log-SNR (``use_lu_lambdas``; diffusers'
    # default spacing ends its last step at t=200 and blurs or, with the SDE variant, over-sharpens PolyT). It keeps
    # the pipeline's grid: on the embedded model's "diagonal" grid that is 10 model calls per tile, 5 on the official
    # grid (tests/test_preset_call_counts.py). It is not cheaper than the default by half, and on held-out regions
    # it misses some of DDIM-15's realism criteria: docs/seams-research.md ("Presets on held-out regions")
    "fast": Preset("dpm", 5, scheduler_config={"use_lu_lambdas": True}),
    # the embedded default model's own sampler (its scheduler, grid and steps): DPM-Solver++ (2M SDE) in 8 steps on
    # the "diagonal" grid (two grid offsets blended at every step), 16 model calls per tile, one more than the
    # official sampler. It hides the model's 64-px patch grid; on held-out regions it meets DDIM-15's realism
    # criteria and the 256-px border criterion only just (docs/seams-research.md, with the command)
    "seamless": Preset("dpm-sde", 8, "diagonal"),
    # UniPC (diffusers defaults, bh2, order 2) on its own spacing, 4 steps: the fewest calls of the presets, 8 per
    # tile on the embedded model's "diagonal" grid (4 on the official grid; tests/test_preset_call_counts.py). Its
    # samples are smoother than DDIM-15's: on held-out regions it misses both high-frequency criteria and the
    # nucleus-area one (docs/seams-research.md); its whole-brain cost is in docs/performance.md
    "fastest": Preset("unipc", 4),
    # the embedded default model's distilled 3-step student (teramind_hf/turbo_model, `teramind distill`), sampled
    # with TCD on the "diagonal-last-shifted" grid (the first step half a patch off, then one offset, both at the
    # last step): 4 model calls per tile, a quarter of the default's. Its own weights only (checked by the
    # pipeline). Its held-out figures against DDIM-15's criteria, and how it was trained: docs/distillation.md
    # ("The second `turbo`")
    "turbo": Preset("TCDScheduler", 3, "diagonal-last-shifted", {"original_inference_steps": 3}, eta=1.0,
                    model="turbo_model"),
}


def resolve_preset(preset: "Preset | str") -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return PRESETS[preset]


def scheduler_from_name(name: str, base_scheduler, **options):
    """The scheduler called ``name`` (see module doc) on ``base_scheduler``'s training schedule."""
    import diffusers

    from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler, solver_class

    if name in SCHEDULER_NAMES:
        class_name, defaults = SCHEDULER_NAMES[name]
    elif isinstance(getattr(diffusers, name, None), type):
        class_name, defaults = name, {}
    else:
        raise ValueError(
            f"scheduler {name!r} is not one of {', '.join(SCHEDULER_NAMES)} or a diffusers scheduler class name"
        )
    config = dict(base_scheduler.config)
    if class_name == "DDIMScheduler":
        # the official sampler keeps the official spacing: a BoundaryAwareScheduler on the same schedule
        base = BoundaryAwareScheduler.wrap(base_scheduler)
        keep = {k: v for k, v in dict(base.config).items() if not k.startswith("_") and k not in ("inner_scheduler", "inner_config")}
        return BoundaryAwareScheduler(**{**keep, "inner_scheduler": "DDIMScheduler", "inner_config": options or None,
                                         "timestep_spacing_mode": "official"})
    return solver_class(class_name).from_config(config, **{**defaults, **options})
