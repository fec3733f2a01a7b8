"""Teacher targets of `teramind distill`: noise draws and the teacher's deterministic samples from them, on disk.

Record ``i`` of the store is one ``R x R``-px region of the training data (one z chunk of ``num_slices``
sections, its ``gene_slices`` gene sections around it), drawn with the noise ``z`` and the region position
seeded by ``(seed, i)`` alone; the teacher samples it with a deterministic solver on a grid schedule from exactly
that noise (the pipeline's ``latents``), so ``x0* = teacher(z, genes)`` is one point, not a draw. The store is
zarr (no pickle):

    zarr.json                 group attributes: ``spec`` (what made the records; checked on reuse)
    genes   (N, G, gene_slices, R/bin, R/bin) float32   the model-panel gene window of each record
    noise   (N, stains, slices, R, R) float32           z
    target  (N, stains, slices, R, R) float32           x0*, the teacher's sample from z
    done    (N,) uint8                                  1 once the record's arrays are written (written last)

Generation is resumable record by record (a killed run redoes at most the record it was writing) and a later
stage may grow the store (``--num_teacher_samples`` larger): records already done are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .losses import sample_seed

STORE_KIND = "teramind-distill-targets"


@dataclass(frozen=True)
class TargetSpec:
    """What determines a store's records: a store made with another spec is refused, naming the field."""

    teacher: str  # sha256 of the teacher UNet's weights (`weights_fingerprint`): the same model wherever it lies
    data: str  # the training store's absolute path
    seed: int
    region_size: int
    teacher_scheduler: str
    teacher_steps: int
    teacher_grid: dict
    gene_names: list | None
    num_genes: int

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.__dict__))


def weights_fingerprint(unet) -> str:
    """sha256 of a model's float32 weights in state-dict order (names, shapes and values)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in unet.state_dict().items():
        value = tensor.detach().to(torch.float32).contiguous().cpu()
        digest.update(f"{name}:{tuple(value.shape)};".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def check_target_store(path: Path, spec: TargetSpec, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether a target store for ``spec`` exists at ``path``; refuses, naming the field, a store with another spec or
    layout and a path that holds something else. Reads only, so every process of a run can check before any writes."""
    import zarr

    expected = spec.to_dict()
    if not (path / "zarr.json").is_file():
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"--targets {path}: exists and is not a teacher-target store; give a new path")
        return False
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as err:  # zarr raises several types for damaged stores
        raise ValueError(f"--targets {path}: cannot read the teacher-target store ({err})") from err
    if attrs.get("kind") != STORE_KIND:
        raise ValueError(f"--targets {path}: not a teacher-target store of teramind distill (attribute kind != {STORE_KIND!r})")
    saved = attrs.get("spec") or {}
    diff = [k for k in expected if saved.get(k) != expected[k]]
    if diff:
        lines = "; ".join(f"{k}: store {saved.get(k)!r} vs this run {expected[k]!r}" for k in diff)
        raise ValueError(f"--targets {path}: made with other settings ({lines}); use another --targets or matching options")
    for name, shape in shapes.items():
        if name not in group or tuple(group[name].shape[1:]) != shape:
            raise ValueError(f"--targets {path}: array {name!r} missing or not shaped (N, {', '.join(map(str, shape))})")
    return True


def open_target_store(path: Path, spec: TargetSpec, num_records: int, shapes: dict[str, tuple[int, ...]]):
    """The target store at ``path`` with room for ``num_records`` records (created or grown), after
    :func:`check_target_store`'s refusals."""
    import zarr

    if check_target_store(path, spec, shapes):
        group = zarr.open_group(str(path), mode="r+")
        if group["done"].shape[0] < num_records:
            for name in (*shapes, "done"):
                group[name].resize((num_records, *group[name].shape[1:]))
        return group
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update({"kind": STORE_KIND, "spec": spec.to_dict()})
    for name, shape in shapes.items():
        group.create_array(name, shape=(num_records, *shape), chunks=(1, *shape), dtype="float32", fill_value=0.0)
    group.create_array("done", shape=(num_records,), chunks=(1,), dtype="uint8", fill_value=0)
    return group


def completed_records(group) -> int:
    """How many leading records are complete (training uses those)."""
    done = np.asarray(group["done"][...])
    missing = np.flatnonzero(done == 0)
    return int(missing[0]) if missing.size else int(done.size)


