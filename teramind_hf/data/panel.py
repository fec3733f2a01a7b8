"""Gene panels: the ordered gene names a model or a data set uses, and alignment between them.

A model's gene axis has a fixed order (its `GenePanel`). User data arrive with their own gene
list. `GenePanel.align` matches the two by name (case-insensitive, optionally through a
mouse<->human orthologue table), reports what is missing or unused, and refuses data that share
too few genes with the model. `apply_alignment` then reorders a gene array so that its first
axis follows the model panel, filling genes the data lack with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

_OFFICIAL_MOUSE_FILE = "mouse_229.txt"


class PanelOverlapError(ValueError):
    """The data share too few genes with the model panel."""


def _normalise(symbol: str) -> str:
    """Case-insensitive key of a gene symbol (mouse `Slc17a7` == human `SLC17A7`)."""
    return symbol.strip().upper()


@dataclass(frozen=True)
class GenePanel:
    """Ordered, unique gene symbols; position `g` is the gene's index on the gene axis."""

    genes: tuple[str, ...]

    def __init__(self, genes: Iterable[str]):
        names = tuple(str(g).strip() for g in genes)
        if not names:
            raise ValueError("GenePanel: the gene list is empty (expected at least one gene symbol)")
        if any(not n for n in names):
            raise ValueError("GenePanel: empty gene symbol in the gene list")
        keys = [_normalise(n) for n in names]
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            dups = sorted({n for n, k in zip(names, keys) if k in seen or seen.add(k)})
            raise ValueError(f"GenePanel: duplicate gene symbols (case-insensitive): {dups}")
        object.__setattr__(self, "genes", names)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def official_mouse(cls) -> "GenePanel":
        """The 229-gene panel of the official Tera-MIND mouse model, in its gene-slot order."""
        text = resources.files("teramind_hf.data").joinpath("panels", _OFFICIAL_MOUSE_FILE).read_text()
        return cls(line for line in text.splitlines() if line.strip())

    @classmethod
    def from_file(cls, path: str) -> "GenePanel":
        """A panel from a text file with one gene symbol per line."""
        with open(path, encoding="utf-8") as fh:
            return cls(line for line in fh.read().splitlines() if line.strip())

    def to_file(self, path: str) -> None:
        """Write one gene symbol per line."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(self.genes) + "\n")

    # --- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.genes)

    def __iter__(self):
        return iter(self.genes)

    def __getitem__(self, index: int) -> str:
        return self.genes[index]

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and _normalise(symbol) in self._index

    @cached_property
    def _index(self) -> dict[str, int]:
        return {_normalise(g): i for i, g in enumerate(self.genes)}

    def index(self, symbol: str) -> int:
        """Position of `symbol` (case-insensitive); KeyError naming the gene if absent."""
        try:
            return self._index[_normalise(symbol)]
        except KeyError:
            raise KeyError(f"gene {symbol!r} is not in the panel ({len(self)} genes)") from None

    def subset(self, symbols: Iterable[str]) -> "GenePanel":
        """The genes of this panel that appear in `symbols`, keeping this panel's order."""
        wanted = {_normalise(s) for s in symbols}
        return GenePanel(g for g in self.genes if _normalise(g) in wanted)

    def align(
        self,
        data_genes: "Sequence[str] | GenePanel",
        *,
        min_overlap: float = 0.5,
        orthologues: bool = False,
        overrides: Mapping[str, str] | None = None,
    ) -> "PanelAlignment":
        """Match `data_genes` to this (model) panel by name.

        Symbols match case-insensitively. With `orthologues=True` a data symbol also matches a
        model symbol through `overrides` (data symbol -> model symbol, for orthologues whose
        names differ beyond case, e.g. {"CCN2": "Ctgf"}); the upper-case match already covers
        most mouse<->human pairs (Slc17a7 <-> SLC17A7). `min_overlap` is the smallest allowed
        fraction of model genes found in the data; below it a `PanelOverlapError` names the
        numbers and the threshold.
        """
        data = tuple(data_genes.genes if isinstance(data_genes, GenePanel) else data_genes)
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
        mapping = {_normalise(k): _normalise(v) for k, v in (overrides or {}).items()} if orthologues else {}
        model_index = self._index
        model_to_data = np.full(len(self), -1, dtype=np.int64)
        unused: list[str] = []
        for d, symbol in enumerate(data):
            key = _normalise(symbol)
            key = mapping.get(key, key)
            g = model_index.get(key)
            if g is None or model_to_data[g] >= 0:
                unused.append(symbol)
                continue
            model_to_data[g] = d
        found = int((model_to_data >= 0).sum())
        fraction = found / len(self)
        if fraction < min_overlap:
            raise PanelOverlapError(
                f"gene panel overlap too small: {found} of the model's {len(self)} genes "
                f"({fraction:.1%}) are in the data's {len(data)} genes; min_overlap is "
                f"{min_overlap:.1%} (lower it, pass orthologues=True/overrides, or check gene names)"
            )
        missing = tuple(g for g, d in zip(self.genes, model_to_data) if d < 0)
        return PanelAlignment(
            model_panel=self,
            data_genes=data,
            model_to_data=model_to_data,
            missing=missing,
            unused=tuple(unused),
        )


