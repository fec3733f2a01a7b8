"""The gene / training store layout (a zarr v3 group), in a module without torch so ingestion stays light.

* `genes`: (G, Z, H // gene_bin, W // gene_bin) float32 counts, chunks (G, 1, chunk/bin, chunk/bin);
* `images` (optional for a gene-only store): (2, Z, H, W) uint8, DAPI then PolyT, chunks (1, 1, chunk, chunk);
* attributes `gene_names`, `gene_bin`, `um_per_px` and any extra ones (`teramind ingest` adds
  `section_spacing_um`, `origin_um`, `coordinate_system` and an `ingest` provenance record).

`teramind generate` reads `genes` + `gene_names`; training and `teramind eval` also need `images`.

Reading a store goes through :func:`open_zarr`, :func:`open_member` and :func:`store_attributes`: damaged metadata
or chunks raise :class:`DamagedDataError` and bad attributes ``ValueError``, each naming the file and field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .panel import GenePanel


def create_training_store(
    path: str | Path,
    panel: GenePanel,
    num_slices: int,
    height: int,
    width: int,
    *,
    gene_bin: int = 16,
    um_per_px: float | None = None,
    chunk: int = 256,
    compressors: Any = "auto",
    images: bool = True,
    attrs: dict | None = None,
):
    """Create an empty store (see module doc) to fill chunk by chunk; returns the zarr group."""
    import zarr

    if height % gene_bin or width % gene_bin:
        raise ValueError(f"training store: height/width {height}x{width} must be multiples of gene_bin={gene_bin}")
    if chunk % gene_bin:
        raise ValueError(f"training store: chunk={chunk} must be a multiple of gene_bin={gene_bin}")
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update({"gene_names": list(panel.genes), "gene_bin": gene_bin, "um_per_px": um_per_px, **(attrs or {})})
    extra = {} if compressors == "auto" else {"compressors": compressors}
    if images:
        group.create_array(
            "images", shape=(2, num_slices, height, width), dtype="uint8", chunks=(1, 1, chunk, chunk), fill_value=0,
            **extra,
        )
    cb = chunk // gene_bin
    group.create_array(
        "genes",
        shape=(len(panel), num_slices, height // gene_bin, width // gene_bin),
        dtype="float32",
        chunks=(len(panel), 1, cb, cb),
        fill_value=0.0,
        **extra,
    )
    return group


# ---------------------------------------------------------------------------------------------- reading stores
class DamagedDataError(ValueError):
    """Stored data that cannot be read back (a chunk that does not decode, metadata that is not a valid zarr or
    HDF5 header, a file cut short); the message names the file or store."""


# what zarr / numcodecs raise when a chunk's bytes do not decode: zstd and blosc RuntimeError, gzip OSError or
# EOFError, an uncompressed chunk of the wrong size ValueError
CHUNK_DECODE_ERRORS = (RuntimeError, OSError, EOFError, ValueError)
# what zarr raises for metadata that is valid JSON but not valid zarr (unknown dtype, wrong field types)
METADATA_ERRORS = (ValueError, TypeError, KeyError)


class CheckedArray:
    """A read-only view of a zarr array whose reads raise :class:`DamagedDataError` naming the array's path
    (e.g. ``store.zarr/genes``) when a chunk does not decode. Everything else is the array's own."""

    def __init__(self, array: Any, location: str):
        self._array, self.location = array, location

    def __getitem__(self, key):
        try:
            return self._array[key]
        except CHUNK_DECODE_ERRORS as err:
            raise DamagedDataError(
                f"{self.location}: a chunk cannot be read ({type(err).__name__}: {err}); the store is damaged or was "
                "written incompletely"
            ) from err

    def __getattr__(self, name: str):
        return getattr(self._array, name)

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        return np.asarray(self[...], dtype=dtype)

    def __len__(self) -> int:
        return len(self._array)


def _check_metadata_files(location: str, members: tuple[str, ...] = ()) -> None:
    """A local store's ``zarr.json`` (and its members') must be JSON objects: zarr reports anything else with
    errors that do not name the file."""
    if "://" in location and not location.startswith("file://"):
        return
    root = Path(location.removeprefix("file://"))
    for member in ("", *members):
        path = root / member / "zarr.json"
        if not path.is_file():
            continue
        read_json_object(path, "zarr v3 metadata (a JSON object)", DamagedDataError)


