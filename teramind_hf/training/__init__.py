"""Training and fine-tuning with accelerate: the official boundary-aware dual loss, gene-panel extension.

Entry point: ``accelerate launch -m teramind_hf.training.train`` (or ``teramind train``).
"""

from .losses import TrainingWindows, boundary_aware_loss, draw_windows, noisy_window, sample_seed
from .panel import extend_gene_panel, gene_axes

__all__ = [
    "TrainingWindows",
    "boundary_aware_loss",
    "draw_windows",
    "extend_gene_panel",
    "gene_axes",
    "noisy_window",
    "sample_seed",
]
