"""Grid schedules: at which patch-grid offsets the model is evaluated at each step, and how outputs combine.

The model's 64-px patch grid shows in its samples (its output-patch borders, and its input-patch borders half a
patch away). A :class:`GridSchedule` says, per step index, which offsets ``(dy, dx)`` px of that grid the model
runs at:

* ``shifts``: the grid at step ``i`` moves by ``shifts[i % len(shifts)]`` (a function of the step index only,
  so every step stays synchronous over the tile grid and all determinism properties hold);
* ``blend_offsets`` (moved by the step's shift) at the last ``blend_steps`` steps (``"all"``: at every step):
  the model runs at each offset and the outputs are combined per pixel with separable tent weights (raised to
  ``blend_power``) of period ``blend_period`` (default half a patch) that are smallest next to each grid's
  patch borders (input and output borders are half a patch apart, so both lie on the period) and are
  normalised to sum to 1 at every pixel.

``GridSchedule()`` (alias ``"official"``) is the official geometry: no shift, no blend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

Offset = tuple[int, int]
ALL_STEPS = "all"


@dataclass(frozen=True)
class GridSchedule:
    """Per-step grid offsets and blending (see module doc)."""

    shifts: tuple[Offset, ...] = ((0, 0),)
    blend_offsets: tuple[Offset, ...] = ()
    blend_steps: int | str = 0  # the last N steps, or "all"
    blend_period: int | None = None
    blend_power: float = 1.0  # tent ** power before normalising: > 1 leans harder on the grid farthest from its borders

    def __post_init__(self) -> None:
        object.__setattr__(self, "shifts", tuple((int(a), int(b)) for a, b in self.shifts))
        object.__setattr__(self, "blend_offsets", tuple((int(a), int(b)) for a, b in self.blend_offsets))
        if not self.shifts:
            raise ValueError("grid schedule: shifts must hold at least one offset (use ((0, 0),) for none)")
        if self.blend_steps != ALL_STEPS and not (isinstance(self.blend_steps, int) and self.blend_steps >= 0):
            raise ValueError(f"grid schedule: blend_steps must be an integer >= 0 or {ALL_STEPS!r}, got {self.blend_steps!r}")
        if self.blend_steps and len(self.blend_offsets) < 2:
            raise ValueError("grid schedule: blending needs at least two blend_offsets")
        if not self.blend_power > 0:
            raise ValueError(f"grid schedule: blend_power must be > 0, got {self.blend_power}")
        if self.blend_period is not None and self.blend_period < 2:
            raise ValueError(f"grid schedule: blend_period must be >= 2 px, got {self.blend_period}")

    @property
    def is_official(self) -> bool:
        return self.shifts == ((0, 0),) and not self.blend_steps

    def offsets_at(self, step: int, num_steps: int) -> tuple[Offset, ...]:
        """The offsets the model runs at in step ``step`` of ``num_steps``."""
        dy, dx = self.shifts[step % len(self.shifts)]
        if self.blend_steps == ALL_STEPS or (self.blend_steps and step >= num_steps - self.blend_steps):
            return tuple((by + dy, bx + dx) for by, bx in self.blend_offsets)  # the blended set moves with the shift
        return ((dy, dx),)

    def calls_per_tile(self, num_steps: int) -> int:
        """Model calls per tile of a ``num_steps``-step run: one per offset of each step (each offset's canvases are
        one call of the batch)."""
        return sum(len(self.offsets_at(i, num_steps)) for i in range(num_steps))

    def all_offsets(self, num_steps: int) -> set[Offset]:
        return {o for i in range(num_steps) for o in self.offsets_at(i, num_steps)}

    def to_dict(self) -> dict:
        return {k: ([list(o) for o in v] if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "GridSchedule":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"grid schedule: unknown fields {unknown}; known: {known}")
        return cls(**{**data, "shifts": tuple(map(tuple, data.get("shifts", ((0, 0),)))),
                      "blend_offsets": tuple(map(tuple, data.get("blend_offsets", ())))})


GRID_SCHEDULES: dict[str, GridSchedule] = {
    "official": GridSchedule(),
    # four grid offsets blended at the last step(s): the model's 64-px patch grid fades, for more model calls and
    # some high-frequency energy (docs/seams-research.md); "official" stays the default (parity)
    "blend4": GridSchedule(blend_offsets=((0, 0), (0, 16), (16, 0), (16, 16)), blend_steps=1),
    "blend": GridSchedule(blend_offsets=((0, 0), (0, 16), (16, 0), (16, 16)), blend_steps=2),
    # two grids half a patch-border apart, (0,0) and (16,16), blended at every step with squared tent weights: the
    # early steps no longer draw the grid into x_t, for 2x the model calls (the border scores: docs/seams-research.md,
    # benchmarks/sampling_candidates.py)
    "diagonal": GridSchedule(blend_offsets=((0, 0), (16, 16)), blend_steps=ALL_STEPS, blend_power=2.0),
    # the same pair blended at the last step only, offset (0, 0) alone before it: a 3-step sampler costs 4 calls per
    # tile (a few-step student's budget; docs/distillation.md)
    "diagonal-last": GridSchedule(blend_offsets=((0, 0), (16, 16)), blend_steps=1, blend_power=2.0),
    # the same for 3 steps with the first step's grid half a patch off, so that no patch border of the first step
    # lies on one of the later steps' (shifts cycle by step index: step 3 of a longer run would be off again); still
    # 4 calls per tile at 3 steps. The `turbo` student's grid (docs/distillation.md)
    "diagonal-last-shifted": GridSchedule(shifts=((32, 32), (0, 0), (0, 0)), blend_offsets=((0, 0), (16, 16)),
                                          blend_steps=1, blend_power=2.0),
}


def resolve_grid(grid: "GridSchedule | str | dict | None") -> GridSchedule:
    """A schedule from a name in :data:`GRID_SCHEDULES`, a dict (run record) or a schedule."""
    if grid is None:
        return GRID_SCHEDULES["official"]
    if isinstance(grid, GridSchedule):
        return grid
    if isinstance(grid, dict):
        return GridSchedule.from_dict(grid)
    if grid not in GRID_SCHEDULES:
        raise ValueError(f"unknown grid schedule {grid!r}; known: {', '.join(GRID_SCHEDULES)} (or a GridSchedule)")
    return GRID_SCHEDULES[grid]


def tent(length: int, offset: int, period: int) -> torch.Tensor:
    """Weights of ``length`` pixels: a tent of period ``period`` that is smallest next to the borders at
    ``offset + k * period`` and largest between them (pixel centres, so two tents half a period apart sum to 1)."""
    u = (torch.arange(length, dtype=torch.float64) - offset) % period
    return torch.minimum(u + 0.5, period - u - 0.5) / (period / 2)


def blend_weights(offsets: tuple[Offset, ...], tile: int, period: int, power: float = 1.0) -> torch.Tensor:
    """``(len(offsets), tile, tile)`` float32 weights summing to 1 per pixel (tile-periodic: tiles start on the
    period because ``tile`` is a multiple of it)."""
    if tile % period:
        raise ValueError(f"blend_period ({period} px) must divide the tile ({tile} px)")
    raw = torch.stack([(tent(tile, dy, period)[:, None] * tent(tile, dx, period)[None, :]) ** power for dy, dx in offsets])
    total = raw.sum(0)
    if not bool((total > 0).all()):
        raise ValueError(f"blend offsets {offsets} leave pixels with zero total weight")
    return (raw / total).float()
