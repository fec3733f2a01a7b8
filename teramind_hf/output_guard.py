"""Inputs are sacred: the one check every command runs before it writes, and the one way it deletes.

- :func:`check_output_location`: an output path that is, contains or lies inside one of the command's inputs is
  refused (after resolving symlinks), ``--overwrite`` or not: writing there would change or delete that input.
- :func:`check_replaceable` / :func:`remove_output`: ``--overwrite`` deletes only an output this project wrote,
  recognised by its own marker (:data:`OUTPUT_MARKERS`); anything else is refused by name. An empty folder holds
  nothing to lose and counts as replaceable.

Torch-free and zarr-free (markers are read from the JSON metadata files), so the CLI can check before importing
the heavy libraries. Non-local fsspec URLs are compared as normalised strings (no symlinks to resolve there).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

PathLike = str | Path


class OutputOverlapsInputError(ValueError):
    """The output path is, contains or lies inside an input of the same command."""


class NotOurOutputError(FileExistsError):
    """``--overwrite`` was asked to replace something that this project did not write."""


# ---------------------------------------------------------------------------------------------- locations
def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _normalised(location: PathLike) -> str | Path:
    """A comparable form: the resolved local path (symlinks followed), or the URL without a trailing slash."""
    text = str(location)
    if _is_url(text):
        return text.rstrip("/")
    return Path(text.removeprefix("file://")).expanduser().resolve()


def _relation(output: str | Path, source: str | Path) -> str | None:
    """How ``output`` relates to ``source``: "is", "contains", "lies inside" or None (disjoint)."""
    if isinstance(output, Path) != isinstance(source, Path):
        return None  # a local path and a URL never overlap
    if output == source:
        return "is"
    if isinstance(output, Path):
        if source.is_relative_to(output):
            return "contains"
        if output.is_relative_to(source):
            return "lies inside"
        return None
    if source.startswith(output + "/"):
        return "contains"
    if output.startswith(source + "/"):
        return "lies inside"
    return None


def _flatten(inputs: Mapping[str, PathLike | Iterable[PathLike] | None]) -> list[tuple[str, PathLike]]:
    pairs = []
    for label, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, Path)) else list(value)
        pairs.extend((label, v) for v in values if v is not None and str(v) != "")
    return pairs


def check_output_location(
    output: PathLike | None, inputs: Mapping[str, PathLike | Iterable[PathLike] | None], argument: str = "--out"
) -> None:
    """Refuse an ``output`` that is, contains or lies inside any of ``inputs`` (``{"--genes": path, ...}``; a
    value may be a list of paths, or None). Local paths are compared after resolving symlinks, so a link to an
    input is that input. Raises :class:`OutputOverlapsInputError` naming the output, the input and why."""
    if output is None or str(output) == "":
        return
    target = _normalised(output)
    for label, source in _flatten(inputs):
        relation = _relation(target, _normalised(source))
        if relation is None:
            continue
        why = {
            "is": "writing it would replace that input",
            "contains": "replacing or writing it could delete or change that input",
            "lies inside": "writing there would change that input",
        }[relation]
        raise OutputOverlapsInputError(f"{argument} {output} {relation} the input {label} {source}: {why}; choose another {argument}")


# ---------------------------------------------------------------------------------------------- markers
def _read_json(location: str, name: str) -> dict | None:
    """``location/name`` parsed as a JSON object, or None (absent, unreadable, not an object)."""
    try:
        if _is_url(location):
            import fsspec

            with fsspec.open(f"{location.rstrip('/')}/{name}", "rt") as handle:
                value = json.load(handle)
        else:
            value = json.loads((Path(location.removeprefix("file://")) / name).read_text())
    except (OSError, ValueError, ImportError):
        return None
    return value if isinstance(value, dict) else None


def zarr_attributes(location: PathLike) -> dict:
    """The root group attributes of a zarr v3 (``zarr.json``) or v2 (``.zattrs``) folder; {} if there are none."""
    location = str(location)
    v3 = _read_json(location, "zarr.json")
    if v3 is not None:
        attributes = v3.get("attributes")
        return attributes if isinstance(attributes, dict) else {}
    return _read_json(location, ".zattrs") or {}


def _is_generate_output(location: str) -> bool:
    record = zarr_attributes(location).get("teramind")
    return isinstance(record, dict) and "run" in record


def _is_ingested_gene_store(location: str) -> bool:
    attributes = zarr_attributes(location)
    return isinstance(attributes.get("ingest"), dict) and "gene_names" in attributes


def _is_pipeline_folder(location: str) -> bool:
    index = _read_json(location, "model_index.json") or {}
    return index.get("_class_name") == "TeraMindPipeline"


def _is_training_checkpoint(location: str) -> bool:
    config = _read_json(location, "training_config.json") or {}
    return Path(location).name.startswith("checkpoint-") and "step" in config and "unet" in config


def _is_exported_image(location: str) -> bool:
    return isinstance(zarr_attributes(location).get("teramind_export"), dict)  # data.export.EXPORT_MARKER


# kind -> (what it is, recogniser): the marker each writer leaves in what it writes
OUTPUT_MARKERS = {
    "generate": ("a `teramind generate` output (run record)", _is_generate_output),
    "gene_store": ("a gene store written by `teramind ingest` (ingest record)", _is_ingested_gene_store),
    "pipeline": ("a TeraMindPipeline folder (model_index.json)", _is_pipeline_folder),
    "exported_image": ("an image element written by `teramind export` (teramind_export attribute)", _is_exported_image),
    "checkpoint": ("a `teramind train` checkpoint (training_config.json)", _is_training_checkpoint),
}


def _exists_and_is_empty(location: str) -> tuple[bool, bool]:
    if _is_url(location):
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        if not fs.exists(path):
            return False, False
        return True, fs.isdir(path) and not [p for p in fs.ls(path) if p.rstrip("/") != path.rstrip("/")]
    path = Path(location.removeprefix("file://"))
    if not path.exists() and not path.is_symlink():
        return False, False
    return True, path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def output_kind(location: PathLike, kinds: Iterable[str]) -> str | None:
    """The first of ``kinds`` (keys of :data:`OUTPUT_MARKERS`) whose marker ``location`` carries, else None."""
    for kind in kinds:
        if OUTPUT_MARKERS[kind][1](str(location)):
            return kind
    return None


def check_replaceable(location: PathLike, kinds: Iterable[str], argument: str = "--out") -> bool:
    """Before ``--overwrite`` replaces ``location``: True if it exists (and may go), False if it does not exist.
    Refuses (:class:`NotOurOutputError`) anything existing that is neither empty nor marked as one of ``kinds``."""
    kinds = tuple(kinds)
    location = str(location)
    exists, empty = _exists_and_is_empty(location)
    if not exists:
        return False
    if not _is_url(location) and Path(location.removeprefix("file://")).is_symlink():
        raise NotOurOutputError(f"{argument} {location} is a symbolic link; --overwrite does not delete through links")
    if empty or output_kind(location, kinds) is not None:
        return True
    expected = " or ".join(OUTPUT_MARKERS[k][0] for k in kinds)
    raise NotOurOutputError(
        f"{argument} {location} exists and is not an output of teramind (expected {expected}); not deleting it: "
        f"choose another {argument} or remove it yourself"
    )


def remove_output(location: PathLike, kinds: Iterable[str], argument: str = "--out") -> None:
    """Delete ``location`` after checking (again, right before deleting) that it is ours: see
    :func:`check_replaceable`. Every deletion of an earlier output in teramind goes through here."""
    location = str(location)
    if not check_replaceable(location, kinds, argument):
        return
    if _is_url(location):
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        fs.rm(path, recursive=True)
    else:
        shutil.rmtree(Path(location.removeprefix("file://")))


def probe_writable(folder: Path, what: str) -> None:
    """Create and remove an empty file in ``folder``: PermissionError naming it (after ``what``) if that fails. The
    probe's name carries host and process, so processes on a shared file system never meet."""
    import os
    import socket
    import uuid

    probe = folder / f".teramind-write-probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{what}: {folder} is not writable ({err.strerror})") from err


def check_can_create(location: PathLike, argument: str = "--out") -> None:
    """Before a long computation: the nearest existing folder at or above a local ``location`` can be written
    (PermissionError naming it otherwise). URLs are not probed."""
    text = str(location)
    if _is_url(text):
        return
    folder = Path(text.removeprefix("file://")).expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{argument} {location}: {folder} is a file, so nothing can be created below it")
    probe_writable(folder, f"{argument} {location}")
