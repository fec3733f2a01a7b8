"""teramind-hf: gene-conditioned 3D brain morphology diffusion (Tera-MIND) for diffusers.

Public names load on first use, so `import teramind_hf` (and the `teramind` command's help) does not import
torch or diffusers.
"""

from pathlib import Path

from ._lazy import lazy_attributes
from .constants import DEFAULT_MODEL_UM_PER_PX

__version__ = "0.1.0"

# diffusers resolves pipeline components by importing the module recorded in model_index.json and looking
# for these base-class names in it, so the package namespace exposes them (from diffusers, on first use).
_ATTRIBUTES = {
    "ConfigMixin": "diffusers",
    "ModelMixin": "diffusers",
    "SchedulerMixin": "diffusers",
    "GeneMorphUNet3DModel": ".models",
    "GeneMorphUNet3DOutput": ".models",
    "TeraMindPipeline": ".pipelines",
    "TeraMindPipelineOutput": ".pipelines",
    "BoundaryAwareScheduler": ".schedulers",
}
__getattr__, _lazy_dir = lazy_attributes(__name__, _ATTRIBUTES)


def __dir__() -> list[str]:
    return sorted({*globals(), *_ATTRIBUTES})


def packaged_model_path(name: str) -> Path:
    """Folder of a pipeline shipped inside the package (``"default_model"``, ``"turbo_model"``)."""
    path = Path(__file__).parent / name
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"the embedded pipeline {name!r} is missing from {path}")
    return path


def default_model_path() -> Path:
    """Folder of the small default pipeline shipped inside the package (trained on synthetic phantom data)."""
    return packaged_model_path("default_model")


def turbo_model_path() -> Path:
    """Folder of the few-step student of the default model shipped inside the package: the weights the ``turbo``
    preset samples with; its own config is that sampler (``TeraMindPipeline.from_pretrained(turbo_model_path())``
    then ``pipe(genes)``)."""
    return packaged_model_path("turbo_model")


__all__ = [
    "BoundaryAwareScheduler",
    "ConfigMixin",
    "DEFAULT_MODEL_UM_PER_PX",
    "GeneMorphUNet3DModel",
    "GeneMorphUNet3DOutput",
    "ModelMixin",
    "SchedulerMixin",
    "TeraMindPipeline",
    "TeraMindPipelineOutput",
    "default_model_path",
    "packaged_model_path",
    "turbo_model_path",
]
