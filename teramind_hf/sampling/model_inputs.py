"""ModelInputs: what the model reads for a batch of tiles at a step, per offset of the step's grid: the canvases
(x_t of the tile and its halo, scaled by the solver, ``fill_value`` outside the region), the gene canvases and the
patch ids of the encoder reuse.

Canvases are cut into reused buffers (:class:`~.canvas_buffers.CanvasBuffers`), handed back by the sampler once
the batch is stepped. Under a blended grid the unshifted canvas lies inside the shifted one and is copied out of
it rather than cut again from the step buffers' tiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .canvas_buffers import CanvasBuffers
from .gene_canvas import GeneCanvases
from .grid import TileGrid
from .schedule import GridSchedule
from .solver_state import TileSolver
from .state import TileState


class ModelInputs:
    """The model inputs of batches of tiles (settings here, the state and the batch per call).

    Args:
        grid: the region's :class:`TileGrid`; solver: the :class:`TileSolver` (its input scaling per step);
        genes: :class:`GeneCanvases` of the region; grid_schedule: the offsets of each step;
        stains: channels of x_t; halo: False for the naive-tiling baseline (each tile alone, the fill around it);
        reuse_encoder: give each canvas's patch ids (canvases with a halo only).
    """

    def __init__(self, grid: TileGrid, solver: TileSolver, genes: GeneCanvases, grid_schedule: GridSchedule, *,
                 stains: int, halo: bool = True, reuse_encoder: bool = True):
        self.grid, self.solver, self.genes, self.grid_schedule = grid, solver, genes, grid_schedule
        self.stains, self.halo, self.reuse_encoder = stains, halo, reuse_encoder and halo
        self.buffers = CanvasBuffers()
        self._plans: dict[tuple, list[tuple]] = {}

    def offsets(self, step: int) -> tuple:
        return tuple(self.grid.check_offset(o) for o in self.grid_schedule.offsets_at(step, self.solver.num_steps))

    def read(self, state: TileState, parity: int, batch, step: int) -> list[tuple]:
        """A batch's model inputs at a step, per offset of the step: ``(offset, canvases, gene canvases, patch ids)``."""
        grid, offsets = self.grid, self.offsets(step)
        canvases = {}
        for offset, source in self.read_plan(offsets):
            if source is None:
                canvases[offset] = self.read_canvases(state, parity, batch, step, offset)
            else:
                canvases[offset] = self.copy_within(canvases[source[0]], grid.canvas_box(0, 0, offset), *source[1:])
        inputs = []
        for offset in offsets:
            genes = torch.stack([self.genes.canvas(k, r, c, offset) for k, r, c in batch])
            # a canvas's patch at a region position holds the step buffer there (or the fill), whatever the tile
            ids = torch.stack([grid.patch_ids(k, r, c, offset) for k, r, c in batch]) if self.reuse_encoder else None
            inputs.append((offset, canvases[offset], genes, ids))
        return inputs

    def read_plan(self, offsets: tuple) -> list[tuple]:
        """How a step with ``offsets`` gets its canvases (worked out once per set of offsets): ``(offset, source)``
        pairs, larger canvases first, ``source`` None (cut from the step buffers) or ``(offset read before, dy, dx)``
        when this canvas's box lies inside that one's at ``(dy, dx)`` (canvases with a halo; the diagonal grid's
        unshifted canvas lies inside its shifted one).

        Every canvas pixel is the scaled x_t at its region position, or the fill outside the region, whichever
        offset cut it (the input scaling is per pixel, the step's alone), so copying it out of the larger canvas is
        the same bytes as reading the step buffers again; it reads one recently written tensor instead of the
        several cached tiles a canvas is cut from."""
        plan = self._plans.get(offsets)
        if plan is None:
            boxes = {o: self.grid.canvas_box(0, 0, o) for o in offsets}
            plan = []
            for offset in sorted(offsets, key=lambda o: -boxes[o].height * boxes[o].width):
                box, source = boxes[offset], None
                for other, _ in plan if self.halo else ():
                    outer = boxes[other]
                    dy, dx = box.y0 - outer.y0, box.x0 - outer.x0
                    if 0 <= dy and 0 <= dx and dy + box.height <= outer.height and dx + box.width <= outer.width:
                        source = (other, dy, dx)
                        break
                plan.append((offset, source))
            self._plans[offsets] = plan
        return plan

    def read_canvas(self, state: TileState, parity: int, k: int, row: int, col: int, step: int, offset) -> torch.Tensor:
        """The model input canvas of a tile at a step under an offset (scaled, ``fill_value`` outside)."""
        grid = self.grid
        box = grid.canvas_box(row, col, offset)
        if not self.halo:
            ys, xs = grid.tile_slices(row, col)
            scaled = self.solver.scale_model_input(state.read_x(parity, k, ys, xs), step)
            return F.pad(scaled, (grid.halo,) * 4, value=grid.fill_value)
        ys, xs, pad = grid.inside(box)
        scaled = self.solver.scale_model_input(state.read_x(parity, k, ys, xs), step)
        return F.pad(scaled, pad, value=grid.fill_value)

    def read_canvases(self, state: TileState, parity: int, batch, step: int, offset) -> torch.Tensor:
        """The model input canvases of a batch under an offset, ``(B, stains, slices, H, W)``: each tile's part inside
        the region is read straight into one batch tensor and scaled there; ``fill_value`` outside."""
        grid = self.grid
        if not self.halo:
            return torch.stack([self.read_canvas(state, parity, k, r, c, step, offset) for k, r, c in batch])
        shape = grid.canvas_box(0, 0, offset)
        canvases = self.buffers.take((len(batch), self.stains, grid.num_slices, shape.height, shape.width), state.device)
        for j, (k, r, c) in enumerate(batch):
            ys, xs, (left, right, top, bottom) = grid.inside(grid.canvas_box(r, c, offset))
            canvas = canvases[j]
            if top or bottom or left or right:  # the canvas reaches outside the region: the fill there
                for band in (canvas[..., :top, :], canvas[..., shape.height - bottom :, :], canvas[..., :left], canvas[..., shape.width - right :]):
                    band.fill_(grid.fill_value)
            inside = canvas[:, :, top : shape.height - bottom, left : shape.width - right]
            state.read_x_into(parity, k, ys, xs, inside)
            scaled = self.solver.scale_model_input(inside, step)
            if scaled is not inside:
                inside.copy_(scaled)
        return canvases

    def copy_within(self, source: torch.Tensor, box, dy: int, dx: int) -> torch.Tensor:
        """Canvases of ``box``'s size copied out of the larger ``source`` canvases at ``(dy, dx)`` (:meth:`read_plan`)."""
        canvases = self.buffers.take((*source.shape[:3], box.height, box.width), source.device)
        return canvases.copy_(source[..., dy : dy + box.height, dx : dx + box.width])

    def x_in_canvases(self, inputs: list[tuple], step: int) -> torch.Tensor | None:
        """x_t of the batch's tiles as a view of its unshifted canvases, which hold it as it is (inside the region,
        unscaled) when the step runs offset (0, 0) and the solver's input scaling is the identity."""
        if not self.halo or self.solver.scales_model_input(step):
            return None
        for offset, canvases, _, _ in inputs:
            if offset == (0, 0):
                h, t = self.grid.halo, self.grid.tile
                return canvases[..., h : h + t, h : h + t]
        return None

    def give_back(self, inputs: list[tuple], kept: list[torch.Tensor]) -> None:
        """The batch's canvases are read: the next batches may fill them (unless a kept tensor views them)."""
        if self.halo:
            self.buffers.give_back([canvases for _, canvases, _, _ in inputs], kept)
