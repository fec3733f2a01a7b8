"""Training data for `teramind train`: opening a store with clear errors, gene alignment, step-indexed order.

Data order is a pure function of (seed, global step, global sample index): sample ``k`` of the global batch
of step ``s`` is dataset item ``s * global_batch + k`` (a `PatchDataset` crop drawn from its own seeded
generator), and process ``rank`` of ``P`` takes samples ``micro * P * b + rank * b + i`` of each
micro-batch. So 1 process with batch ``2b`` and 2 processes with batch ``b`` see the same global batch,
and a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from ..data.datasets import PatchDataset
from ..data.panel import GenePanel, PanelAlignment, PanelOverlapError, apply_alignment

STORE_HINT = (
    "expected a zarr training store (arrays 'images' (2, Z, H, W) uint8 and 'genes' (G, Z, H/16, W/16)) "
    "written by teramind_hf.data.datasets.write_training_store or `teramind phantom`"
)


def open_training_store(path: str | Path, *, crop_size: int, length: int, seed: int, argument: str = "--data") -> PatchDataset:
    """A `PatchDataset` on ``path``, or an error naming the argument, the path and what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{argument} {path}: no such file or directory; {STORE_HINT}")
    if path.is_dir() and not any(path.iterdir()):
        raise ValueError(f"{argument} {path}: the directory is empty; {STORE_HINT}")
    if not (path / "zarr.json").is_file():
        raise ValueError(f"{argument} {path}: not a zarr store (no zarr.json); {STORE_HINT}")
    try:
        import zarr

        group = zarr.open_group(str(path), mode="r")
        shape = tuple(group["images"].shape) if "images" in group else None
    except Exception as err:  # zarr raises several types for damaged stores
        raise ValueError(f"{argument} {path}: cannot read the store ({err}); {STORE_HINT}") from err
    if shape is not None and (shape[1] == 0 or shape[2] == 0 or shape[3] == 0):
        raise ValueError(f"{argument} {path}: the dataset is empty (images shape {shape}); {STORE_HINT}")
    try:
        return PatchDataset(path, crop_size=crop_size, length=length, seed=seed)
    except (ValueError, KeyError) as err:
        raise ValueError(f"{argument} {path}: {err}") from err


def align_panel(
    model_panel: GenePanel,
    data_panel: GenePanel,
    *,
    min_overlap: float,
    orthologues: bool = False,
    argument: str = "--data",
) -> PanelAlignment:
    """Align the data genes to the model panel by name (orthologues: upper-case symbol match)."""
    try:
        return model_panel.align(data_panel, min_overlap=min_overlap, orthologues=orthologues)
    except PanelOverlapError as err:
        raise PanelOverlapError(f"{argument}: {err}; model genes (first 10): {list(model_panel.genes[:10])}") from err


class AlignedSamples(Dataset):
    """Wraps a `PatchDataset`: genes reordered to the model panel (missing genes zero), item index attached."""

    def __init__(self, dataset: PatchDataset, alignment: PanelAlignment | None = None):
        self.dataset = dataset
        self.alignment = alignment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        genes = item["genes"]
        if self.alignment is not None:
            genes = apply_alignment(genes, self.alignment)
        return {"images": item["images"], "genes": genes, "index": torch.tensor(index, dtype=torch.int64)}


class StepSampler(Sampler[int]):
    """Dataset indices of one process for steps ``start_step .. max_steps - 1`` (see module doc)."""

    def __init__(self, *, start_step: int, max_steps: int, batch_size: int, accumulation: int, rank: int, world: int):
        self.start_step, self.max_steps = start_step, max_steps
        self.batch_size, self.accumulation, self.rank, self.world = batch_size, accumulation, rank, world

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world * self.accumulation

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0) * self.batch_size * self.accumulation

    def __iter__(self) -> Iterator[int]:
        b = self.batch_size
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.accumulation):
                for i in range(b):
                    yield step * self.global_batch + micro * self.world * b + self.rank * b + i


def step_and_sample(index: int, global_batch: int) -> tuple[int, int]:
    """(global step, global sample index) of a dataset item index."""
    return index // global_batch, index % global_batch
