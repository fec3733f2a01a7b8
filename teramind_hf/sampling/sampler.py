"""TileSampler: THE region / step / tile loop of Tera-MIND sampling (in memory and streamed alike).

One reusable object with explicit geometry (:class:`TileGrid`), state (:mod:`.state`), solver
(:class:`TileSolver`), gene canvases and grid schedule. A run, for each group of z chunks (all chunks at once
in memory; one after another when streaming, so the buffers hold one chunk):

1. *initial noise* per tile from a generator seeded by ``(seed, z chunk start, global row, global col)``
   (or the ``latents`` given), written to parity 0;
2. for each step ``i``, for each batch of tiles (in the requested order, by default in bands of two tile rows so
   that a batch's canvases share patches, each encoded once): each tile's canvas is read from
   parity ``i % 2`` (tile + halo, ``fill_value`` outside the region; larger under a grid offset), the model
   runs on the batch at every offset of the step (outputs blended per pixel if several), the solver steps each
   tile with that tile's history, and x_{t-1}, the history and the progress record are written to parity
   ``(i + 1) % 2`` (the last step goes to ``write_final(batch, x_0)`` if given), by a write-behind thread
   (:mod:`.write_behind`) drained before the step ends. A prefetch thread reads the next batch (canvases, gene
   canvases, x_t, history, a stochastic solver's noise) while the model runs on the current one, when the model
   runs off the CPU: reads touch parity ``i % 2`` only, writes parity ``(i + 1) % 2`` only;
3. a barrier between steps when several processes share the state (work units are split across processes
   with accelerate's ``split_between_processes``).

Nothing in a step depends on which tiles ran before it in the same step, so the result is independent of
tile order, batch size, number of processes and interruption (resume continues from the progress record).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

from ..schedulers.scheduling_boundary_aware import tile_seed
from .gene_canvas import GeneCanvases
from .grid import TileGrid
from .model_inputs import ModelInputs
from .schedule import GridSchedule, blend_weights
from .solver_state import TileSolver
from .state import TileState
from .write_behind import WriteBehind

TILE_ORDERS = ("raster", "reverse")


def tile_noise(grid: TileGrid, seed: int, k: int, row: int, col: int, stains: int, sigma: float = 1.0) -> torch.Tensor:
    """Initial noise ``(stains, slices, tile, tile)`` of one tile, seeded by ``(seed, z chunk start, global row,
    global col)`` alone (so a sub-region of a larger run draws the same noise there)."""
    generator = torch.Generator(device="cpu").manual_seed(tile_seed(seed, grid.chunk_starts[k], *grid.global_index(row, col)))
    return torch.randn((stains, grid.num_slices, grid.tile, grid.tile), generator=generator, dtype=torch.float32) * sigma


class _Done:
    """A result already computed, with a future's ``result()`` (the sampler without a prefetch thread)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Processes:
    """The processes sharing a run: accelerate's ``PartialState`` (or one process if None)."""

    def __init__(self, state=None):
        self.state = state

    @property
    def num_processes(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    def split(self, items: list) -> list:
        if self.num_processes == 1:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def wait(self) -> None:
        if self.num_processes > 1:
            self.state.wait_for_everyone()


class TileSampler:
    """Sample a region tile by tile (see module doc).

    Args:
        unet: the :class:`GeneMorphUNet3DModel` (collage path).
        solver: a :class:`TileSolver` (scheduler, steps, seed).
        grid: the region's :class:`TileGrid`.
        genes: :class:`GeneCanvases` of the region.
        grid_schedule: offsets and blending per step (:class:`GridSchedule`; default official).
        batch_size: canvases per model call; tile_order: ``"raster"`` or ``"reverse"`` (no effect on bytes).
        halo: False for the naive-tiling baseline (each tile alone, no neighbour halo; official grid only).
        reuse_encoder: encode each patch shared by canvases of one model call once (:mod:`..models.patch_reuse`;
            same bytes; canvases with a halo only, since naive tiles each see their own fill).
        processes: :class:`Processes` sharing a persistent state (default: this process alone).
        device, dtype: where and in which dtype the model runs. The step state (x_t, history) and the solver
            step stay float32 on the state's own device (:attr:`TileState.device`: the CPU, or the accelerator
            for a :class:`MemoryState` placed there); initial and solver noise are drawn on the CPU.

    The prefetch thread runs when the model runs off the CPU (``prefetch_on_cpu`` turns it on for a CPU model: on
    the CPU the model call and the reads share the same cores, so there is nothing to overlap, only hand-offs).
    """

    prefetch_on_cpu = False

    def __init__(
        self, unet, solver: TileSolver, grid: TileGrid, genes: GeneCanvases, *, grid_schedule: GridSchedule | None = None,
        batch_size: int = 4, tile_order: str = "raster", halo: bool = True, processes: Processes | None = None,
        device=None, dtype=None, reuse_encoder: bool = True,
    ):
        if tile_order not in TILE_ORDERS:
            raise ValueError(f"tile_order must be one of {TILE_ORDERS}, got {tile_order!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.grid_schedule = grid_schedule or GridSchedule()
        if not halo and not self.grid_schedule.is_official:
            raise ValueError("the naive-tiling baseline (no halo) runs on the official grid only")
        self.unet, self.solver, self.grid, self.genes = unet, solver, grid, genes
        self.batch_size, self.tile_order, self.halo = batch_size, tile_order, halo
        self.reuse_encoder = reuse_encoder and halo
        self.processes = processes or Processes()
        self.device = device if device is not None else unet.device
        self.dtype = dtype if dtype is not None else unet.dtype
        self.stains = unet.config.out_channels
        self.model_inputs = ModelInputs(grid, solver, genes, self.grid_schedule, stains=self.stains, halo=halo,
                                        reuse_encoder=self.reuse_encoder)
        period = self.grid_schedule.blend_period or grid.patch // 2
        self._weights = {}
        for step in range(solver.num_steps):
            offsets = self.model_inputs.offsets(step)
            if len(offsets) > 1 and offsets not in self._weights:
                self._weights[offsets] = blend_weights(offsets, grid.tile, period, self.grid_schedule.blend_power)
        self.tile_steps_run = 0
        self._weights_moved: dict = {}

    # ------------------------------------------------------------------ jobs
    def my_tiles(self) -> list[tuple[int, int]]:
        """This process's tiles: its share of the work units, in raster order."""
        return [tile for unit in self.processes.split(self.grid.work_units()) for tile in unit]

    def _jobs(self, chunks: list[int], stage: int, snapshot: np.ndarray | None) -> list[tuple[int, int, int]]:
        jobs = [(k, r, c) for k in chunks for r, c in self.grid.band_order(self.my_tiles())]
        if snapshot is not None:
            jobs = [(k, r, c) for k, r, c in jobs if snapshot[k, r, c] < stage + 1]
        return jobs[::-1] if self.tile_order == "reverse" else jobs

    def chunk_groups(self, together: bool) -> list[list[int]]:
        ks = list(range(len(self.grid.chunk_starts)))
        return [ks] if together else [[k] for k in ks]

    # ------------------------------------------------------------------ model inputs
    def read_model_inputs(self, state: TileState, parity: int, batch, step: int) -> list[tuple]:
        """A batch's model inputs at a step, per offset of the step: ``(offset, canvases, gene canvases, patch ids)``
        (:class:`~.model_inputs.ModelInputs`)."""
        return self.model_inputs.read(state, parity, batch, step)

    def read_batch(self, state: TileState, parity: int, batch, step: int) -> dict:
        """Everything a batch's step reads before the model runs: its model inputs, x_t and solver history, and a
        stochastic solver's noise (a pure function of seed, step and tile). Reads only parity ``step % 2``, which
        no write of the step touches, so it may run while the previous batch's model runs (prefetch)."""
        grid = self.grid
        inputs = self.read_model_inputs(state, parity, batch, step)
        x = self.model_inputs.x_in_canvases(inputs, step)  # no copy of x_t where a canvas holds it
        if x is None:
            x = torch.empty((len(batch), self.stains, grid.num_slices, grid.tile, grid.tile), device=state.device)  # float32
            for j, (k, r, c) in enumerate(batch):
                state.read_x_into(parity, k, *grid.tile_slices(r, c), x[j])
        history = {s: torch.empty_like(x) for s in self.solver.needed_at(step)}
        for j, (k, r, c) in enumerate(batch):
            state.read_history_into(parity, k, r, c, {s: v[j] for s, v in history.items()})
        keys = [(grid.chunk_starts[k], *grid.global_index(r, c)) for k, r, c in batch]
        return {
            "inputs": inputs, "x": x, "history": history, "keys": keys,
            "noise": self.solver.batch_noise(step, tuple(x.shape), keys),
        }

    def model_output(self, state: TileState, parity: int, batch, step: int, inputs: list[tuple] | None = None) -> torch.Tensor:
        """The (blended) model output of a batch of tiles at a step: ``(B, stains, slices, tile, tile)``
        (``inputs``: the batch's :meth:`read_model_inputs`, if read beforehand)."""
        grid, t = self.grid, self.solver.timesteps[step]
        if inputs is None:
            inputs = self.read_model_inputs(state, parity, batch, step)
        weights = self._weights.get(tuple(offset for offset, *_ in inputs))
        combined = None
        for j, (offset, canvases, genes, ids) in enumerate(inputs):
            out = self.unet(canvases.to(device=self.device, dtype=self.dtype), t,
                            genes.to(device=self.device, dtype=self.dtype), path="collage", patch_ids=ids).sample
            box = grid.canvas_box(0, 0, offset)
            # cropped where the model ran, then moved: from a GPU only the tile comes back (256^2 of the collage's
            # 320^2 or 384^2 px per section); on the step state's own device and dtype both are views, as before
            out = out[..., box.crop_y : box.crop_y + grid.tile, box.crop_x : box.crop_x + grid.tile]
            out = out.to(device=state.device, dtype=torch.float32)
            if weights is None:
                return out
            # in place on this call's own output (no temporaries): the same products and sums as out * w + ...
            weight = self._weights_on(weights, j, out.device)
            if combined is None:
                combined = out.mul_(weight)
            else:
                combined.add_(out.mul_(weight))
        return combined

    def _weights_on(self, weights: torch.Tensor, j: int, device: torch.device) -> torch.Tensor:
        """Blend weights of offset ``j`` on the step state's device (copied there once)."""
        if weights.device == device:
            return weights[j]
        key = (id(weights), device)
        if key not in self._weights_moved:
            self._weights_moved[key] = weights.to(device)
        return self._weights_moved[key][j]

    # ------------------------------------------------------------------ stages
    def initial_noise(self, k: int, row: int, col: int, latents: torch.Tensor | None) -> torch.Tensor:
        if latents is not None:
            ys, xs = self.grid.tile_slices(row, col)
            return latents[k, :, :, ys, xs].float().cpu()
        return tile_noise(self.grid, self.solver.seed, k, row, col, self.stains, self.solver.init_noise_sigma)

    def run_noise(self, state: TileState, jobs, latents, writer: WriteBehind) -> None:
        state.begin_step()
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b : b + self.batch_size]
            noise = [self.initial_noise(k, r, c, latents) for k, r, c in batch]
            writer.submit(functools.partial(self._write_noise, state, batch, noise))
        self.tile_steps_run += len(jobs)

    def _write_noise(self, state: TileState, batch, noise: list[torch.Tensor]) -> None:
        for (k, r, c), value in zip(batch, noise):
            state.write_x(0, k, r, c, value)
        self._mark(state, batch, 0)

    @staticmethod
    def _mark(state: TileState, batch, stage: int) -> None:
        """Record a batch's tiles as done with ``stage``, after all their data: a recorded tile is complete."""
        for k in dict.fromkeys(k for k, _, _ in batch):
            state.mark_many(k, [(r, c) for kk, r, c in batch if kk == k], stage)

    def run_step(
        self, state: TileState, step: int, jobs, write_final: Callable | None, model_outputs: dict | None, writer: WriteBehind,
        prefetch: ThreadPoolExecutor | None = None,
    ) -> None:
        """One step of ``jobs``: each batch read (by ``prefetch``, one batch ahead, while the model runs on the
        current one; else in turn), its model run, its solver step, its writes handed to ``writer``."""
        parity = step % 2
        state.begin_step()
        batches = [jobs[b : b + self.batch_size] for b in range(0, len(jobs), self.batch_size)]

        def read(n: int):
            if prefetch is None:
                return _Done(self.read_batch(state, parity, batches[n], step))
            return prefetch.submit(self.read_batch, state, parity, batches[n], step)

        ahead = read(0) if batches else None
        for n, batch in enumerate(batches):
            data = ahead.result()
            ahead = read(n + 1) if n + 1 < len(batches) else None
            output = self.model_output(state, parity, batch, step, data["inputs"])
            prev, after = self.solver.step(step, output, data["x"], data["history"], data["keys"], data["noise"])
            self.model_inputs.give_back(data["inputs"], [prev, *after.values()])
            if model_outputs is not None:
                for j, (k, r, c) in enumerate(batch):
                    model_outputs.setdefault(k, {})[(r, c)] = output[j]
            writer.submit(functools.partial(self._write_step, state, step, batch, prev, after, write_final))
            self.tile_steps_run += len(batch)

    def _write_step(self, state: TileState, step: int, batch, prev: torch.Tensor, after: dict, write_final) -> None:
        """A batch's results (x_{t-1} and history, or the output at the last step), then its progress records."""
        parity, last = step % 2, step == self.solver.num_steps - 1
        if last and write_final is not None:
            write_final(batch, prev)
        else:
            for j, (k, r, c) in enumerate(batch):
                state.write_x(1 - parity, k, r, c, prev[j])
                if not last:
                    state.write_history(1 - parity, k, r, c, {s: v[j] for s, v in after.items()})
        self._mark(state, batch, step + 1)

    def run(
        self, state: TileState, *, snapshot: np.ndarray | None = None, chunks_together: bool = True,
        latents: torch.Tensor | None = None, write_final: Callable | None = None, progress_bar: Callable | None = None,
        callback: Callable | None = None,
    ) -> int | None:
        """All stages not yet done (per ``snapshot``); returns the first stage that had work if resumed.

        ``callback(step, timestep, latents_fn, model_output_fn) -> latents or None`` runs after each step (the
        pipeline's ``callback_on_step_end``); ``progress_bar(total)`` is a context manager with ``update``.
        """
        steps = self.solver.num_steps
        plan = []
        for chunks in self.chunk_groups(chunks_together):
            first = -1 if snapshot is None else int(min(snapshot[k].min() for k in chunks))
            if first < steps:
                plan.append((chunks, first))
        resumed = plan[0][1] if snapshot is not None and snapshot.max() >= 0 and plan else None
        total = sum(steps - max(first, 0) for _, first in plan)
        was_training = self.unet.training
        self.unet.eval()  # dropout off while sampling; restored after (training validation)
        try:
            bar_context = progress_bar(total) if progress_bar else nullcontext()
            use_prefetch = torch.device(self.device).type != "cpu" or self.prefetch_on_cpu
            # one batch ahead
            prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teramind-prefetch") if use_prefetch else None
            with bar_context as bar, torch.no_grad(), WriteBehind() as writer, prefetch or nullcontext():
                for chunks, first in plan:
                    for k in chunks:
                        self.genes.load(k, self.my_tiles())  # once per z chunk, for all its steps
                    for stage in range(first, steps):
                        jobs = self._jobs(chunks, stage, snapshot if stage == first else None)
                        outputs = {} if callback is not None else None
                        if stage == -1:
                            self.run_noise(state, jobs, latents, writer)
                        else:
                            self.run_step(state, stage, jobs, write_final, outputs, writer, prefetch)
                        writer.drain()  # every write of this stage is done before anyone reads it
                        self.processes.wait()  # step i + 1 reads what every process wrote at step i
                        if stage >= 0:
                            if callback is not None:
                                self._callback(callback, state, stage, chunks, outputs)
                            if bar is not None:
                                bar.update(1)
                    for k in chunks:
                        self.genes.release(k)
        finally:
            self.unet.train(was_training)
        return resumed

    def _callback(self, callback, state: TileState, step: int, chunks: list[int], outputs: dict) -> None:
        parity = (step + 1) % 2

        def model_output() -> torch.Tensor:
            grid = self.grid
            full = torch.zeros(len(chunks), self.stains, grid.num_slices, grid.height, grid.width)
            for i, k in enumerate(chunks):
                for (r, c), value in outputs.get(k, {}).items():
                    ys, xs = grid.tile_slices(r, c)
                    full[i, :, :, ys, xs] = value
            return full

        replaced = callback(step, self.solver.timesteps[step], lambda: state.latents(parity, chunks), model_output)
        if replaced is not None:
            state.set_latents(parity, chunks, replaced)
