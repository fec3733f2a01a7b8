"""Training and fine-tuning with accelerate: the official boundary-aware dual loss, gene-panel extension.

Entry point: ``accelerate launch -m teramind_hf.training.train`` (or ``teramind train``). Names load on first use.
"""

from .._lazy import lazy_attributes

_ATTRIBUTES = {
    "TrainingWindows": ".losses",
    "boundary_aware_loss": ".losses",
    "draw_windows": ".losses",
    "noisy_window": ".losses",
    "sample_seed": ".losses",
    "extend_gene_panel": ".panel",
    "gene_axes": ".panel",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)
__all__ = sorted(_ATTRIBUTES)