def read_json_object(path: Path, expected: str = "a JSON object", error: type[ValueError] = ValueError) -> dict:
    """A JSON file that must hold an object: ``error`` naming the file and what was expected otherwise."""
    import json

    try:
        value = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise error(f"{path}: not valid JSON ({err}); expected {expected}") from err
    if not isinstance(value, dict):
        raise error(f"{path}: expected {expected}, got a JSON {type(value).__name__}")
    return value


def open_zarr(location: str | Path, what: str = "zarr store"):
    """``zarr.open(location, mode="r")`` (group or array); a store whose metadata zarr cannot parse is refused with
    :class:`DamagedDataError` naming its ``zarr.json``. A missing location is ``FileNotFoundError``."""
    import zarr

    location = str(location)
    _check_metadata_files(location)
    try:
        return zarr.open(location, mode="r")
    except FileNotFoundError:
        raise
    except METADATA_ERRORS as err:
        raise DamagedDataError(f"{location}/zarr.json: not a readable {what} ({type(err).__name__}: {err})") from err


def open_member(group: Any, name: str, location: str | Path) -> CheckedArray:
    """The array ``group[name]`` of the store at ``location``, as a :class:`CheckedArray`; its metadata is checked
    the way :func:`open_zarr` checks the group's; ``KeyError`` if there is none."""
    location = str(location).rstrip("/")
    _check_metadata_files(location, (name,))
    try:
        if name not in group:
            raise KeyError(f"{location} has no {name!r} array")
        array = group[name]
    except KeyError:
        raise
    except METADATA_ERRORS as err:
        raise DamagedDataError(f"{location}/{name}/zarr.json: not a readable zarr array ({type(err).__name__}: {err})") from err
    return CheckedArray(array, f"{location}/{name}")


def _positive_number(value: Any, key: str, location: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{location}: attribute {key!r} must be a finite number > 0, got {value!r}")
    return float(value)


def store_attributes(attrs: Any, location: str | Path) -> dict:
    """The attributes of a gene / training store, validated where this package reads them: ``gene_names`` a list
    of non-empty strings, ``gene_bin`` a whole number >= 1, ``um_per_px`` and ``section_spacing_um``
    finite and > 0 (each may be absent or null). Errors name the store and the attribute."""
    location = str(location)
    if not isinstance(attrs, Mapping):
        raise ValueError(f"{location}: store attributes must be a JSON object, got {type(attrs).__name__}")
    attrs = dict(attrs)
    names = attrs.get("gene_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"{location}: attribute 'gene_names' must be a list of non-empty gene symbols (strings), got {str(names)[:80]}")
        if not names:
            raise ValueError(f"{location}: attribute 'gene_names' is an empty list; expected the store's gene symbols")
    gene_bin = attrs.get("gene_bin")
    if gene_bin is not None and (isinstance(gene_bin, bool) or not isinstance(gene_bin, int) or gene_bin < 1):
        raise ValueError(f"{location}: attribute 'gene_bin' must be a whole number of px >= 1, got {gene_bin!r}")
    for key in ("um_per_px", "section_spacing_um"):
        if attrs.get(key) is not None:
            attrs[key] = _positive_number(attrs[key], key, location)
    if attrs.get("origin_um") is not None:
        attrs["origin_um"] = check_origin_um(attrs["origin_um"], f"{location}: attribute 'origin_um'")
    return attrs


def check_origin_um(value: Any, name: str) -> tuple[float, float]:
    """A micron origin (y, x): two finite numbers, else a ValueError naming ``name``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be two numbers (y, x) in micrometres, got {value!r}")
    try:
        numbers = tuple(float(v) for v in value if not isinstance(v, bool))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{name} must be two finite numbers (y, x) in micrometres, got {value!r}")
    return numbers


def parse_origin_um(text: str, option: str = "--origin-um") -> tuple[float, float]:
    """``"Y,X"`` (micrometres) -> ``(y, x)``; a ValueError naming ``option`` otherwise."""
    parts = str(text).split(",")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise ValueError(f"{option} must be two comma-separated numbers Y,X in micrometres, got {text!r}") from None
    return check_origin_um(values, f"{option} {text!r}")
