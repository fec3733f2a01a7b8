"""The optional adversarial term of `teramind distill` (``--adversarial_weight``): a small conditional patch
discriminator that tells the true image of a window from the student's x0 prediction, given the window's genes.

A plain MSE regression on the teacher's ODE endpoint x0* teaches a small student a smoothed, ragged version of the
teacher's cells; the discriminator pushes the student's outputs toward the distribution of real images instead
(ADD / DMD2-style adversarial distillation, our own small version):

* **real** is the true image of the same output patch: record ``i`` of the target store is a region of ``--data``
  (position and z chunk from ``(seed, i)``, `distill_targets.region_of_record`), read here from the training store,
  so real and fake share the gene condition;
* **fake** is the student's x0 for that patch (x0-predicting students only);
* pixels outside the record's region are set to the fill value in both, so the discriminator never sees the region
  border as a cue;
* the condition is the patch's own gene bins (``log1p`` counts, every gene section as a channel);
* ``--adversarial_stains`` limits what it sees to some stains (the others are trained by the MSE alone);
* ``--discriminator_per_stain`` gives each seen stain a discriminator of its own (their logits averaged), so that
  no stain's texture is left to the MSE because the other stain is the easier tell; ``--adversarial_stain_weights``
  then scales each stain's share of the student's term;
* ``--discriminator_paired`` makes it a judge of pairs instead (pix2pix-style): it also sees the student's input x_t
  of the window (stacked with each stain's sections), and **real** is the teacher's x0* for that input rather than
  the true image, so texture that does not follow the input (the grain an unpaired discriminator accepts) is a tell;
* hinge loss: the discriminator minimises ``relu(1 - D(real)) + relu(1 + D(fake))``, the student ``-D(fake)``
  (times the weight, on top of the masked MSE); the discriminator takes ``--discriminator_steps`` Adam steps (default
  1) on each training step's batch, so it can keep ahead of the student.

The discriminator is deterministic (no dropout, no normalisation statistics), its weights and Adam state go into
each checkpoint (`teramind_hf.training.checkpoint`, safetensors + JSON) and never into the saved student pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Adam betas of the discriminator: a short first-moment memory, as usual for GAN discriminators
DISCRIMINATOR_BETAS = (0.5, 0.999)


class PatchDiscriminator(nn.Module):
    """Logits on a coarse grid over a ``(B, stains, slices, P, P)`` image patch, conditioned on its gene bins
    ``(B, genes, gene_slices, P / bin, P / bin)``: four stride-2 convolutions over the image (sections and stains as
    channels) down to the gene grid, the projected genes joined there, and two 1 x 1 convolutions to one logit per
    gene bin."""

    def __init__(self, image_channels: int, gene_channels: int, patch: int, gene_bin: int, width: int = 32):
        super().__init__()
        downs = int(round(np.log2(gene_bin)))
        if 2**downs != gene_bin or patch % gene_bin:
            raise ValueError(f"the discriminator needs a power-of-two gene_bin dividing the patch, got {gene_bin}, {patch}")
        layers, channels = [], image_channels
        for i in range(downs):
            out = width * min(2**i, 2)
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = out
        self.image = nn.Sequential(*layers)
        self.genes = nn.Conv2d(gene_channels, width, 1)
        self.head = nn.Sequential(nn.Conv2d(channels + width, 2 * width, 1), nn.LeakyReLU(0.2), nn.Conv2d(2 * width, 1, 1))

    def forward(self, images: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
        features = self.image(images.flatten(1, 2))
        condition = F.leaky_relu(self.genes(torch.log1p(genes.clamp(min=0)).flatten(1, 2)), 0.2)
        return self.head(torch.cat([features, condition], dim=1))


class StainwiseDiscriminator(nn.Module):
    """One :class:`PatchDiscriminator` per stain, each seeing its own stain's sections and the genes; its logits
    ``(B, stains, h, w)`` are the parts' logits side by side, so the hinge losses average over the stains."""

    def __init__(self, stains: int, slices: int, gene_channels: int, patch: int, gene_bin: int):
        super().__init__()
        self.parts = nn.ModuleList(PatchDiscriminator(slices, gene_channels, patch, gene_bin) for _ in range(stains))

    def forward(self, images: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(images[:, i : i + 1], genes) for i, part in enumerate(self.parts)], dim=1)


