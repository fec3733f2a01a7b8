"""Encoder reuse: encode each distinct patch of a batch of canvases once.

The encoder, the mid block and the gene maps of :class:`GeneMorphUNet3DModel` see each patch on its own, so a
patch that appears in several canvases of one call (neighbouring tiles' canvases overlap by a patch row or
column on the same global patch grid) has the same encoder output in each of them. The caller names every
patch with an integer id (equal ids: same noisy input, same genes, same timestep); the model encodes one
representative per id and gathers the result back for the decoders, which still see every canvas whole.
"""

from __future__ import annotations

import torch


class PatchReuse:
    """Which patches of a ``(N, ...)`` patch batch to encode (``first``) and how to expand them back (``inverse``).

    Args:
        patch_ids: ``(B, p1, p2)`` integer ids, one per patch of each canvas (patches in (b, p1, p2) order, as
            :func:`~teramind_hf.models.unet_genemorph_3d.patchify` cuts them).
    """

    def __init__(self, patch_ids: torch.Tensor, grid: tuple[int, int], batch: int):
        if patch_ids.dtype.is_floating_point or patch_ids.dtype == torch.bool or tuple(patch_ids.shape) != (batch, *grid):
            raise ValueError(
                f"patch_ids must be an integer tensor of shape {(batch, *grid)} (canvases, patch rows, patch cols), "
                f"got {patch_ids.dtype} {tuple(patch_ids.shape)}"
            )
        ids = patch_ids.reshape(-1)
        unique, self.inverse = torch.unique(ids, sorted=True, return_inverse=True)
        positions = torch.arange(ids.numel(), device=ids.device)
        # the first occurrence of each id represents it (scatter of the smallest position per id)
        self.first = torch.full((unique.numel(),), ids.numel(), device=ids.device).scatter_reduce(
            0, self.inverse, positions, reduce="amin"
        )

    def unique(self, patches: torch.Tensor) -> torch.Tensor:
        """One row per id (its first occurrence) of a ``(N, ...)`` tensor."""
        return patches.index_select(0, self.first)

    def expand(self, encoded: torch.Tensor) -> torch.Tensor:
        """Back from one row per id to one row per patch."""
        return encoded.index_select(0, self.inverse)

    def check_shared(self, name: str, patches: torch.Tensor) -> None:
        """Refuse ids shared by patches whose ``patches`` rows differ (the encoder output would not be theirs)."""
        if not torch.equal(self.expand(self.unique(patches)), patches):
            raise ValueError(f"patch_ids: patches with the same id must have the same {name}, but some differ")
