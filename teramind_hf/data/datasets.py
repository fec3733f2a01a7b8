"""Training samples as the official training makes them, read lazily from a zarr store.

Store layout (`write_training_store` / `create_training_store`), a zarr v3 group:
* `images`: (2, Z, H, W) uint8, DAPI then PolyT, chunks (1, 1, chunk, chunk);
* `genes`: (G, Z, H // gene_bin, W // gene_bin) float32 counts, chunks (G, 1, chunk/bin, chunk/bin);
* attributes `gene_names`, `gene_bin`, `um_per_px`.

`PatchDataset` yields dicts with `images` float32 (2 stains, 2 slices, crop, crop) in [-1, 1]
(uint8 / 127.5 - 1) and `genes` float32 (G, 4, crop / gene_bin, crop / gene_bin): the gene
slices z-1..z+2 around image slices z, z+1 (zeros beyond the volume ends), after one random
rot90 and flip applied identically to both. Crops start on the gene grid (multiples of
`gene_bin`) because the store holds binned genes. Each index draws from its own generator
seeded by (seed, epoch, index), so samples are reproducible in any worker order.

`to_hf_dataset` / `from_hf_dataset` convert a volume to a Hugging Face `datasets.Dataset`
(one row per section) and back bit-identically; `dataset_card` writes its README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .panel import GenePanel
from .store import create_training_store  # noqa: F401  (the store layout lives in a torch-free module)
from .store import open_member, open_zarr, store_attributes
from .volume import SpatialVolume

GENE_CONTEXT = (1, 2)  # gene slices before / after the first image slice: z-1 .. z+2
IMAGE_SLICES = 2


def write_training_store(volume: SpatialVolume, path: str | Path, *, chunk: int = 256) -> Path:
    """Write a `SpatialVolume` (with images) as a training store, one section at a time."""
    if volume.images is None:
        raise ValueError("write_training_store: the volume has no images (training needs DAPI/PolyT)")
    height, width = volume.image_shape
    group = create_training_store(
        path, volume.panel, volume.num_slices, height, width,
        gene_bin=volume.gene_bin, um_per_px=volume.um_per_px, chunk=chunk,
        # a SpatialVolume's pixel (0, 0) is micron 0 of its own frame (phantoms, official tiles)
        attrs={"origin_um": [0.0, 0.0]},
    )
    for z in range(volume.num_slices):
        group["images"][:, z] = volume.images[:, z]
        group["genes"][:, z] = volume.genes[:, z]
    return Path(path)


def read_training_store(path: str | Path) -> SpatialVolume:
    """Load a whole training store into memory (small stores only)."""
    group = _open_store(path)
    return SpatialVolume(
        genes=group["genes"][...],
        panel=GenePanel(group.attrs["gene_names"]),
        gene_bin=int(group.attrs["gene_bin"]),
        images=group["images"][...],
        um_per_px=group.attrs.get("um_per_px"),
    )


def _open_store(path: str | Path):
    """The store's group, with its attributes validated (`store.store_attributes`, errors name the store)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: training store not found")
    group = open_zarr(path, "training store")
    for key in ("images", "genes"):
        if key not in group:
            raise ValueError(f"{path}: training store lacks the {key!r} array")
    attrs = store_attributes(group.attrs, path)
    for key in ("gene_names", "gene_bin"):
        if attrs.get(key) is None:
            raise ValueError(f"{path}: training store lacks the {key!r} attribute")
    return group


