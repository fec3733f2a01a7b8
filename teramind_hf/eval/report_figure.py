"""The report's PNG: one section of truth, samples and controls side by side, and metric bars per row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._image import as_unit_float

VIEW_PX = 384  # at most this many px of the section are shown (centre crop), so cells stay visible
COLOURS = {"model": "#2a7ab0", "shuffled_genes": "#d08a2a", "mean_image": "#8a8a8a"}


def _view(volume, z: int) -> np.ndarray:
    """``(2, v, v)`` [0, 1] centre crop of section ``z``."""
    _, _, h, w = volume.shape
    vh, vw = min(VIEW_PX, h), min(VIEW_PX, w)
    y0, x0 = (h - vh) // 2, (w - vw) // 2
    return as_unit_float(volume.block(z, slice(y0, y0 + vh), slice(x0, x0 + vw)))


def save_report_figure(report, samples: dict, truth, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("truth", truth)]
    for name, volumes in samples.items():
        for i, volume in enumerate(volumes):
            label = name if len(volumes) == 1 else f"{name} seed {report.data['rows'][name]['seeds'][i]['seed']}"
            panels.append((label, volume))
    panels = panels[:6]
    bars = [(key, title, ideal) for key, _, ideal, title in report.columns if title and key in report.row("model")]
    n_cols = max(len(panels), 5)
    fig = plt.figure(figsize=(2.6 * n_cols, 2.6 * 2 + 2.4 * int(np.ceil(len(bars) / n_cols)) + 0.6))
    grid = fig.add_gridspec(2 + int(np.ceil(len(bars) / n_cols)), n_cols, hspace=0.45, wspace=0.25)
    for col, (label, volume) in enumerate(panels):
        image = _view(volume, 0)
        for row, stain in enumerate(("DAPI", "PolyT")):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(image[row], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=10)
            if col == 0:
                ax.set_ylabel(stain, fontsize=10)
    names = report.rows
    for index, (key, title, ideal) in enumerate(bars):
        ax = fig.add_subplot(grid[2 + index // n_cols, index % n_cols])
        values = [report.data["rows"][n]["all"].get(key) for n in names]
        spreads = [(report.data["rows"][n].get("std") or {}).get(key) for n in names]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(range(len(names)), heights, color=[COLOURS.get(n, "#5a5") for n in names])
        for i, spread in enumerate(spreads):  # the spread over noise seeds: the noise floor
            if spread is not None and heights[i] is not None:
                ax.errorbar(i, heights[i], yerr=spread, color="k", capsize=4)
        reference = report.row("model").get(ideal) if isinstance(ideal, str) else ideal
        if reference is not None:
            ax.axhline(reference, color="k", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("_", "\n") for n in names], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    run = report.data["inputs"].get("run") or {}
    subtitle = f"{report.data['inputs']['generated']}  |  {report.data['inputs']['um_per_px']} um/px"
    if run:
        subtitle += f"  |  {run.get('num_inference_steps')} steps, seed {run.get('seed')}"
    fig.suptitle("teramind eval report: section 0 (centre crop); bars: all sections, dashed = truth/ideal\n" + subtitle,
                 fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
