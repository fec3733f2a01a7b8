"""Prototype sampler for the seam and fast-preset studies: one region, any grid offset per step, blended offsets.

Research code for ``benchmarks/seam_methods.py`` and ``benchmarks/fast_preset.py``; the tile-sampling engine
replaces it. It runs the model on the *whole region* padded by the halo instead of on tiles: each collage
output patch depends only on the 2 x 2 input patches around it, so a tile canvas predicts exactly the pixels
of the whole-region canvas (tests/test_pipeline.py) and the numbers are those the tiled engine would give.

A grid offset ``(dy, dx)`` (multiples of the 16-px gene bin, so the gene canvas moves by whole bins) pads
the region asymmetrically so the model's output-patch borders lie at ``dy, dx (mod 64)`` and its input-patch
borders half a patch away. A step may use several offsets; their x0 predictions are blended with weights of
period 32 that vanish on each grid's own input and output patch borders (the four offsets {0, 16}^2 sum to 1
at every pixel), so no grid's borders reach the output.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PATCH, HALO, GENE_BIN, FILL = 64, 32, 16, -1.0
BLEND_OFFSETS = ((0, 0), (0, 16), (16, 0), (16, 16))
DIAGONAL_OFFSETS = ((0, 0), (16, 16))


@dataclass(frozen=True)
class StepGrid:
    """Grids of one denoising step: ``offsets`` (dy, dx) in px, blended with ``weights`` if several."""

    offsets: tuple[tuple[int, int], ...] = ((0, 0),)
    weights: str = "tent"  # "tent" (triangle) or "cos2" (raised cosine), period 32; "distance" (2 diagonal grids)

    @property
    def calls(self) -> int:
        return len(self.offsets)


OFFICIAL = StepGrid()
BLEND4 = StepGrid(BLEND_OFFSETS)


def grid_plan(steps: int, blend_last: int = 0, shift: str = "none", weights: str = "tent") -> tuple[StepGrid, ...]:
    """Per-step grids: ``shift`` moves the single grid between the unblended steps; the last
    ``blend_last`` steps blend the four offsets {0, 16}^2 (``weights="distance"``: the two offsets (0, 0) and
    (16, 16)).

    shift: "none" (official grid), "half" (0 / 32 px diagonally, alternating), "cycle16" (16 i mod 64 diagonally).
    """
    plan = []
    for i in range(steps):
        if i >= steps - blend_last:
            plan.append(StepGrid(DIAGONAL_OFFSETS if weights == "distance" else BLEND_OFFSETS, weights))
        elif shift == "half":
            plan.append(StepGrid((((32 * i) % 64,) * 2,)))
        elif shift == "cycle16":
            plan.append(StepGrid((((16 * i) % 64,) * 2,)))
        elif shift == "none":
            plan.append(OFFICIAL)
        else:
            raise ValueError(f"unknown shift {shift!r}")
    return tuple(plan)


def blend_weight(length: int, offset: int, kind: str = "tent") -> torch.Tensor:
    """1-D weight of the grid with border offset ``offset`` (mod 32): 0 at its borders, 1 half-way between.

    A border lies between pixels ``offset - 1`` and ``offset``; weights of offsets 0 and 16 sum to 1.
    """
    u = (torch.arange(length, dtype=torch.float64) + 0.5 - offset) % 32
    if kind == "tent":
        w = torch.minimum(u, 32 - u) / 16
    elif kind == "cos2":
        w = torch.sin(torch.pi * u / 32) ** 2
    else:
        raise ValueError(f"unknown weights {kind!r}")
    return w.float()


def _span(length: int, offset: int) -> tuple[int, int]:
    """Padding (before, after) so a canvas over the region has output-patch borders at ``offset`` (mod 64)."""
    before = HALO + (PATCH - offset) % PATCH
    total = before + length + HALO
    after = HALO + (-total) % PATCH
    return before, after


def model_x0(unet, sample: torch.Tensor, t, genes: torch.Tensor, offset: tuple[int, int], tile: int = 256) -> torch.Tensor:
    """The model output (x0) over the region for one grid offset.

    sample: ``(K, stains, Z, H, W)`` scaled model input; genes: ``(K, G, gene_slices, H/16, W/16)``.
    The padded canvas is cut into tile canvases (<= tile + 2 halo) for speed; the result is the same.
    """
    (dy, dx), (h, w) = offset, sample.shape[-2:]
    if dy % GENE_BIN or dx % GENE_BIN:
        raise ValueError(f"grid offsets must be multiples of the {GENE_BIN}-px gene bin, got {offset}")
    (t0, b0), (l0, r0) = _span(h, dy), _span(w, dx)
    canvas = F.pad(sample, (l0, r0, t0, b0), value=FILL)
    gene_canvas = F.pad(genes, (l0 // GENE_BIN, r0 // GENE_BIN, t0 // GENE_BIN, b0 // GENE_BIN))
    out_h, out_w = canvas.shape[-2] - PATCH, canvas.shape[-1] - PATCH
    out = torch.empty(*sample.shape[:-2], out_h, out_w)
    for y in range(0, out_h, tile):
        for x in range(0, out_w, tile):
            th, tw = min(tile, out_h - y), min(tile, out_w - x)
            c = canvas[..., y : y + th + PATCH, x : x + tw + PATCH]
            g = gene_canvas[..., y // GENE_BIN : (y + th + PATCH) // GENE_BIN, x // GENE_BIN : (x + tw + PATCH) // GENE_BIN]
            out[..., y : y + th, x : x + tw] = unet(c, t, g, path="collage").sample.float()
    top, left = t0 - HALO, l0 - HALO
    return out[..., top : top + h, left : left + w]


def step_output(unet, sample, t, genes, grid: StepGrid) -> torch.Tensor:
    """Blended model output of a step's grids."""
    if grid.calls == 1:
        return model_x0(unet, sample, t, genes, grid.offsets[0])
    h, w = sample.shape[-2:]
    if grid.weights == "distance":
        return _distance_blend(unet, sample, t, genes, grid.offsets)
    total = 0
    for dy, dx in grid.offsets:
        # a grid at offset d has output borders at d and input borders at d + 32: both at d (mod 32)
        weight = blend_weight(h, dy, grid.weights)[:, None] * blend_weight(w, dx, grid.weights)[None, :]
        total = total + weight * model_x0(unet, sample, t, genes, (dy, dx))
    return total