def region_of_record(seed: int, index: int, *, height: int, width: int, num_sections: int, slices: int, size: int,
                     gene_bin: int) -> tuple[int, int, int]:
    """(first image section, top px, left px) of record ``index``: gene-bin aligned, inside the data."""
    gen = torch.Generator().manual_seed(sample_seed(seed, index, 0, "teacher-region"))
    start = int(torch.randint(0, num_sections - slices + 1, (1,), generator=gen))
    top = int(torch.randint(0, (height - size) // gene_bin + 1, (1,), generator=gen)) * gene_bin
    left = int(torch.randint(0, (width - size) // gene_bin + 1, (1,), generator=gen)) * gene_bin
    return start, top, left


def record_noise(seed: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(sample_seed(seed, index, 0, "teacher-noise"))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


@torch.no_grad()
def teacher_sample(pipe, window: torch.Tensor, noise: torch.Tensor, *, steps: int, grid, margin: int) -> torch.Tensor:
    """The teacher's sample ``(stains, slices, R, R)`` of a gene window ``(G, gene_slices, R/bin, R/bin)`` from the
    noise ``(stains, slices, R, R)``: the window is the whole gene input, and its chunk starts ``margin`` sections
    in, so the pipeline conditions it on exactly ``window``."""
    slices = noise.shape[1]
    images = pipe(window, gene_names=pipe.unet.config.gene_names, num_inference_steps=steps, slices=(margin, margin + slices),
                  latents=noise[None], grid=grid, output_type="pt", min_gene_overlap=0.0, generator=0).images
    return images.float().permute(1, 0, 2, 3).contiguous()  # (Z, stains, H, W) -> (stains, slices, H, W)


def fill_targets(group, pipe, genes_store, alignment, spec: TargetSpec, *, num_records: int, slices: int,
                 gene_slices: int, log=print, rank: int = 0, world: int = 1) -> int:
    """Generate every record of ``0 .. num_records - 1`` not yet done whose index is ``rank`` modulo ``world``
    (this process's share); returns how many were generated."""
    from ..data.panel import apply_alignment
    from ..sampling.grid import gene_window

    gene_bin = pipe.unet.config.gene_bin
    _, sections, bins_h, bins_w = genes_store.shape
    size, margin = spec.region_size, (gene_slices - slices) // 2
    done = np.asarray(group["done"][...])
    made = 0
    for index in range(rank, num_records, world):
        if done[index]:
            continue
        start, top, left = region_of_record(spec.seed, index, height=bins_h * gene_bin, width=bins_w * gene_bin,
                                            num_sections=sections, slices=slices, size=size, gene_bin=gene_bin)
        lo, hi = max(start - margin, 0), min(start + slices + margin, sections)
        crop = np.asarray(genes_store[:, lo:hi, top // gene_bin : (top + size) // gene_bin,
                                      left // gene_bin : (left + size) // gene_bin], dtype=np.float32)
        if alignment is not None:
            crop = apply_alignment(crop, alignment)
        # the stack-end padding of the sampler's gene window, on the crop's own section numbers
        window = gene_window(torch.from_numpy(crop), start - lo, slices, gene_slices)
        noise = record_noise(spec.seed, index, (pipe.unet.config.out_channels, slices, size, size))
        target = teacher_sample(pipe, window, noise, steps=spec.teacher_steps, grid=spec.teacher_grid, margin=margin)
        group["genes"][index] = window.numpy()
        group["noise"][index] = noise.numpy()
        group["target"][index] = target.numpy()
        group["done"][index] = 1  # last: marks the record complete
        made += 1
        log(f"teacher target {index + 1}/{num_records}: section {start}, px ({top}, {left})")
    return made


# ---------------------------------------------------------------------------------------------- the student's sampler
def student_scheduler(teacher_scheduler, prediction_type: str):
    """DDIM with trailing spacing (``n`` steps: t = 999, 999 - 1000/n, ...) on the teacher's training schedule, the
    official clip rule, predicting ``prediction_type``: a plain diffusers scheduler config in the student folder."""
    from ..schedulers.scheduling_boundary_aware import SCHEDULE_DEFAULTS, BoundaryAwareScheduler

    config = dict(teacher_scheduler.config)
    schedule = {k: config.get(k, v) for k, v in SCHEDULE_DEFAULTS.items()}
    schedule.update(prediction_type=prediction_type, clip_sample=True)
    return BoundaryAwareScheduler(**schedule, inner_scheduler="DDIMScheduler", inner_config={"timestep_spacing": "trailing"},
                                  timestep_spacing_mode="inner")


@dataclass(frozen=True)
class StudentPath:
    """The student's timesteps (descending) and the alpha-bars its DDIM steps use at them."""

    timesteps: tuple[int, ...]
    alphas_cumprod: tuple[float, ...]

    @classmethod
    def of(cls, scheduler, num_steps: int) -> "StudentPath":
        stepper, _, timesteps = scheduler.new_stepper(num_steps)
        abar = stepper.alphas_cumprod
        return cls(tuple(int(t) for t in timesteps), tuple(float(abar[int(t)]) for t in timesteps))

    def noisy(self, step: int, noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """x at the student's step ``step`` on the DDIM path from the noise to the teacher's sample: the noise itself
        at step 0, then what deterministic DDIM gives from a perfect x0 (the noise it re-derives at step 0)."""
        if step == 0:
            return noise
        a0, a = self.alphas_cumprod[0], self.alphas_cumprod[step]
        eps = (noise - a0**0.5 * target) / (1 - a0) ** 0.5
        return a**0.5 * target + (1 - a) ** 0.5 * eps
