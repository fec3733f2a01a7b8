"""Inputs of an evaluation: generated and true volumes and region labels, opened lazily and aligned.

A volume is read as ``(2, Z, H, W)`` (stain first, as in OME-Zarr outputs and training stores) from

* an OME-Zarr written by ``teramind generate`` (level 0; its ``teramind.run`` record gives the region, the
  sections, the pixel size, the seed, the model and the gene source);
* a gene/image store (``store.zarr`` from ``teramind phantom --formats store``: its ``images`` array);
* an image TIFF ``(2, Z, H, W)`` (``images.tif`` of ``teramind phantom``);
* a numpy array ``(Z, 2, H, W)`` (the pipeline's output layout), uint8 or float in [-1, 1].

Nothing is read until a block is asked for, so a whole-brain store costs no memory to open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_REGION_LABELS = 64


@dataclass
class EvalVolume:
    """A ``(2, Z, H, W)`` array-like and where it lies in the truth's pixels."""

    data: Any  # array-like (2, Z, H, W), sliceable (zarr, numpy, memmap)
    source: str
    um_per_px: float | None = None
    origin: tuple[int, int, int] | None = None  # (first section, y0, x0) in the gene/truth source, if known
    run: dict | None = None  # the teramind.run record of a generated OME-Zarr
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.data.shape)

    def block(self, z: int, ys: slice, xs: slice) -> np.ndarray:
        """``(2, h, w)`` of section ``z``."""
        return np.asarray(self.data[:, z, ys, xs])

    def cropped(self, origin: tuple[int, int, int], shape: tuple[int, int, int, int]) -> "EvalVolume":
        """The part of this volume under another volume of ``shape`` placed at ``origin`` (a lazy view)."""
        z0, y0, x0 = origin
        _, z, h, w = shape
        full = self.shape
        if z0 < 0 or y0 < 0 or x0 < 0 or z0 + z > full[1] or y0 + h > full[2] or x0 + w > full[3]:
            raise ValueError(
                f"{self.source}: the generated region (sections {z0}..{z0 + z}, y {y0}..{y0 + h}, x {x0}..{x0 + w}) "
                f"lies outside this volume of shape (stains, Z, H, W) = {full}"
            )
        view = _Crop(self.data, (z0, y0, x0), (z, h, w))
        return EvalVolume(view, self.source, self.um_per_px, None, self.run, self.attrs)


class _Crop:
    """A lazy ``(2, z, h, w)`` window of a larger ``(2, Z, H, W)`` array-like."""

    def __init__(self, data, origin, size):
        self.data, self.origin, self.size = data, origin, size
        self.shape = (data.shape[0], *size)

    def __getitem__(self, key):
        stains, z, ys, xs = key
        z0, y0, x0 = self.origin
        # the block reader always passes an int section and slices with explicit start and stop
        return self.data[stains, z + z0, slice(ys.start + y0, ys.stop + y0), slice(xs.start + x0, xs.stop + x0)]


class _StainFirst:
    """A ``(Z, 2, H, W)`` array read as ``(2, Z, H, W)`` without copying."""

    def __init__(self, data):
        self.data = data
        self.shape = (data.shape[1], data.shape[0], *data.shape[2:])

    def __getitem__(self, key):
        stains, z, ys, xs = key
        block = np.asarray(self.data[z, stains, ys, xs])
        return block if isinstance(z, (int, np.integer)) else np.swapaxes(block, 0, 1)


def open_volume(obj, role: str) -> EvalVolume:
    """``obj`` (path or array, see the module doc) as an :class:`EvalVolume`; ``role`` names it in errors."""
    if isinstance(obj, EvalVolume):
        return obj
    if not isinstance(obj, (str, Path)):
        array = np.asarray(obj) if not hasattr(obj, "shape") else obj
        if len(array.shape) != 4 or array.shape[1] != 2:
            raise ValueError(f"{role} array must be (Z, 2, H, W) (stains DAPI, PolyT), got shape {tuple(array.shape)}")
        return EvalVolume(_StainFirst(array), f"<{role} array>")
    path = str(obj)
    if not Path(path).exists():
        raise FileNotFoundError(f"{role} not found: {path}")
    if path.endswith((".tif", ".tiff")):
        import tifffile

        return _checked(EvalVolume(tifffile.memmap(path) if _is_memmappable(path) else tifffile.imread(path), path), role)
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # zarr raises several types for "not a zarr group"
        raise ValueError(f"{role} {path}: not an OME-Zarr output, image store (zarr) or image TIFF ({err})") from err
    attrs = dict(group.attrs)
    multiscales = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if multiscales:
        run = (attrs.get("teramind") or {}).get("run")
        origin = (int(run["slices"][0]), int(run["region_yxhw"][0]), int(run["region_yxhw"][1])) if run else None
        level0 = group[multiscales[0]["datasets"][0]["path"]]
        volume = EvalVolume(level0, path, (run or {}).get("um_per_px"), origin, run, attrs)
        if (attrs.get("teramind") or {}).get("complete") is False:
            raise ValueError(f"{role} {path}: the generation run is not complete (resume it with teramind generate)")
        return _checked(volume, role)
    if "images" in group:
        from ..data.store import open_member, store_attributes

        attrs = store_attributes(attrs, path)
        return _checked(EvalVolume(open_member(group, "images", path), path, attrs.get("um_per_px"), None, None, attrs), role)
    raise ValueError(f"{role} {path}: zarr group has neither OME-Zarr multiscales nor an 'images' array")


