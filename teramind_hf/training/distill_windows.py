"""Training windows and loss of `teramind distill`: the student's x at its own timesteps, on the grid it ships with.

The sampler's collage path predicts each 64-px output patch from the 2 x 2 input patches (128 px) around it, at
each grid offset of the step (``GridSchedule.offsets_at``), with ``fill_value`` and zero genes outside the region.
So a training sample is exactly one such call: a teacher record (noise z, genes, x0*), a student step ``k`` and an
offset of the student's grid at that step, and one output patch of that offset's patch grid over the record's
region. The input is the record's x on the DDIM path at ``t_k`` (:class:`StudentPath`), padded with the fill as the
sampler pads a region; the loss is the MSE between the student's output and what DDIM needs there to land on x0*
(x0* itself for x0 prediction), on the patch pixels inside the region. With ``fresh_noise_fraction``, that share of
the windows after the first student step takes the teacher's sample re-noised with fresh noise instead (the input
LCM and TCD sampling give the student there) and is trained by the adversarial term alone, or, with
``fresh_noise_mse``, also by the MSE to x0* (plain denoising of the teacher's sample: the input's x0 *is* x0*, seen
through noise the record's z did not make, so the student learns to remove any noise, not only the path's). With
``window`` > 1 a sample is N x N neighbouring output patches of the same offset, from (N + 1) x (N + 1) input
patches, still one collage-path call: the sampler's own patches, joined where its grid joins them, so a loss can
see their edges (``seam_weight`` of :func:`distill_loss`). Each sample's draws come from
``(seed, global step, global sample index)``, so the run does not depend on process count or resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .losses import sample_seed


@dataclass(frozen=True)
class WindowGeometry:
    patch: int
    gene_bin: int
    fill_value: float
    region: int
    window: int = 1  # output patches per side of a training window

    @property
    def pad(self) -> int:
        """How far outside the region a canvas reaches at most: 1.5 patches (a shifted canvas)."""
        return self.patch + self.patch // 2

    def patch_starts(self, offset: int) -> list[int]:
        """Starts (region px) of the output patches of the grid at ``offset`` that overlap the region."""
        first = offset - self.patch if offset else 0
        return list(range(first, self.region, self.patch))


class DistillWindows(Dataset):
    """Item ``i`` = the window of global sample ``i % global_batch`` of step ``i // global_batch`` (see module doc)."""

    def __init__(self, group, num_records: int, path, grid, geometry: WindowGeometry, *, seed: int, global_batch: int,
                 length: int, prediction_type: str, truth=None, fresh_noise_fraction: float = 0.0,
                 fresh_noise_mse: bool = False):
        self.group, self.num_records, self.path, self.grid = group, num_records, path, grid
        self.fresh_noise_fraction = fresh_noise_fraction  # see is_fresh
        self.fresh_noise_mse = fresh_noise_mse  # whether fresh-noise windows get the MSE to x0* too
        self.truth = truth  # record -> its true image (the adversarial term's "real"), or None
        self.geometry, self.seed, self.global_batch, self.length = geometry, seed, global_batch, length
        self.prediction_type = prediction_type
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.length

    def record(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noise, x0*, genes) of a record, read once per process (a store holds a few hundred MB at most)."""
        if index not in self._cache:
            self._cache[index] = tuple(torch.from_numpy(self.group[name][index]) for name in ("noise", "target", "genes"))
        return self._cache[index]

    def draws(self, index: int) -> tuple[int, int, tuple[int, int], tuple[int, int]]:
        """(record, student step, offset, output-patch start (y, x)) of item ``index``."""
        step, sample = divmod(index, self.global_batch)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, step, sample, "distill-window"))
        record = int(torch.randint(0, self.num_records, (1,), generator=gen))
        k = int(torch.randint(0, len(self.path.timesteps), (1,), generator=gen))
        offsets = self.grid.offsets_at(k, len(self.path.timesteps))
        dy, dx = (o % self.geometry.patch for o in offsets[int(torch.randint(0, len(offsets), (1,), generator=gen))])
        # the window's first output patch, so that all of its patches are the grid's patches over the region
        last = self.geometry.window - 1
        ys, xs = self.geometry.patch_starts(dy), self.geometry.patch_starts(dx)
        y = ys[int(torch.randint(0, len(ys) - last, (1,), generator=gen))]
        x = xs[int(torch.randint(0, len(xs) - last, (1,), generator=gen))]
        return record, k, (dy, dx), (y, x)

    def is_fresh(self, index: int, k: int) -> bool:
        """Whether item ``index`` (at student step ``k``) takes its input off the DDIM path: the teacher's sample
        re-noised to ``t_k`` with fresh noise, what LCM sampling gives the student after its first step (drawn
        only when ``fresh_noise_fraction`` > 0, from the item's own generator, so the plain windows do not change)."""
        if not (self.fresh_noise_fraction and k > 0):
            return False
        step, sample = divmod(index, self.global_batch)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, step, sample, "distill-fresh-noise"))
        return float(torch.rand((), generator=gen)) < self.fresh_noise_fraction

    def input_at(self, index: int, k: int, noise: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The record's x at the student's step ``k`` for item ``index``, and whether it is a fresh-noise input."""
        if not self.is_fresh(index, k):
            return self.path.noisy(k, noise, target), False
        step, sample = divmod(index, self.global_batch)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, step, sample, "distill-fresh-noise-values"))
        fresh = torch.randn(noise.shape, generator=gen, dtype=noise.dtype)
        a = self.path.alphas_cumprod[k]
        return a**0.5 * target + (1 - a) ** 0.5 * fresh, True

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record, k, _, (y, x) = self.draws(index)
        geo = self.geometry
        noise, target, genes = self.record(record)
        x_t, fresh = self.input_at(index, k, noise, target)
        pad, bins = geo.pad, geo.pad // geo.gene_bin
        canvas = F.pad(x_t, (pad,) * 4, value=geo.fill_value)
        gene_canvas = F.pad(genes, (bins,) * 4)
        half = geo.patch // 2
        y0, x0 = y - half + pad, x - half + pad  # the window: the output patches and half a patch around them
        out_size = geo.window * geo.patch
        size = out_size + geo.patch
        window = canvas[..., y0 : y0 + size, x0 : x0 + size]
        b = geo.gene_bin
        gene_window = gene_canvas[..., y0 // b : (y0 + size) // b, x0 // b : (x0 + size) // b]
        # the output patch: its target and which of its pixels lie inside the region
        target_canvas = F.pad(target, (pad,) * 4)
        ty, tx = y + pad, x + pad
        patch_target = target_canvas[..., ty : ty + out_size, tx : tx + out_size]
        rows = ((torch.arange(out_size) + y) >= 0) & ((torch.arange(out_size) + y) < geo.region)
        cols = ((torch.arange(out_size) + x) >= 0) & ((torch.arange(out_size) + x) < geo.region)
        mask = (rows[:, None] & cols[None, :]).float()[None, None]
        item = {
            "x": window.contiguous(), "genes": gene_window.contiguous(), "step": torch.tensor(k),
            "timestep": torch.tensor(self.path.timesteps[k]), "x0": patch_target.contiguous(),
            "x_t": canvas[..., ty : ty + out_size, tx : tx + out_size].contiguous(), "mask": mask,
            # a fresh-noise window's input does not determine x0* as the DDIM path's does: by default no MSE on it (the
            # adversarial term only); with fresh_noise_mse the MSE to x0* is plain denoising of the teacher's sample
            "mse_weight": torch.tensor(0.0 if fresh and not self.fresh_noise_mse else 1.0),
        }
        if self.truth is not None:  # the true image of the same output patch
            item["real"] = F.pad(self.truth(record), (pad,) * 4)[..., ty : ty + out_size, tx : tx + out_size].contiguous()
        return item


def prediction_targets(batch: dict, path, prediction_type: str) -> torch.Tensor:
    """What the student must output for DDIM to land on x0*: x0* (``sample``), the noise DDIM re-derives from
    (x_t, x0*) (``epsilon``), or v."""
    x0 = batch["x0"]
    if prediction_type == "sample":
        return x0
    abar = torch.tensor(path.alphas_cumprod, dtype=torch.float32)[batch["step"]].reshape(-1, 1, 1, 1, 1)
    eps = (batch["x_t"] - abar.sqrt() * x0) / (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return eps
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 mean per section (replicate border): the detail a plain MSE regression smooths first."""
    flat = x.flatten(0, -3)[:, None]
    smooth = F.avg_pool2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (flat - smooth).reshape(x.shape)


def band_means(t: torch.Tensor, dim: int, start: int, band: int) -> torch.Tensor:
    """Means of ``t`` over rows (``dim`` -2) or columns (-1) ``start .. start + band``, then over ``band``-px segments
    along the other axis."""
    line = t.narrow(dim, start, band).mean(dim=dim)
    return line.unflatten(-1, (line.shape[-1] // band, band)).mean(-1)


def step_across(x: torch.Tensor, mask: torch.Tensor, dim: int, line: int, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(step of ``x`` across the line before row (``dim`` -2) or column (-1) ``line``: the mean of the ``band``-px band
    after it minus the mean of the band before it, per ``band``-px segment along it; whether both bands lie wholly
    inside ``mask``, of ``x``'s shape)."""
    step = band_means(x, dim, line, band) - band_means(x, dim, line - band, band)
    inside = band_means(mask, dim, line, band) * band_means(mask, dim, line - band, band)
    return step, (inside == 1).to(x.dtype)


def seam_jumps(x: torch.Tensor, mask: torch.Tensor, patch: int, band: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(jumps of ``x`` across the edges between the output patches of windows ``x``, and whether each jump lies
    wholly inside ``mask``, of ``x``'s shape): :func:`step_across` at every edge (``band`` 1: a pixel minus its
    neighbour across the edge); y edges then x edges, flattened."""
    jumps, valid = [], []
    for dim in (-2, -1):
        for edge in range(patch, x.shape[dim], patch):
            step, inside = step_across(x, mask, dim, edge, band)
            jumps.append(step.flatten(1))
            valid.append(inside.flatten(1))
    return torch.cat(jumps, 1), torch.cat(valid, 1)


def distill_loss(unet, batch: dict, path, prediction_type: str, highpass_weight: float = 0.0,
                 seam_weight: float = 0.0, seam_band: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, plain masked MSE, the student's output) of a batch of windows; ``highpass_weight`` adds the masked MSE
    of the high-pass of the output against the target's (``sample`` prediction only: the detail of x0);
    ``seam_weight`` adds the MSE of the error's jump across the edges between a window's output patches, over
    ``seam_band``-px bands (:func:`seam_jumps`; zero where the student's neighbouring patches join as the target does,
    however large each patch's own error)."""
    out = unet(batch["x"], batch["timestep"], batch["genes"], path="collage").sample.float()
    target = prediction_targets(batch, path, prediction_type)
    mask = batch["mask"] * batch["mse_weight"].reshape(-1, 1, 1, 1, 1)
    mse = ((out - target).square() * mask).sum() / (mask.sum() * out.shape[1] * out.shape[2]).clamp(min=1)
    loss = mse
    if highpass_weight:
        hp = (high_pass(out) - high_pass(target)).square() * mask
        loss = loss + highpass_weight * hp.sum() / (mask.sum() * out.shape[1] * out.shape[2]).clamp(min=1)
    if seam_weight:
        patch = batch["x"].shape[-1] - out.shape[-1]  # the window reaches half a patch around its output patches
        jumps, valid = seam_jumps(out - target, mask.expand_as(out), patch, seam_band)
        loss = loss + seam_weight * (jumps.square() * valid).sum() / valid.sum().clamp(min=1)
    return loss, mse.detach(), out
