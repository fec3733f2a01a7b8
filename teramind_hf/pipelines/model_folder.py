"""Checks of a pipeline folder before diffusers reads it: nothing in a model folder is imported, called or unpickled.

* ``trust_remote_code`` / ``custom_pipeline`` are refused (:class:`RemoteCodeError`): both make diffusers import
  Python files from the folder or the Hub;
* ``model_index.json`` may name only this package's and diffusers' classes (a ``[module, class]`` elsewhere would be
  imported);
* each component folder must exist and resolve (a symlink loop is named), and the weights must be safetensors: a
  folder holding only pickled ``.bin`` / ``.pt`` / ``.ckpt`` weights is refused by name, never unpickled.

Each error is a :class:`ModelFolderError` (a ``ValueError``) naming the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.store import read_json_object

# keyword arguments of diffusers' from_pretrained that load Python code from the folder or the Hub
CODE_LOADING_KWARGS = ("trust_remote_code", "custom_pipeline", "custom_revision")
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ALLOWED_LIBRARIES = ("teramind_hf", "diffusers")
PIPELINE_CLASS = "TeraMindPipeline"


class ModelFolderError(ValueError):
    """A pipeline folder this package will not load (message: the file and what was expected)."""


class RemoteCodeError(ModelFolderError):
    """``trust_remote_code`` (or ``custom_pipeline``) was passed: code from a model folder is never run."""


def check_loading_kwargs(kwargs: dict[str, Any]) -> None:
    for key in CODE_LOADING_KWARGS:
        if kwargs.get(key):
            raise RemoteCodeError(
                f"{key}={kwargs[key]!r}: nothing in a model folder is imported or run; TeraMindPipeline loads only its own "
                "classes and safetensors weights (drop the argument)"
            )


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop on Python < 3.13
        raise ModelFolderError(f"{path}: {what} cannot be resolved ({err})") from err


def check_pipeline_folder(path: str | Path) -> None:
    """The folder's model_index.json, component folders and weight files (see module doc)."""
    path = Path(path)
    index_path = path / "model_index.json"
    index = read_json_object(index_path, "a pipeline index (a JSON object)", ModelFolderError)
    if index.get("_class_name", PIPELINE_CLASS) != PIPELINE_CLASS:
        raise ModelFolderError(f"{index_path}: _class_name {index['_class_name']!r} is not {PIPELINE_CLASS!r} (custom pipeline code is never loaded)")
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue
        library = value[0] if value else None
        if library is not None and not (isinstance(library, str) and library.split(".")[0] in ALLOWED_LIBRARIES):
            raise ModelFolderError(
                f"{index_path}: component {name!r} names library {library!r}; only {list(ALLOWED_LIBRARIES)} classes are loaded"
            )
        if library is None:
            continue
        folder = _resolved(path / name, f"component folder {name!r}")
        if not folder.is_dir():
            raise ModelFolderError(f"{path / name}: component {name!r} must be a folder")
        files = sorted(folder.iterdir())
        for file in files:
            _resolved(file, "a file of the model folder")
        if name == "unet" and not any(f.suffix == ".safetensors" for f in files):
            pickled = [f.name for f in files if f.suffix in PICKLED_WEIGHTS]
            found = f"only pickled weights {pickled}, which are never unpickled" if pickled else "no weights"
            raise ModelFolderError(
                f"{folder}: holds {found}; expected diffusion_pytorch_model.safetensors (convert the checkpoint with "
                "`teramind convert-official`)"
            )