def line_distance(h: int, w: int, offset: tuple[int, int]) -> torch.Tensor:
    """Distance (px) from each pixel centre to the nearest input/output patch border of the grid at ``offset``."""

    def along(length, d):
        u = (torch.arange(length, dtype=torch.float64) + 0.5 - d) % 32
        return torch.minimum(u, 32 - u)

    return torch.minimum(along(h, offset[0])[:, None], along(w, offset[1])[None, :])


def _distance_blend(unet, sample, t, genes, offsets) -> torch.Tensor:
    """Two grids whose lines never coincide, each weighted by its distance to its own borders over the sum:
    a grid's weight is 0 on its lines except where the other grid's lines cross them (half each there)."""
    h, w = sample.shape[-2:]
    dist = [line_distance(h, w, o) for o in offsets]
    total = dist[0] + dist[1]
    return sum((d / total).float() * model_x0(unet, sample, t, genes, o) for d, o in zip(dist, offsets))


def calls_per_tile(plan: tuple[StepGrid, ...]) -> int:
    """Model calls per 256-px tile on a large region (each offset grid costs one call per tile per step)."""
    return sum(g.calls for g in plan)


class RegionSampler:
    """Samples one region under many grid plans, reusing shared plan prefixes (same noise, same steps).

    ``scheduler``: a ``BoundaryAwareScheduler`` (used only for its timesteps and its ``step``).
    """

    def __init__(self, unet, scheduler, genes: torch.Tensor, noise: torch.Tensor, steps: int):
        self.unet, self.genes, self.steps = unet, genes, steps
        scheduler = copy.deepcopy(scheduler)
        scheduler.set_timesteps(steps)
        self.timesteps = list(scheduler.timesteps)
        self._cache = {(): (noise.clone(), scheduler)}
        self.model_pixels = 0  # pixels of model output computed (work, in region pixels x grids)

    @torch.no_grad()
    def sample(self, plan: tuple[StepGrid, ...]) -> torch.Tensor:
        if len(plan) != self.steps:
            raise ValueError(f"plan has {len(plan)} steps, sampler {self.steps}")
        done = max(i for i in range(len(plan) + 1) if tuple(plan[:i]) in self._cache)
        latents, scheduler = self._cache[tuple(plan[:done])]
        latents, scheduler = latents.clone(), copy.deepcopy(scheduler)
        for i in range(done, len(plan)):
            t = self.timesteps[i]
            x0 = step_output(self.unet, scheduler.scale_model_input(latents, t), t, self.genes, plan[i])
            self.model_pixels += x0[0, 0, 0].numel() * plan[i].calls
            latents = scheduler.step(x0, t, latents).prev_sample
            self._cache[tuple(plan[: i + 1])] = (latents.clone(), copy.deepcopy(scheduler))
        return latents


# ---------------------------------------------------------------------------- regions and pipeline


@dataclass
class Region:
    seed: int
    images: np.ndarray  # (Z, stains, H, W) truth in [-1, 1]
    genes: torch.Tensor  # (K chunks, G, gene_slices, H/16, W/16), aligned to the model panel


def load_pipeline(threads: int = 1):
    torch.set_num_threads(threads)
    from teramind_hf import TeraMindPipeline

    pipe = TeraMindPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.eval()
    return pipe


