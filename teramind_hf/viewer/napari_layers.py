"""napari (the `viewer` extra): an OME-Zarr output as one multiscale image layer per stain, coloured, in
micrometres, placed by the OME-NGFF scale and translation of level 0 (napari places a pixel's centre at
``translate + i * scale``, the NGFF convention, and derives the coarser levels from their shapes)."""

from __future__ import annotations

import inspect
import os
import sys

from .ome_image import OmeImage

# napari's own colormap names for the pure colours (named as such in its layer list); any other colour is
# passed as "#RRGGBB", which napari turns into a black-to-colour map
NAPARI_COLORMAPS = {"0000FF": "blue", "00FF00": "green", "FF0000": "red", "FF00FF": "magenta", "00FFFF": "cyan",
                    "FFFF00": "yellow", "FFFFFF": "gray"}


def napari_layer_arguments(image: OmeImage) -> dict:
    """Keyword arguments of napari's ``add_image`` for ``image`` (all but ``data``, the list of levels)."""
    spatial = image.spatial_axes
    level0_scale, level0_shift = image.level_scales_um[0], image.level_translations_um[0]
    arguments = {
        "multiscale": len(image.level_paths) > 1,
        "scale": tuple(level0_scale[i] for i in spatial),
        "translate": tuple(level0_shift[i] for i in spatial),
        "axis_labels": tuple(image.axes[i] for i in spatial),
        "units": tuple("micrometer" for _ in spatial),
        "blending": "additive",
    }
    names = [c.label for c in image.channels]
    colormaps = [NAPARI_COLORMAPS.get(c.color, f"#{c.color}") for c in image.channels]
    limits = [c.window for c in image.channels]
    if image.channel_axis is None:
        return {**arguments, "name": names[0], "colormap": colormaps[0], "contrast_limits": limits[0]}
    return {**arguments, "channel_axis": image.channel_axis, "name": names, "colormap": colormaps,
            "contrast_limits": limits}


def napari_available() -> str | None:
    """None if napari can open a window here, else why not (not installed, or no display on Linux)."""
    import importlib.util

    if importlib.util.find_spec("napari") is None:
        return "napari is not installed (pip install 'teramind-hf[viewer]')"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return None


def add_to_napari(viewer, image: OmeImage) -> list:
    """Add ``image`` to a napari viewer (a ``napari.Viewer`` or a window-less ``ViewerModel``), levels read lazily
    by zarr; returns the layers (one per channel)."""
    import zarr

    levels = [zarr.open_array(str(image.path / p), mode="r") for p in image.level_paths]
    arguments = napari_layer_arguments(image)
    accepted = inspect.signature(viewer.add_image).parameters
    arguments = {k: v for k, v in arguments.items() if k in accepted}  # older napari: no units / axis_labels
    layers = viewer.add_image(levels if arguments.get("multiscale") else levels[0], **arguments)
    return layers if isinstance(layers, list) else [layers]


def open_in_napari(image: OmeImage, run: bool = True):
    """Open ``image`` in a napari window with a scale bar in micrometres; with ``run``, block until it closes."""
    import napari

    viewer = napari.Viewer(title=f"teramind: {image.path.name}")
    add_to_napari(viewer, image)
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9; before: viewer.scale_bar
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    if run:
        napari.run()
    return viewer