def check_stains(stains, unet_config) -> tuple[int, ...]:
    """The stain indices the discriminator sees (``None``: all of the model's), refused by name if out of range or
    repeated."""
    if stains is None:
        return tuple(range(unet_config.out_channels))
    stains = tuple(int(s) for s in stains)
    if not stains or len(set(stains)) != len(stains) or not all(0 <= s < unet_config.out_channels for s in stains):
        raise ValueError(f"--adversarial_stains: distinct stain indices in 0..{unet_config.out_channels - 1} expected, "
                         f"got {list(stains)}")
    return stains


def check_stain_weights(weights, stains: tuple[int, ...], per_stain: bool) -> tuple[float, ...] | None:
    """``--adversarial_stain_weights`` as floats (None: unweighted), refused unless there is one weight >= 0 per seen
    stain and one discriminator per stain."""
    if weights is None:
        return None
    weights = tuple(float(w) for w in weights)
    if not per_stain or len(weights) != len(stains) or not all(w >= 0 for w in weights):
        raise ValueError(f"--adversarial_stain_weights: one weight >= 0 per stain the discriminator sees ({len(stains)}), "
                         f"with --discriminator_per_stain; got {list(weights)}")
    return weights


def build_discriminator(unet_config, seed: int, stains=None, per_stain: bool = False, paired: bool = False) -> nn.Module:
    """The discriminator for a student of ``unet_config`` that sees ``stains`` (default all), one for all of them or
    (``per_stain``) a :class:`StainwiseDiscriminator`; ``paired``: each stain's sections come with the input's
    (:func:`paired_images`); its initial weights drawn from ``seed`` alone."""
    seen = len(check_stains(stains, unet_config))
    gene_channels = unet_config.num_genes * unet_config.gene_slices
    slices = unet_config.num_slices * (2 if paired else 1)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if per_stain:
            return StainwiseDiscriminator(seen, slices, gene_channels, unet_config.sample_size, unet_config.gene_bin)
        return PatchDiscriminator(seen * slices, gene_channels, unet_config.sample_size, unet_config.gene_bin)
    finally:
        torch.random.set_rng_state(state)


def patch_genes(batch: dict, patch: int, gene_bin: int, size: int) -> torch.Tensor:
    """The gene bins under a window's ``size``-px output (its patches; the window reaches half a patch around them)."""
    lo, n = patch // 2 // gene_bin, size // gene_bin
    return batch["genes"][..., lo : lo + n, lo : lo + n]


