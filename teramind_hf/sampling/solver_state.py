"""Per-tile solver history: any diffusers scheduler stepped tile by tile, in any order, batch or process.

A diffusers scheduler keeps two kinds of state between ``step`` calls:

* *scalar* state (``step_index``, ``lower_order_nums``, ``this_order``, the timestep list, ...): the same for
  every tile and a deterministic function of the step index. :class:`TileSolver` obtains it by replaying
  the steps on a 1-element dummy sample once (cheap, and equally right after a resume);
* *per-sample* tensors (DPM-Solver's ``model_outputs``, UniPC's ``last_sample``; nothing for DDIM or Euler):
  found generically as the attributes holding tensors (or lists of tensors) of the sample's shape. These are
  the *history slots* each tile keeps in the state store; before a batch of tiles is stepped they are swapped
  into a copy of the scalar template, and read back after.

Tiles at one step share the scalar state, so a batch of tiles is stepped in one call with their histories
stacked (the updates are per pixel, so the result does not depend on the batch). A scheduler that keeps state
of another kind (a noise sampler object, a stacked history) is refused by name. Stochastic solvers (those whose
``step`` draws noise: two dry runs with different generators differ) are stepped one tile at a time with a generator seeded by the run
seed, the step and the tile's global index. DPM-Solver++ updates run in place (:mod:`.fused_updates`) where a
replay shows the same bytes as diffusers' expressions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler, _step_params, tile_seed
from . import fused_updates

_DUMMY_SHAPE = (1, 1, 1, 1, 7)  # a shape no schedule tensor has
_PLAIN = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Slot:
    """One per-sample tensor of the solver: ``attribute`` or ``attribute[index]`` of a list."""

    attribute: str
    index: int | None = None

    @property
    def name(self) -> str:
        return self.attribute if self.index is None else f"{self.attribute}.{self.index}"


def _copy_state(state: dict) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def _is_sample(value, shape) -> bool:
    return torch.is_tensor(value) and tuple(value.shape) == tuple(shape)


class TileSolver:
    """Step tiles of a region with ``scheduler``'s solver over ``num_steps`` steps (see module doc).

    ``allow_in_place_updates = False`` (class or instance attribute, before construction) keeps diffusers' own
    update expressions (the benchmarks compare the two).
    """

    allow_in_place_updates = True

    def __init__(self, scheduler: BoundaryAwareScheduler, num_steps: int, seed: int = 0):
        self.scheduler, self.num_steps, self.seed = scheduler, num_steps, seed
        scheduler.set_timesteps(num_steps)
        self.timesteps = list(scheduler.timesteps)  # 0-d tensors, as the solver expects them (Euler: float)
        self.init_noise_sigma = scheduler.init_noise_sigma
        base = copy.deepcopy(scheduler._stepper)
        self._base = base
        self.stochastic = self._draws_noise(base)
        self._before, self.slots, self._present = self._replay(base)
        self._read = self._read_slots()
        self.in_place_updates = self._install_in_place_updates()
        self._scalers: dict = {}
        self._scales: dict[int, bool] = {}
        self.batched_noise = self.stochastic and self._noise_can_be_given()
        self._noise_used = self._steps_using_noise() if self.batched_noise else []
        self._zero_noise: dict[tuple[int, ...], torch.Tensor] = {}

    # ------------------------------------------------------------------ template
    def _draws_noise(self, stepper) -> bool:
        """Whether ``step`` uses its generator (two dry runs with different generators differ)."""
        if "generator" not in _step_params(stepper):
            return False
        runs = []  # every intermediate sample (a last step may not depend on the noise: DDPM's x0 at t = 0)
        for seed in (0, 1):
            work, sample, trace = copy.deepcopy(stepper), torch.full(_DUMMY_SHAPE, 0.1), []
            if hasattr(work, "is_scale_input_called"):
                work.is_scale_input_called = True
            for i, t in enumerate(self.timesteps):
                output = torch.full(_DUMMY_SHAPE, 0.05 * (i + 1))
                sample = self.scheduler.solver_step(work, output, t, sample, torch.Generator().manual_seed(seed)).prev_sample
                trace.append(sample)
            runs.append(torch.cat(trace))
        return not torch.equal(*runs)

    def _replay(self, stepper):
        """(scalar state before each step, history slots, slots holding a tensor after each step)."""
        work = copy.deepcopy(stepper)
        if hasattr(work, "is_scale_input_called"):
            work.is_scale_input_called = True
        states = [_copy_state(vars(work))]
        sample = torch.full(_DUMMY_SHAPE, 0.1)
        for i, t in enumerate(self.timesteps):
            output = torch.full(_DUMMY_SHAPE, 0.05 * (i + 1))
            generator = torch.Generator().manual_seed(0) if self.stochastic else None
            sample = self.scheduler.solver_step(work, output, t, sample, generator).prev_sample
            states.append(_copy_state(vars(work)))
        slots = []
        for name in sorted({k for state in states for k in state}):
            values = [s.get(name) for s in states]
            if any(_is_sample(v, _DUMMY_SHAPE) for v in values):
                slots.append(Slot(name))
            elif any(isinstance(v, (list, tuple)) and any(_is_sample(x, _DUMMY_SHAPE) for x in v) for v in values):
                length = max(len(v) for v in values if isinstance(v, (list, tuple)))
                slots.extend(Slot(name, j) for j in range(length))
            else:
                self._check_supported(name, values)
        present = [[self._get(state, slot) is not None for slot in slots] for state in states[1:]]
        scalars = [{k: v for k, v in state.items() if k not in {s.attribute for s in slots}} for state in states]
        return scalars, slots, present

    def _trajectory(self, keep: list[list[Slot]] | None = None, drop: tuple[int, Slot] | None = None):
        """Replay every step on random dummy tensors (fixed seeds): (x_{t-1} and the slots after each step).

        ``keep[i]``: the only slots step ``i`` is given (the others are None, as when they are not stored);
        ``drop = (i, slot)``: step ``i`` runs without ``slot``. A step that fails without a slot returns None.
        """
        values = torch.Generator().manual_seed(1234)
        sample = torch.randn(_DUMMY_SHAPE, generator=values)
        history: dict[Slot, torch.Tensor] = {}
        trace = []
        for i, t in enumerate(self.timesteps):
            given = {s: v for s, v in history.items() if (keep is None or s in keep[i]) and (drop is None or drop != (i, s))}
            work = self._work(i, given)
            output = torch.randn(_DUMMY_SHAPE, generator=values)
            generator = torch.Generator().manual_seed(i) if self.stochastic else None
            try:
                sample = self.scheduler.solver_step(work, output, t, sample, generator).prev_sample
            except Exception:
                return None
            state = vars(work)
            history = {s: self._get(state, s) for s in self.present_after(i)}
            trace.append((sample, history))
        return trace

    def _read_slots(self) -> list[list[Slot]]:
        """Per step, the history slots whose values the step uses: a slot is unused at step ``i`` when step ``i``
        gives the same x_{t-1} and the same used slots after it without it (e.g. DPM-Solver++ 2M shifts its
        oldest model output out before reading the list). Such slots are neither stored nor read. Checked on the
        whole replay; any difference keeps every slot."""
        full = [[s for s in self.slots if s in self.present_after(i - 1)] if i else [] for i in range(self.num_steps)]
        reference = self._trajectory()
        if reference is None:
            return full
        read: list[list[Slot]] = [[] for _ in range(self.num_steps)]
        used_after: list[Slot] = []
        for i in reversed(range(self.num_steps)):
            for slot in full[i]:
                run = self._trajectory(drop=(i, slot))
                same = run is not None and torch.equal(run[i][0], reference[i][0]) and all(
                    _same(run[i][1].get(s), reference[i][1].get(s)) for s in used_after
                )
                if not same:
                    read[i].append(slot)
            used_after = read[i]
        pruned = self._trajectory(keep=read)
        if pruned is None or not all(torch.equal(a[0], b[0]) for a, b in zip(pruned, reference)):
            return full
        return read

    def _install_in_place_updates(self) -> bool:
        """Use :mod:`.fused_updates` (same bytes, fewer temporaries) when every step of a replay on random tensors
        gives identical x_{t-1} and history with it and without it."""
        if not (self.allow_in_place_updates and fused_updates.supports(self._base)):
            return False
        reference = self._trajectory()
        fused_updates.install(self._base)
        trial = self._trajectory()
        if reference is not None and trial is not None and all(
            torch.equal(a[0], b[0]) and a[1].keys() == b[1].keys() and all(_same(a[1][s], b[1][s]) for s in a[1])
            for a, b in zip(reference, trial)
        ):
            return True
        fused_updates.uninstall(self._base)
        return False

    def _noise_can_be_given(self) -> bool:
        """Whether the solver takes its noise as ``variance_noise`` and uses it exactly as the noise it draws from
        the generator (then a batch of tiles steps in one call, each tile's noise drawn from its own generator)."""
        if "variance_noise" not in _step_params(self._base):
            return False
        for i in range(self.num_steps):
            drawn = self._dry_step(i, generator=torch.Generator().manual_seed(i))
            noise = randn_tensor(_DUMMY_SHAPE, generator=torch.Generator().manual_seed(i), device="cpu", dtype=torch.float32)
            if not torch.equal(drawn, self._dry_step(i, variance_noise=noise)):
                return False
        return True

    def _steps_using_noise(self) -> list[bool]:
        """Per step, whether the given noise changes x_{t-1} (a last step to sigma 0 multiplies it by zero)."""
        noises = [torch.randn(_DUMMY_SHAPE, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
        return [not torch.equal(*(self._dry_step(i, variance_noise=n) for n in noises)) for i in range(self.num_steps)]

    def _dry_step(self, step: int, generator: torch.Generator | None = None, variance_noise: torch.Tensor | None = None):
        """x_{t-1} of ``step`` on fixed dummy tensors (the history it reads filled), its noise drawn or given."""
        work = self._work(step, {s: torch.full(_DUMMY_SHAPE, 0.2) for s in self.needed_at(step)})
        sample, output = torch.full(_DUMMY_SHAPE, 0.1), torch.full(_DUMMY_SHAPE, 0.05 * (step + 1))
        return self.scheduler.solver_step(work, output, self.timesteps[step], sample, generator, variance_noise=variance_noise).prev_sample

    def _check_supported(self, name: str, values: list) -> None:
        kind = type(self._base).__name__
        for value in values:
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if torch.is_tensor(item) and item.ndim == len(_DUMMY_SHAPE) and item.shape[-1] == _DUMMY_SHAPE[-1]:
                    raise ValueError(f"{kind} keeps per-sample state in {name!r} in a form that cannot be kept per tile")
        odd = [v for v in values if not isinstance(v, (*_PLAIN, torch.Tensor, list, tuple, dict))]
        if odd and any(v is not values[0] for v in values):
            raise ValueError(
                f"{kind} keeps state in {name!r} ({type(odd[0]).__name__}) that changes while sampling and cannot be "
                "kept per tile; use a scheduler whose history is tensors of the sample's shape (DDIM, DPM-Solver++, "
                "UniPC, Euler, ...)"
            )

    @staticmethod
    def _get(state: dict, slot: Slot):
        value = state.get(slot.attribute)
        if slot.index is None:
            return value
        return value[slot.index] if isinstance(value, (list, tuple)) and slot.index < len(value) else None

    def present_after(self, step: int) -> list[Slot]:
        """The slots holding a tensor after step ``step``."""
        return [] if step < 0 else [s for s, p in zip(self.slots, self._present[step]) if p]

    def needed_at(self, step: int) -> list[Slot]:
        """The slots step ``step`` reads (what the previous step saves)."""
        return self._read[step]

    def saved_after(self, step: int) -> list[Slot]:
        """The slots to store after step ``step``: those the next step reads (the others stay empty)."""
        return self._read[step + 1] if step + 1 < self.num_steps else []

    # ------------------------------------------------------------------ stepping
    def scale_model_input(self, sample: torch.Tensor, step: int) -> torch.Tensor:
        stepper = self._scalers.get(step)
        if stepper is None:  # one copy of the scalar state per step (scaling only reads it), not one per canvas
            stepper = self._scalers[step] = self._work(step, {})
        return stepper.scale_model_input(sample, self.scheduler.inner_timestep(self.timesteps[step]))

    def scales_model_input(self, step: int) -> bool:
        """Whether :meth:`scale_model_input` changes its input at ``step`` (DDIM and DPM-Solver return it as is)."""
        known = self._scales.get(step)
        if known is None:
            probe = torch.ones(_DUMMY_SHAPE)
            scaled = self.scale_model_input(probe, step)
            known = self._scales[step] = not (scaled is probe and bool((probe == 1).all()))
        return known

    def _work(self, step: int, history: dict[Slot, torch.Tensor]):
        work = copy.copy(self._base)
        work.__dict__.update(_copy_state(self._before[step]))
        if hasattr(work, "is_scale_input_called"):
            work.is_scale_input_called = True  # the sampler scales every canvas (on its own copy)
        for attribute in {s.attribute for s in self.slots}:
            listed = [s for s in self.slots if s.attribute == attribute and s.index is not None]
            if listed:
                setattr(work, attribute, [history.get(s) for s in listed])
            else:
                setattr(work, attribute, history.get(Slot(attribute)))
        return work

    def step(
        self, step: int, model_output: torch.Tensor, sample: torch.Tensor, history: dict[Slot, torch.Tensor],
        tile_keys: list[tuple[int, ...]] | None = None, variance_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[Slot, torch.Tensor]]:
        """Step a batch of tiles at ``step``: ``(x_{t-1}, history after the step)`` (history stacked like the
        batch, holding the slots of :meth:`saved_after`). ``variance_noise``: the batch's
        :meth:`batch_noise`, if drawn beforehand (the sampler draws it while the model runs)."""
        t = self.timesteps[step]
        work = self._work(step, history)
        if not self.stochastic:
            prev = self.scheduler.solver_step(work, model_output, t, sample).prev_sample
        elif self.batched_noise:  # each tile's noise from its own generator, the batch stepped in one call
            if variance_noise is None:
                variance_noise = self.batch_noise(step, tuple(sample.shape), tile_keys)
            noise = variance_noise.to(sample.device)
            prev = self.scheduler.solver_step(work, model_output, t, sample, variance_noise=noise).prev_sample
        elif sample.shape[0] > 1:  # one tile per call, each with its own noise stream
            parts = [
                self.step(step, model_output[j : j + 1], sample[j : j + 1], {s: v[j : j + 1] for s, v in history.items()},
                          [tile_keys[j]])
                for j in range(sample.shape[0])
            ]
            return torch.cat([p[0] for p in parts]), {s: torch.cat([p[1][s] for p in parts]) for s in self.saved_after(step)}
        else:
            prev = self.scheduler.solver_step(work, model_output, t, sample, self.generator(step, tile_keys[0])).prev_sample
        state = vars(work)
        return prev, {s: self._get(state, s) for s in self.saved_after(step)}

    def batch_noise(self, step: int, shape: tuple[int, ...], tile_keys: list[tuple[int, ...]]) -> torch.Tensor | None:
        """The noise a :attr:`batched_noise` solver is given at ``step`` for a batch of ``shape`` (on the CPU; None
        for other solvers): each tile's part drawn from its own :meth:`generator`, straight into the batch tensor
        (the values of ``randn_tensor(tile shape, generator)``, an empty tensor filled by ``normal_``, without a
        tensor per tile and a concatenation). At a step whose update does not use its noise (:meth:`uses_noise`)
        nothing is drawn: one zero tensor of the shape, shared (the solver only reads it)."""
        if not self.batched_noise:
            return None
        if not self._noise_used[step]:
            if shape not in self._zero_noise:
                self._zero_noise[shape] = torch.zeros(shape, dtype=torch.float32)
            return self._zero_noise[shape]
        noise = torch.empty(shape, dtype=torch.float32)
        for j, key in enumerate(tile_keys):
            noise[j].normal_(generator=self.generator(step, key))
        return noise

    def uses_noise(self, step: int) -> bool:
        """Whether the noise given at ``step`` changes x_{t-1} (:attr:`batched_noise` solvers)."""
        return bool(self._noise_used[step]) if self.batched_noise else self.stochastic

    def generator(self, step: int, tile_key: tuple[int, ...]) -> torch.Generator:
        """The generator of a stochastic solver's noise at ``step`` for the tile with global key ``tile_key``."""
        return torch.Generator().manual_seed(tile_seed(self.seed, 1, step, *tile_key))