def _is_memmappable(path: str) -> bool:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return bool(tif.series) and tif.series[0].dataoffset is not None


def _checked(volume: EvalVolume, role: str) -> EvalVolume:
    if len(volume.shape) != 4 or volume.shape[0] != 2:
        raise ValueError(f"{role} {volume.source}: images must be (2 stains, Z, H, W), got shape {volume.shape}")
    return volume


def align(generated: EvalVolume, truth: EvalVolume) -> tuple[EvalVolume, tuple[int, int, int]]:
    """The truth under the generated volume, and where that lies in the truth's own frame.

    A generated OME-Zarr's run record locates it in a larger truth (a store, TIFF or another OME-Zarr); a truth
    array of exactly the generated shape is taken as that region itself; otherwise the shapes must be equal."""
    offset = (0, 0, 0)
    is_region_array = truth.source.startswith("<") and truth.shape == generated.shape
    if generated.origin is not None and not is_region_array:
        offset = tuple(g - t for g, t in zip(generated.origin, truth.origin or (0, 0, 0)))
        truth = truth.cropped(offset, generated.shape)
    if truth.shape != generated.shape:
        raise ValueError(
            f"shape mismatch: generated {generated.source} is (stains, Z, H, W) = {generated.shape} but truth "
            f"{truth.source} is {truth.shape} (only a generated OME-Zarr's run record can place it in a larger truth)"
        )
    return truth, offset


@dataclass
class RegionLabels:
    """A ``(Z, H, W)`` integer region image (every value a region, 0 included) and the regions' names."""

    data: Any
    source: str
    names: dict[int, str]
    values: list[int]

    def block(self, z: int, ys: slice, xs: slice) -> np.ndarray:
        return np.asarray(self.data[z, ys, xs])


def open_labels(path, truth_shape: tuple[int, int, int, int], origin: tuple[int, int, int] | None) -> RegionLabels:
    """Region labels ``(Z, H, W)`` in the truth's pixels (TIFF, .npy or zarr array), cropped like the truth.

    Names come from a ``phantom.json`` beside (or one folder above) the file when it lists ``regions``."""
    if not isinstance(path, (str, Path)):
        data, source = np.asarray(path), "<labels array>"
    else:
        source = str(path)
        if not Path(source).exists():
            raise FileNotFoundError(f"labels file not found: {source}")
        if source.endswith((".tif", ".tiff")):
            import tifffile

            data = tifffile.imread(source)
        elif source.endswith(".npy"):
            data = np.load(source, mmap_mode="r", allow_pickle=False)
        else:
            import zarr

            try:
                data = zarr.open_array(source, mode="r")
            except Exception as err:
                raise ValueError(f"labels {source}: expected a (Z, H, W) TIFF, .npy or zarr array ({err})") from err
    if len(data.shape) != 3 or not np.issubdtype(np.dtype(data.dtype), np.integer):
        raise ValueError(f"labels {source}: expected an integer (Z, H, W) region image, got {data.dtype} {tuple(data.shape)}")
    _, z, h, w = truth_shape
    z0, y0, x0 = origin or (0, 0, 0)
    if data.shape[0] < z0 + z or data.shape[1] < y0 + h or data.shape[2] < x0 + w:
        raise ValueError(
            f"labels {source}: shape (Z, H, W) = {tuple(data.shape)} does not cover the evaluated region "
            f"(sections {z0}..{z0 + z}, y {y0}..{y0 + h}, x {x0}..{x0 + w})"
        )
    data = np.asarray(data[z0 : z0 + z, y0 : y0 + h, x0 : x0 + w])
    values = [int(v) for v in np.unique(data)]
    if len(values) > MAX_REGION_LABELS:
        raise ValueError(
            f"labels {source}: {len(values)} distinct values; expected a region image with at most "
            f"{MAX_REGION_LABELS} regions (e.g. ground_truth/regions.tif of a phantom), not cell labels"
        )
    return RegionLabels(data, source, _region_names(source, values), values)


def _region_names(source: str, values: list[int]) -> dict[int, str]:
    names = {v: f"label_{v}" for v in values}
    if source.startswith("<"):
        return names
    for folder in (Path(source).parent, Path(source).parent.parent):
        meta = folder / "phantom.json"
        if meta.is_file():
            regions = json.loads(meta.read_text()).get("regions") or []
            names.update({v: str(regions[v]) for v in values if 0 <= v < len(regions)})
            break
    return names