def paired_images(images: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``(B, stains, 2 * slices, P, P)``: each stain's sections of ``images`` followed by the same stain's sections of
    ``inputs``, so a per-stain discriminator's part sees its stain's output and input alone."""
    return torch.stack([images, inputs], dim=2).flatten(2, 3)


def in_region(images: torch.Tensor, mask: torch.Tensor, fill_value: float) -> torch.Tensor:
    """``images`` inside the record's region, ``fill_value`` outside (the same for real and fake)."""
    return images * mask + fill_value * (1 - mask)


def generator_loss(discriminator, fake: torch.Tensor, genes: torch.Tensor, stain_weights=None) -> torch.Tensor:
    """The student's hinge term ``-mean D(fake)``; no gradient reaches the discriminator's weights. With
    ``stain_weights`` (a :class:`StainwiseDiscriminator`'s), each stain's mean logit is scaled by its weight before
    the mean over stains (all 1: the plain mean)."""
    for p in discriminator.parameters():
        p.requires_grad_(False)
    try:
        logits = discriminator(fake, genes).float()
        if stain_weights is None:
            return -logits.mean()
        return -(logits.mean(dim=(0, 2, 3)) * torch.tensor(stain_weights, dtype=torch.float32, device=logits.device)).mean()
    finally:
        for p in discriminator.parameters():
            p.requires_grad_(True)


def discriminator_loss(discriminator, real: torch.Tensor, fake: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator on a batch of real and (detached) fake patches."""
    logits = discriminator(torch.cat([real, fake.detach()]), torch.cat([genes, genes])).float()
    real_logits, fake_logits = logits.chunk(2)
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


class TruthRegions:
    """The true image ``(stains, slices, R, R)`` in [-1, 1] of each teacher record: the region of the training store
    that the record's genes come from (`region_of_record` with the target store's seed), read once per record."""

    def __init__(self, data: str | Path, *, seed: int, region: int, slices: int, gene_bin: int):
        import zarr

        group = zarr.open_group(str(data), mode="r")
        if "images" not in group:
            raise ValueError(f"--data {data}: no 'images' array; --adversarial_weight needs the true images")
        self.images = group["images"]
        _, self.sections, bins_h, bins_w = group["genes"].shape
        self.height, self.width = bins_h * gene_bin, bins_w * gene_bin
        if self.images.shape[1] < self.sections or self.images.shape[2] < self.height or self.images.shape[3] < self.width:
            raise ValueError(f"--data {data}: images {tuple(self.images.shape)} do not cover the gene grid")
        self.seed, self.region, self.slices, self.gene_bin = seed, region, slices, gene_bin
        self._cache: dict[int, torch.Tensor] = {}

    def position(self, record: int) -> tuple[int, int, int]:
        from .distill_targets import region_of_record

        return region_of_record(self.seed, record, height=self.height, width=self.width, num_sections=self.sections,
                                slices=self.slices, size=self.region, gene_bin=self.gene_bin)

    def __call__(self, record: int) -> torch.Tensor:
        if record not in self._cache:
            start, top, left = self.position(record)
            pixels = np.asarray(self.images[:, start : start + self.slices, top : top + self.region, left : left + self.region])
            self._cache[record] = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)
        return self._cache[record]


class Adversary:
    """The discriminator of a distillation run and its Adam, prepared by ``accelerator``: the student's adversarial
    term and the discriminator's update on one batch of windows."""

    name = "discriminator"  # its files in a checkpoint: discriminator.safetensors, discriminator_optimizer.*

    def __init__(self, accelerator, unet_config, *, lr: float, fill_value: float, seed: int, stains=None, steps: int = 1,
                 per_stain: bool = False, stain_weights=None, paired: bool = False):
        from .losses import sample_seed

        if steps < 1:
            raise ValueError(f"--discriminator_steps must be >= 1, got {steps}")
        self.steps = steps
        self.stains = check_stains(stains, unet_config)
        self.stain_weights = check_stain_weights(stain_weights, self.stains, per_stain)
        self.paired = paired
        discriminator = build_discriminator(unet_config, sample_seed(seed, 0, 0, "discriminator-init"), self.stains,
                                            per_stain, paired)
        discriminator.train()
        optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=DISCRIMINATOR_BETAS)
        self.discriminator, self.optimizer = accelerator.prepare(discriminator, optimizer)
        self.accelerator, self.fill_value = accelerator, fill_value
        self.patch, self.gene_bin = unet_config.sample_size, unet_config.gene_bin

    def extras(self) -> dict:
        return {self.name: (self.discriminator, self.optimizer)}

    def _inputs(self, out: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real, fake, genes): the true image (paired: the teacher's x0*) and the student's x0, each with the
        window's input x_t when paired, inside the record's region."""
        mask, stains = batch["mask"], list(self.stains)
        real = in_region(batch["x0" if self.paired else "real"][:, stains], mask, self.fill_value)
        fake = in_region(out[:, stains], mask, self.fill_value)
        if self.paired:
            inputs = in_region(batch["x_t"][:, stains], mask, self.fill_value)
            real, fake = paired_images(real, inputs), paired_images(fake, inputs)
        return real, fake, patch_genes(batch, self.patch, self.gene_bin, out.shape[-1])

    def generator_term(self, out: torch.Tensor, batch: dict) -> torch.Tensor:
        """The student's (unweighted) hinge term on its outputs ``out`` for ``batch``."""
        _, fake, genes = self._inputs(out, batch)
        return generator_loss(self.accelerator.unwrap_model(self.discriminator), fake, genes, self.stain_weights)

    def update(self, out: torch.Tensor, batch: dict) -> torch.Tensor:
        """Backpropagate the discriminator's hinge loss on ``batch`` (real) and ``out`` (fake, detached), ``steps``
        times; its Adam steps when the gradients sync (the last micro-batch of a step). Returns the first loss (the
        one the student's step saw)."""
        real, fake, genes = self._inputs(out.detach(), batch)
        losses = []
        for _ in range(self.steps):
            with self.accelerator.autocast():
                loss = discriminator_loss(self.discriminator, real, fake, genes)
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        return losses[0]
