"""Gene panels, synthetic phantom tissue, readers of real formats and patch datasets.

Main entry points: `GenePanel` (+ `apply_alignment`), `SpatialVolume` (what every reader
returns), `make_phantom`, the readers in `teramind_hf.data.readers` and the training store /
`PatchDataset` / Hugging Face export in `teramind_hf.data.datasets`.
"""

from .panel import GenePanel, PanelAlignment, PanelOverlapError, apply_alignment
from .phantom import Phantom, make_phantom, with_panel_changes, write_phantom
from .volume import SpatialVolume

__all__ = [
    "GenePanel",
    "PanelAlignment",
    "PanelOverlapError",
    "Phantom",
    "SpatialVolume",
    "apply_alignment",
    "make_phantom",
    "with_panel_changes",
    "write_phantom",
]