@dataclass(frozen=True)
class PanelAlignment:
    """How a data gene axis maps onto a model panel.

    `model_to_data[g]` is the data index of model gene `g`, or -1 when the data lack it (that
    gene is filled with zeros). `missing` lists model genes absent from the data, `unused` data
    genes the model does not know.
    """

    model_panel: GenePanel
    data_genes: tuple[str, ...]
    model_to_data: np.ndarray = field(repr=False)
    missing: tuple[str, ...]
    unused: tuple[str, ...]

    @property
    def overlap(self) -> float:
        """Fraction of model genes present in the data."""
        return float((self.model_to_data >= 0).mean())

    def summary(self) -> str:
        """One line for logs: counts of matched, missing and unused genes."""
        n = len(self.model_panel)
        return (
            f"{n - len(self.missing)}/{n} model genes found in data; "
            f"{len(self.missing)} missing (zero-filled); {len(self.unused)} data genes unused"
        )


def apply_alignment(genes: Any, alignment: PanelAlignment) -> Any:
    """Reorder a gene array `(G_data, ...)` to `(G_model, ...)`, zeros for missing genes.

    Accepts numpy arrays, torch tensors (dense or sparse COO) and `sparse.COO`; returns the
    same kind. The first axis must have `len(alignment.data_genes)` entries.
    """
    n_data = len(alignment.data_genes)
    if genes.shape[0] != n_data:
        raise ValueError(
            f"apply_alignment: gene array has {genes.shape[0]} entries on axis 0, "
            f"the alignment expects {n_data} data genes"
        )
    src = alignment.model_to_data
    present = np.flatnonzero(src >= 0)
    out_shape = (len(src),) + tuple(genes.shape[1:])
    module = type(genes).__module__
    if module.startswith("torch"):
        return _apply_torch(genes, src, present, out_shape)
    if module.startswith("sparse"):
        return _apply_sparse(genes, src, out_shape)
    arr = np.asarray(genes)
    out = np.zeros(out_shape, dtype=arr.dtype)
    out[present] = arr[src[present]]
    return out


def _apply_torch(genes: Any, src: np.ndarray, present: np.ndarray, out_shape: tuple[int, ...]) -> Any:
    import torch

    if genes.is_sparse:
        coalesced = genes.coalesce()
        return _remap_coords_torch(coalesced, src, out_shape)
    out = torch.zeros(out_shape, dtype=genes.dtype, device=genes.device)
    idx_present = torch.as_tensor(present, device=genes.device)
    idx_src = torch.as_tensor(src[present], device=genes.device)
    out[idx_present] = genes[idx_src]
    return out


def _remap_coords_torch(genes: Any, src: np.ndarray, out_shape: tuple[int, ...]) -> Any:
    import torch

    data_to_model = np.full(genes.shape[0], -1, dtype=np.int64)
    data_to_model[src[src >= 0]] = np.flatnonzero(src >= 0)
    lut = torch.as_tensor(data_to_model, device=genes.device)
    indices, values = genes.indices(), genes.values()
    new_first = lut[indices[0]]
    keep = new_first >= 0
    indices = torch.cat([new_first[keep][None], indices[1:, keep]], dim=0)
    return torch.sparse_coo_tensor(indices, values[keep], out_shape, check_invariants=True).coalesce()


def _apply_sparse(genes: Any, src: np.ndarray, out_shape: tuple[int, ...]) -> Any:
    import sparse

    data_to_model = np.full(genes.shape[0], -1, dtype=np.int64)
    data_to_model[src[src >= 0]] = np.flatnonzero(src >= 0)
    coords = genes.coords.copy()
    new_first = data_to_model[coords[0]]
    keep = new_first >= 0
    coords = coords[:, keep]
    coords[0] = new_first[keep]
    return sparse.COO(coords, genes.data[keep], shape=out_shape)
