"""Gene panels, synthetic phantom tissue, readers of real formats and patch datasets.

Main entry points: `GenePanel` (+ `apply_alignment`), `SpatialVolume` (what every reader
returns), `make_phantom`, the readers in `teramind_hf.data.readers` and the training store /
`PatchDataset` / Hugging Face export in `teramind_hf.data.datasets`. Names load on first use.
"""

from .._lazy import lazy_attributes

_ATTRIBUTES = {
    "GenePanel": ".panel",
    "PanelAlignment": ".panel",
    "PanelOverlapError": ".panel",
    "apply_alignment": ".panel",
    "Phantom": ".phantom",
    "make_phantom": ".phantom",
    "with_panel_changes": ".phantom_io",
    "write_phantom": ".phantom_io",
    "SpatialVolume": ".volume",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)
__all__ = sorted(_ATTRIBUTES)
