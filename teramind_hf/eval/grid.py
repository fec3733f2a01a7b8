"""Grid-line border scores: how much stronger intensity steps are across the lines of a grid than elsewhere.

``border_score(image, period, phase) = mean |I(p) - I(p-1)| over neighbour pairs straddling a grid line
                                       / mean |I(p) - I(p-1)| over all other neighbour pairs``

with lines at ``phase + k * period`` in y and in x (a line at ``p`` lies between pixels ``p-1`` and ``p``; the
region's own edges are no lines). ~1 means the grid is invisible; the phantom's own images score ~1.0-1.2, and
samples whose 64-px model patches show score ~2.2 at period 64. A method that merely *moves* the borders would
pass at phase 0, and one moved in one axis only would pass at any shared phase, so the one border measure of the
package, :func:`worst_phase_border_score` (:meth:`StepProfile.worst_phase_2d`), takes the maximum over every 2-D
phase ``(phase_y, phase_x)``; `eval report`, `eval seams`, the tests and the benchmarks all use it, on profiles
pooled over regions where regions are pooled.

All phases of all periods come from one pass: :class:`StepProfile` keeps the summed |step| at each position along
y and x, read block by block, so memory does not grow with the image (`eval.seams` uses it for tile borders).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK = 1024


@dataclass
class StepProfile:
    """Summed |step| between neighbours at each position: ``y_sum[i]`` over pairs (row i, row i+1), ``x_sum[j]``
    over pairs (column j, column j+1), each summed over the other axis and all leading axes."""

    y_sum: np.ndarray  # (H - 1,)
    x_sum: np.ndarray  # (W - 1,)
    y_pairs_per_position: int  # W * layers
    x_pairs_per_position: int  # H * layers

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> "StepProfile":
        height, width = shape[-2], shape[-1]
        layers = int(np.prod(shape[:-2]))
        return cls(np.zeros(max(height - 1, 0)), np.zeros(max(width - 1, 0)), width * layers, height * layers)

    def add_block(self, block, y0: int, x0: int, rows: int, cols: int) -> None:
        """Add a block whose top-left pixel is ``(y0, x0)`` and which owns ``rows x cols`` pixels; it may carry
        one more row and column than it owns, so the steps across its lower and right edges are counted too."""
        block = np.asarray(block)
        block = block.astype(np.int16) if block.dtype == np.uint8 else block.astype(np.float32)
        if block.shape[-1] > 1:
            steps = np.abs(np.diff(block[..., :rows, :], axis=-1))
            self.x_sum[x0 : x0 + steps.shape[-1]] += steps.reshape(-1, steps.shape[-1]).sum(axis=0, dtype=np.float64)
        if block.shape[-2] > 1:
            steps = np.abs(np.diff(block[..., :cols], axis=-2))
            by_row = np.moveaxis(steps, -2, 0).reshape(steps.shape[-2], -1)
            self.y_sum[y0 : y0 + by_row.shape[0]] += by_row.sum(axis=1, dtype=np.float64)

    def __add__(self, other: "StepProfile") -> "StepProfile":
        """Pool two profiles of the same geometry (e.g. regions that all start on the tile grid), so a score
        reads many more lines than one region has."""
        if self.y_sum.shape != other.y_sum.shape or self.x_sum.shape != other.x_sum.shape:
            raise ValueError(f"step profiles of different shapes cannot be pooled: {self.y_sum.shape + self.x_sum.shape} "
                             f"vs {other.y_sum.shape + other.x_sum.shape}")
        return StepProfile(self.y_sum + other.y_sum, self.x_sum + other.x_sum,
                           self.y_pairs_per_position + other.y_pairs_per_position,
                           self.x_pairs_per_position + other.x_pairs_per_position)

    @staticmethod
    def _axis_split(sums: np.ndarray, per_position: int, period: int, phase: int) -> tuple[float, int, float, int]:
        on_line = (np.arange(1, len(sums) + 1) - phase) % period == 0  # pair i straddles the line at i + 1
        border_sum, border_pairs = float(sums[on_line].sum()), int(on_line.sum()) * per_position
        return border_sum, border_pairs, float(sums.sum()) - border_sum, len(sums) * per_position - border_pairs

    def split(self, period: int, phase: int, phase_x: int | None = None) -> tuple[float, int, float, int]:
        """(border sum, border pairs, interior sum, interior pairs) for lines at ``phase + k * period`` in y and
        at ``phase_x + k * period`` in x (default: the same phase)."""
        y = self._axis_split(self.y_sum, self.y_pairs_per_position, period, phase)
        x = self._axis_split(self.x_sum, self.x_pairs_per_position, period, phase if phase_x is None else phase_x)
        return tuple(a + b for a, b in zip(y, x))  # type: ignore[return-value]

    def score(self, period: int, phase: int = 0, phase_x: int | None = None) -> float:
        border_sum, border_pairs, interior_sum, interior_pairs = self.split(period, phase, phase_x)
        if border_pairs == 0 or interior_pairs == 0 or interior_sum == 0:
            return float("nan")
        return (border_sum / border_pairs) / (interior_sum / interior_pairs)

    def _phase_table(self, sums: np.ndarray, per_position: int, period: int) -> tuple[np.ndarray, np.ndarray]:
        """(border sum, border pairs) of one axis for every phase at once (pair i straddles the line at i + 1)."""
        phases = np.arange(1, len(sums) + 1) % period
        return np.bincount(phases, sums, period), np.bincount(phases, minlength=period) * per_position

    def worst_phase_2d(self, period: int) -> tuple[float, tuple[int, int]]:
        """``(score, (phase_y, phase_x))``: the highest score over every 2-D phase of the grid, so a grid moved in
        one axis only is caught too (the issue-12 patch-grid measure; never below any single shared phase's
        :meth:`score`). All ``period ** 2`` phases come from one table per axis."""
        y_border, y_pairs = self._phase_table(self.y_sum, self.y_pairs_per_position, period)
        x_border, x_pairs = self._phase_table(self.x_sum, self.x_pairs_per_position, period)
        border, pairs = y_border[:, None] + x_border[None, :], y_pairs[:, None] + x_pairs[None, :]
        total = float(self.y_sum.sum() + self.x_sum.sum())
        total_pairs = len(self.y_sum) * self.y_pairs_per_position + len(self.x_sum) * self.x_pairs_per_position
        interior, interior_pairs = total - border, total_pairs - pairs
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = (border / pairs) / (interior / interior_pairs)
        scores[(pairs == 0) | (interior_pairs == 0) | (interior == 0)] = np.nan  # as :meth:`score`
        if not np.isfinite(scores).any():
            return float("nan"), (0, 0)
        py, px = np.unravel_index(np.nanargmax(scores), scores.shape)
        return float(scores[py, px]), (int(py), int(px))

    def shuffled_null(self, period: int, draws: int = 20, edge: int = 16, seed: int = 0) -> np.ndarray:
        """:meth:`worst_phase_2d` scores of ``draws`` copies whose line positions (``edge`` px in from the region's
        sides) are shuffled: what an image with the same line-to-line variability but *no* periodic structure
        scores. The worst phase is a maximum over many phases, so an image whose lines vary more (fewer, stronger
        edges) scores higher with no grid at all; a score inside this null is no evidence of a grid."""
        rng = np.random.default_rng(seed)
        scores = []
        for _ in range(draws):
            y_sum, x_sum = self.y_sum.copy(), self.x_sum.copy()
            for sums in (y_sum, x_sum):
                inner = sums[edge : len(sums) - edge]
                sums[edge : len(sums) - edge] = rng.permutation(inner)
            shuffled = StepProfile(y_sum, x_sum, self.y_pairs_per_position, self.x_pairs_per_position)
            scores.append(shuffled.worst_phase_2d(period)[0])
        return np.asarray(scores)


def _check_period(period: int) -> None:
    if int(period) < 2:
        raise ValueError(f"grid period must be >= 2 px, got {period}")


def step_profile(image, block: int = DEFAULT_BLOCK) -> StepProfile:
    """:class:`StepProfile` of a ``(..., H, W)`` array-like (numpy or zarr), read in ``block x block`` tiles."""
    shape = tuple(image.shape)
    if len(shape) < 2:
        raise ValueError(f"border scores need an image with (..., H, W) axes, got shape {shape}")
    height, width = shape[-2:]
    profile = StepProfile.empty(shape)
    for y0 in range(0, height, block):
        rows = min(block, height - y0)
        for x0 in range(0, width, block):
            cols = min(block, width - x0)
            grown = image[..., y0 : min(y0 + rows + 1, height), x0 : min(x0 + cols + 1, width)]  # + 1 row, 1 column
            profile.add_block(grown, y0, x0, rows, cols)
    return profile


def border_score(image, period: int, phase: int = 0) -> float:
    """Mean |step| across grid lines at ``phase + k * period`` (y and x) over the mean |step| elsewhere."""
    _check_period(period)
    return step_profile(image).score(int(period), int(phase) % int(period))


def worst_phase_border_score(image, period: int) -> tuple[float, tuple[int, int]]:
    """``(score, (phase_y, phase_x))``: the border score at the worst 2-D phase (:meth:`StepProfile.worst_phase_2d`)
    of an image, or of a :class:`StepProfile` already pooled over regions."""
    _check_period(period)
    profile = image if isinstance(image, StepProfile) else step_profile(image)
    return profile.worst_phase_2d(int(period))