def held_out_region(pipe, seed: int, size: int = 512, slices: int = 2) -> Region:
    """A phantom region at the default model's scale; seeds >= 2 were neither trained nor validated on."""
    from teramind_hf import DEFAULT_MODEL_UM_PER_PX
    from teramind_hf.data.phantom import make_phantom
    from teramind_hf.pipelines.pipeline_teramind import gene_window, z_chunks

    if seed < 2:
        raise ValueError(f"held-out phantom seeds are >= 2 (0 trained, 1 validated), got {seed}")
    ph = make_phantom(size, size, num_slices=slices, seed=seed, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    genes, _ = pipe._prepare_genes(ph.genes, list(ph.panel.genes), 0.0)
    cfg = pipe.unet.config
    windows = torch.stack([gene_window(genes, s, cfg.num_slices, cfg.gene_slices) for s in z_chunks(0, slices, cfg.num_slices)])
    images = ph.images.astype(np.float32).transpose(1, 0, 2, 3) / 127.5 - 1.0
    return Region(seed, images, windows)


def initial_noise(pipe, region: Region, seed: int = 0) -> torch.Tensor:
    """Per-tile seeded noise as the pipeline draws it: ``(K, stains, Z, H, W)``."""
    sched, cfg = pipe.scheduler, pipe.unet.config
    k, h, w = region.genes.shape[0], *region.images.shape[-2:]
    tile = sched.config.tile_size
    noise = torch.empty(k, cfg.out_channels, cfg.num_slices, h, w)
    for c in range(k):
        for r in range(h // tile):
            for q in range(w // tile):
                noise[c, :, :, r * tile : (r + 1) * tile, q * tile : (q + 1) * tile] = sched.initial_noise(
                    seed, (c * cfg.num_slices, r, q), (cfg.out_channels, cfg.num_slices, tile, tile)
                )
    return noise


def to_images(latents: torch.Tensor, slices: int) -> np.ndarray:
    """(K, stains, Z, H, W) latents -> (Z, stains, H, W) images in [-1, 1], as the pipeline returns them."""
    k, s, z, h, w = latents.shape
    return latents.permute(0, 2, 1, 3, 4).reshape(-1, s, h, w)[:slices].clamp(-1, 1).numpy()


def save_atomic(path, array: np.ndarray) -> None:
    """np.save to ``path`` through a temporary file, so a killed run never leaves half a sample."""
    import os

    tmp = f"{path}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def make_scheduler(pipe, solver: str = "DDIMScheduler", spacing: str = "official", **inner):
    """A scheduler for the embedded model (x0 prediction) with ``set_timesteps`` / ``timesteps`` on the model's
    0..999 scale, ``scale_model_input`` and ``step``.

    DDIM and ``spacing="inner"``: the package's ``BoundaryAwareScheduler``. A multistep solver with the
    official spacing: :class:`RespacedScheduler` (the wrapper's re-spacing gives such solvers all-zero
    timesteps in this version, see the report).
    """
    from teramind_hf.schedulers.scheduling_boundary_aware import BoundaryAwareScheduler

    base = dict(pipe.scheduler.config)
    config = {**base["inner_config"], **inner}
    if spacing == "official" and solver != "DDIMScheduler":
        return RespacedScheduler(solver, config)
    return BoundaryAwareScheduler(
        inner_scheduler=solver, inner_config=config, timestep_spacing_mode=spacing,
        **{k: base[k] for k in ("tile_size", "halo", "patch_size", "fill_value")},
    )


class RespacedScheduler:
    """Any diffusers solver on the official DDIM timesteps: an N-step schedule whose alpha-bars are the
    training alpha-bars at ``official_timesteps(1000, N)`` (as the official SpacedDiffusion), stepped with
    "trailing" spacing so the solver visits each kept step once, largest first."""

    def __init__(self, solver: str, inner_config: dict):
        import diffusers

        from teramind_hf.schedulers.scheduling_boundary_aware import DEFAULT_INNER_CONFIG, _training_alphas_cumprod

        self.cls = getattr(diffusers, solver)
        self.config = {**DEFAULT_INNER_CONFIG, **inner_config}
        self.full = _training_alphas_cumprod(self.cls.from_config(self.config).config)

    def set_timesteps(self, steps: int, device=None) -> None:
        from teramind_hf.schedulers.scheduling_boundary_aware import official_timesteps

        kept_steps = official_timesteps(len(self.full), steps)
        kept = self.full[kept_steps]
        betas = 1 - kept / np.concatenate([[1.0], kept[:-1]])
        cfg = {**self.config, "num_train_timesteps": steps, "trained_betas": betas.tolist(), "timestep_spacing": "trailing", "steps_offset": 0}
        self.inner = self.cls.from_config(cfg)
        self.inner.set_timesteps(steps)
        self._to_inner = {kept_steps[int(i)]: int(i) for i in self.inner.timesteps}
        self.timesteps = torch.tensor([kept_steps[int(i)] for i in self.inner.timesteps])

    def scale_model_input(self, sample, t):
        return self.inner.scale_model_input(sample, self._to_inner[int(t)])

    def step(self, model_output, t, sample):
        return self.inner.step(model_output, self._to_inner[int(t)], sample)
