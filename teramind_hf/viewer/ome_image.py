"""What a viewer needs from an OME-Zarr image: levels, axes, micrometre placement and channels, read from the
metadata files alone (no zarr import, no pixel read), so `teramind view` can refuse bad input and print a
neuroglancer link at once.

Placement follows the OME-NGFF rules: a level's pixel ``i`` has its centre at ``translation + i * scale``, with
each dataset's transformations applied first and the multiscale's own (if any) after them. Every spatial value
is converted to micrometres from the axis unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.store import read_json_object

# OME-NGFF spatial units a viewer here converts; the output writes "micrometer"
MICROMETRES_PER_UNIT = {
    "angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6,
}

# viewer colours by stain name (RGB hex), the ones the output's omero metadata gives since outputs made before it
# gave PolyT white, which drawn additively over a blue DAPI hides it; other channels keep their omero colour.
STAIN_COLORS = {"DAPI": "0000FF", "PolyT": "00FF00"}
FALLBACK_COLORS = ("0000FF", "00FF00", "FF00FF", "FFFF00", "00FFFF", "FF0000")


@dataclass(frozen=True)
class Channel:
    label: str
    color: str  # RGB hex, no '#'
    window: tuple[float, float]  # display range (contrast limits)


@dataclass(frozen=True)
class OmeImage:
    """An OME-Zarr image group, as a viewer places it. Spatial values are in micrometres, in axis order."""

    path: Path
    zarr_format: int  # 2 or 3 (neuroglancer's zarr2:// or zarr3:// source)
    axes: tuple[str, ...]  # e.g. ("c", "z", "y", "x")
    channel_axis: int | None  # index of the axis of type "channel", if any
    level_paths: tuple[str, ...]
    level_shapes: tuple[tuple[int, ...], ...]
    level_scales_um: tuple[tuple[float, ...], ...]  # per level, per axis (1.0 on the channel axis)
    level_translations_um: tuple[tuple[float, ...], ...]
    channels: tuple[Channel, ...]
    sharded: bool  # level 0 stored in zarr v3 shards (a viewer needs HTTP Range requests)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.axes)) if i != self.channel_axis)

    def extent_um(self, axis: int) -> tuple[float, float]:
        """Physical range covered by level 0 along ``axis``: from the first pixel's lower edge to the last's
        upper edge (pixel centres at translation + i * scale)."""
        scale, shift, n = self.level_scales_um[0][axis], self.level_translations_um[0][axis], self.level_shapes[0][axis]
        return shift - scale / 2, shift + (n - 0.5) * scale


def _transform(transforms: list, ndim: int, where: str) -> tuple[list[float], list[float]]:
    """``(scale, translation)`` of an NGFF list of coordinate transformations (scale, translation, identity)."""
    scale, shift = [1.0] * ndim, [0.0] * ndim
    if not isinstance(transforms, list):
        raise ValueError(f"{where}: coordinateTransformations must be a list, got {type(transforms).__name__}")
    for step in transforms:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "identity":
            continue
        values = step.get(kind) if kind in ("scale", "translation") else None
        if not (isinstance(values, list) and len(values) == ndim and all(isinstance(v, (int, float)) for v in values)):
            raise ValueError(f"{where}: expected a scale or translation of {ndim} numbers, got {step!r}")
        if kind == "scale":
            scale = [s * v for s, v in zip(scale, values)]
            shift = [t * v for t, v in zip(shift, values)]
        else:
            shift = [t + v for t, v in zip(shift, values)]
    return scale, shift


def _read_metadata(path: Path) -> tuple[int, dict]:
    """Zarr format and the NGFF attributes (the content of ``ome`` for NGFF 0.5) of the group at ``path``."""
    if (path / "zarr.json").is_file():
        meta = read_json_object(path / "zarr.json", "zarr v3 group metadata")
        attributes = meta.get("attributes") or {}
        return 3, dict(attributes.get("ome") or attributes)
    if (path / ".zattrs").is_file():
        return 2, read_json_object(path / ".zattrs", "zarr v2 attributes")
    raise ValueError(f"{path}: not an OME-Zarr image (no zarr.json or .zattrs); expected the output of `teramind generate`")


def _array_metadata(path: Path, zarr_format: int) -> tuple[tuple[int, ...], bool]:
    name = "zarr.json" if zarr_format == 3 else ".zarray"
    if not (path / name).is_file():
        raise ValueError(f"{path}: level array missing (no {name})")
    meta = read_json_object(path / name, f"zarr v{zarr_format} array metadata")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"{path / name}: expected a shape of non-negative integers, got {shape!r}")
    sharded = any(isinstance(c, dict) and c.get("name") == "sharding_indexed" for c in meta.get("codecs") or [])
    return tuple(shape), sharded


def read_ome_image(path: str | Path) -> OmeImage:
    """The image at ``path`` (an OME-Zarr image group: multiscales with axes and datasets). FileNotFoundError for
    a missing path; ValueError naming the file and field for anything a viewer cannot place."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected an OME-Zarr output of `teramind generate`)")
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; expected an OME-Zarr output of `teramind generate`")
    zarr_format, ome = _read_metadata(path)
    multiscales = ome.get("multiscales")
    if not (isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict)):
        raise ValueError(f"{path}: no OME-NGFF 'multiscales' metadata; expected an OME-Zarr image such as "
                         "the output of `teramind generate`")
    multiscale = multiscales[0]
    where = f"{path}: multiscales[0]"
    axes_meta = multiscale.get("axes")
    if not (isinstance(axes_meta, list) and axes_meta and all(isinstance(a, dict) and "name" in a for a in axes_meta)):
        raise ValueError(f"{where}.axes: expected a list of named axes, got {axes_meta!r}")
    axes = tuple(str(a["name"]) for a in axes_meta)
    ndim = len(axes)
    channel_axes = [i for i, a in enumerate(axes_meta) if a.get("type") == "channel"]
    channel_axis = channel_axes[0] if channel_axes else None
    to_um = []
    for i, axis in enumerate(axes_meta):
        if i == channel_axis:
            to_um.append(1.0)
        elif axis.get("type") == "space" and axis.get("unit") in MICROMETRES_PER_UNIT:
            to_um.append(MICROMETRES_PER_UNIT[axis["unit"]])
        else:
            raise ValueError(f"{where}.axes[{i}] ({axis['name']}): expected a space axis with a unit among "
                             f"{sorted(MICROMETRES_PER_UNIT)} or the channel axis, got {axis!r}")
    if {"y", "x"} - set(axes):
        raise ValueError(f"{where}.axes: expected axes named y and x, got {list(axes)}")
    datasets = multiscale.get("datasets")
    if not (isinstance(datasets, list) and datasets and all(isinstance(d, dict) and "path" in d for d in datasets)):
        raise ValueError(f"{where}.datasets: expected a list of levels with a path, got {datasets!r}")
    outer_scale, outer_shift = _transform(multiscale.get("coordinateTransformations", []), ndim, where)
    paths, shapes, scales, shifts, sharded = [], [], [], [], False
    for k, dataset in enumerate(datasets):
        scale, shift = _transform(dataset.get("coordinateTransformations", []), ndim, f"{where}.datasets[{k}]")
        shape, level_sharded = _array_metadata(path / str(dataset["path"]), zarr_format)
        if len(shape) != ndim:
            raise ValueError(f"{path / str(dataset['path'])}: {len(shape)} dimensions, but the axes name {ndim}")
        paths.append(str(dataset["path"]))
        shapes.append(shape)
        scales.append(tuple(s * o * u for s, o, u in zip(scale, outer_scale, to_um)))
        shifts.append(tuple((t * o + p) * u for t, o, p, u in zip(shift, outer_scale, outer_shift, to_um)))
        sharded = sharded or (k == 0 and level_sharded)
    return OmeImage(
        path=path, zarr_format=zarr_format, axes=axes, channel_axis=channel_axis, level_paths=tuple(paths),
        level_shapes=tuple(shapes), level_scales_um=tuple(scales), level_translations_um=tuple(shifts),
        channels=_channels(ome, shapes[0][channel_axis] if channel_axis is not None else 1), sharded=sharded,
    )


def _channels(ome: dict, count: int) -> tuple[Channel, ...]:
    """Label, viewer colour and display window of each channel: the omero metadata where it has them."""
    listed = (ome.get("omero") or {}).get("channels") if isinstance(ome.get("omero"), dict) else None
    listed = listed if isinstance(listed, list) else []
    channels = []
    for k in range(count):
        entry = listed[k] if k < len(listed) and isinstance(listed[k], dict) else {}
        label = str(entry.get("label") or f"channel {k}")
        color = STAIN_COLORS.get(label) or str(entry.get("color") or FALLBACK_COLORS[k % len(FALLBACK_COLORS)])
        window = entry.get("window") if isinstance(entry.get("window"), dict) else {}
        start, end = window.get("start"), window.get("end")
        if not all(isinstance(v, (int, float)) for v in (start, end)):
            start, end = 0, 255  # no usable window: the uint8 range of the output
        channels.append(Channel(label=label, color=color.upper().lstrip("#"), window=(float(start), float(end))))
    return tuple(channels)