class PatchDataset(Dataset):
    """Random training crops from a training store (see module doc); `length` samples per epoch."""

    def __init__(
        self,
        store: str | Path,
        *,
        crop_size: int = 256,
        length: int = 1000,
        seed: int = 0,
        augment: bool = True,
    ):
        self.path = Path(store)
        group = _open_store(store)
        self.gene_bin = int(group.attrs["gene_bin"])
        self.panel = GenePanel(group.attrs["gene_names"])
        _, self.num_slices, self.height, self.width = group["images"].shape
        if crop_size % self.gene_bin:
            raise ValueError(f"PatchDataset: crop_size={crop_size} must be a multiple of gene_bin={self.gene_bin}")
        if crop_size > min(self.height, self.width):
            raise ValueError(f"PatchDataset: crop_size={crop_size} exceeds the store's {self.height}x{self.width} px")
        if self.num_slices < IMAGE_SLICES:
            raise ValueError(f"PatchDataset: the store has Z={self.num_slices} sections, need >= {IMAGE_SLICES}")
        if group["genes"].shape[1] != self.num_slices:
            raise ValueError(f"z mismatch: store genes have Z={group['genes'].shape[1]}, images Z={self.num_slices}")
        self.crop_size, self.length, self.seed, self.augment = crop_size, length, seed, augment
        self.epoch = 0
        self._opened = None  # (images, genes), opened lazily in each worker

    def set_epoch(self, epoch: int) -> None:
        """Draw different crops in each epoch (still reproducible)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _arrays(self):
        if self._opened is None:
            group = _open_store(self.path)
            self._opened = tuple(open_member(group, name, self.path) for name in ("images", "genes"))
        return self._opened

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"PatchDataset index {index} out of range 0..{self.length - 1}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        z = int(rng.integers(0, self.num_slices - IMAGE_SLICES + 1))
        b = self.gene_bin
        top = int(rng.integers(0, (self.height - self.crop_size) // b + 1)) * b
        left = int(rng.integers(0, (self.width - self.crop_size) // b + 1)) * b
        rot, flip = (int(rng.integers(0, 4)), bool(rng.integers(0, 2))) if self.augment else (0, False)
        images, genes = self._arrays()
        crop = self.crop_size
        image = images[:, z : z + IMAGE_SLICES, top : top + crop, left : left + crop]
        gene = self._gene_window(genes, z, top // b, left // b, crop // b)
        image, gene = _rotate_flip(image, rot, flip), _rotate_flip(gene, rot, flip)
        return {
            "images": torch.from_numpy(image.astype(np.float32) / 127.5 - 1.0),
            "genes": torch.from_numpy(gene.astype(np.float32)),
            "z": torch.tensor(z),
            "top": torch.tensor(top),
            "left": torch.tensor(left),
        }

    def _gene_window(self, genes, z: int, row: int, col: int, size: int) -> np.ndarray:
        """Gene slices z-1..z+2 of the crop, zero where the window passes the volume ends."""
        before, after = GENE_CONTEXT
        z0, z1 = z - before, z + after + 1
        out = np.zeros((genes.shape[0], z1 - z0, size, size), dtype=np.float32)
        lo, hi = max(z0, 0), min(z1, self.num_slices)
        out[:, lo - z0 : hi - z0] = genes[:, lo:hi, row : row + size, col : col + size]
        return out


def _rotate_flip(array: np.ndarray, rot: int, flip: bool) -> np.ndarray:
    """rot90 `rot` times then optional left-right flip, on the last two axes."""
    array = np.rot90(array, rot, axes=(-2, -1))
    if flip:
        array = array[..., ::-1]
    return np.ascontiguousarray(array)


# --- Hugging Face datasets ----------------------------------------------------------------


def _features(volume: SpatialVolume):
    import datasets

    hb, wb = volume.grid_shape
    height, width = volume.image_shape
    features = {
        "section": datasets.Value("int32"),
        "genes": datasets.Array3D(shape=(len(volume.panel), hb, wb), dtype="float32"),
        "gene_names": datasets.Sequence(datasets.Value("string")),
        "gene_bin": datasets.Value("int32"),
        "um_per_px": datasets.Value("float64"),
    }
    if volume.images is not None:
        features["dapi"] = datasets.Array2D(shape=(height, width), dtype="uint8")
        features["polyt"] = datasets.Array2D(shape=(height, width), dtype="uint8")
    return datasets.Features(features)


def to_hf_dataset(volume: SpatialVolume):
    """A `datasets.Dataset` with one row per section: genes (G, Hb, Wb), dapi/polyt (H, W), panel."""
    import datasets

    def rows():
        for z in range(volume.num_slices):
            row = {
                "section": z,
                "genes": volume.genes[:, z],
                "gene_names": list(volume.panel.genes),
                "gene_bin": volume.gene_bin,
                "um_per_px": float("nan") if volume.um_per_px is None else float(volume.um_per_px),
            }
            if volume.images is not None:
                row["dapi"], row["polyt"] = volume.images[0, z], volume.images[1, z]
            yield row

    return datasets.Dataset.from_generator(rows, features=_features(volume), keep_in_memory=True)


def from_hf_dataset(dataset) -> SpatialVolume:
    """Rebuild the `SpatialVolume` written by `to_hf_dataset` (rows sorted by `section`)."""
    required = ("section", "genes", "gene_names", "gene_bin")
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise ValueError(f"from_hf_dataset: missing column(s) {missing}; found {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("from_hf_dataset: the dataset has no rows (no sections)")
    data = dataset.with_format("numpy")
    order = np.argsort(np.asarray(data["section"]), kind="stable")
    names = list(dataset[0]["gene_names"])
    genes = np.stack([np.asarray(data[int(i)]["genes"], dtype=np.float32) for i in order], axis=1)
    images = None
    if "dapi" in dataset.column_names:
        images = np.stack(
            [np.stack([np.asarray(data[int(i)][stain]) for i in order]) for stain in ("dapi", "polyt")]
        ).astype(np.uint8)
    um = float(dataset[0]["um_per_px"]) if "um_per_px" in dataset.column_names else float("nan")
    return SpatialVolume(
        genes=genes,
        panel=GenePanel(names),
        gene_bin=int(dataset[0]["gene_bin"]),
        images=images,
        um_per_px=None if np.isnan(um) else um,
    )


def dataset_card(volume: SpatialVolume, *, name: str = "teramind-spatial-volume", description: str = ""):
    """A `huggingface_hub.DatasetCard` (README.md with YAML front matter) for an exported volume."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        license="apache-2.0",
        pretty_name=name,
        tags=["spatial-transcriptomics", "merfish", "morphology", "teramind"],
        task_categories=["image-to-image"],
        size_categories=["n<1K"],
    )
    height, width = volume.image_shape
    body = f"""---
{data.to_yaml()}
---

# {name}

{description or "Spatial gene expression with DAPI/PolyT morphology, exported by teramind-hf."}

One row per tissue section ({volume.num_slices} sections).

| column | content |
| --- | --- |
| `section` | section index z (sections are stacked in this order) |
| `genes` | float32 ({len(volume.panel)}, {volume.grid_shape[0]}, {volume.grid_shape[1]}): transcript counts per gene, summed on {volume.gene_bin}x{volume.gene_bin}-px bins |
| `gene_names` | the {len(volume.panel)} gene symbols, in the order of the `genes` axis |
| `gene_bin` | bin size in image pixels ({volume.gene_bin}) |
| `um_per_px` | image pixel size in microns ({volume.um_per_px}) |
| `dapi`, `polyt` | uint8 ({height}, {width}) section images (present when images exist) |

Load with `datasets.load_from_disk` (or `load_dataset`) and
`teramind_hf.data.datasets.from_hf_dataset(ds)` to get a `SpatialVolume` back.
"""
    return DatasetCard(body)


def save_hf_dataset(volume: SpatialVolume, path: str | Path, **card_kwargs: Any) -> Path:
    """`to_hf_dataset(volume).save_to_disk(path)` plus the dataset card as `path/README.md`."""
    to_hf_dataset(volume).save_to_disk(str(path))
    dataset_card(volume, **card_kwargs).save(str(Path(path) / "README.md"))
    return Path(path)
