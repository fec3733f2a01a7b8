"""Small helpers shared by the example scripts (saving side-by-side PNGs, the default model's scale)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if (REPO_ROOT / "teramind_hf" / "__init__.py").is_file() and str(REPO_ROOT) not in sys.path:
    # run from a source checkout: use this checkout's package, not whichever copy is installed
    sys.path.insert(0, str(REPO_ROOT))


def subprocess_env() -> dict[str, str]:
    """Environment for child processes (accelerate, `teramind`) that also sees this checkout's package."""
    env = dict(os.environ)
    if (REPO_ROOT / "teramind_hf" / "__init__.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env

# The embedded default model was trained on phantom tissue at this scale (see its model card); examples make
# their phantom tissue at that scale so the model sees what it knows.
from teramind_hf import DEFAULT_MODEL_UM_PER_PX  # noqa: E402


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats (or uint8 already) to uint8."""
    if images.dtype == np.uint8:
        return images
    return ((np.asarray(images, dtype=np.float32) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def save_panels(panels: list[tuple[np.ndarray, str]], path: str | Path, cmap: str = "gray", **imshow) -> Path:
    """Save 2-D arrays side by side with titles as one PNG (matplotlib Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(panels), 3.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (array, title) in zip(axes, panels):
        shown = ax.imshow(array, cmap=cmap, interpolation="nearest", **imshow)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if cmap != "gray":
            fig.colorbar(shown, ax=ax, shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path
