"""teramind-hf: gene-conditioned 3D brain morphology diffusion (Tera-MIND) for diffusers."""

from pathlib import Path

# diffusers resolves pipeline components by importing the module recorded in model_index.json and looking
# for these base-class names in it, so the package namespace exposes them.
from diffusers import ConfigMixin, ModelMixin, SchedulerMixin

from .models import GeneMorphUNet3DModel, GeneMorphUNet3DOutput
from .pipelines import TeraMindPipeline, TeraMindPipelineOutput
from .schedulers import BoundaryAwareScheduler

__version__ = "0.1.0"

# Pixel size (microns) of the phantom tissue the embedded default model was trained on; everything that makes
# tissue for the default model (demo, examples, benchmarks, tests) uses this one value. At 0.5 um/px a 16-px
# gene bin is 8 um, finer than the cells, so the genes say where each cell is, not only which type it is
# (at 1.0 um/px, stages 1-3 of scripts/train_default_model.py, they could not: docs/architecture.md).
DEFAULT_MODEL_UM_PER_PX = 0.5


def default_model_path() -> Path:
    """Folder of the small default pipeline shipped inside the package (trained on synthetic phantom data)."""
    path = Path(__file__).parent / "default_model"
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"the embedded default model is missing from {path}")
    return path


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
]
