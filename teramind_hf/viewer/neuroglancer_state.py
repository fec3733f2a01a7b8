"""A neuroglancer state (and link) that shows an OME-Zarr output as a biologist expects: an x-y view, one image
layer per stain in its colour, added together, in micrometres.

Neuroglancer reads the placement itself from the OME-NGFF metadata (scale and translation of every level); the
state only names the display: global dimensions x, y, z in metres at the level-0 pixel size, the x-y layout,
the view centred on the first section, and per layer the channel (the OME channel axis ``c`` is neuroglancer's
local dimension ``c'``) and a shader that draws it in the stain's colour. Neuroglancer follows the NGFF pixel-centre
convention for OME-Zarr (seen in neuroglancer 2.41: with translation 0, voxel 0 covers [-0.5, 0.5) and position
z = 0.5 already shows section 1), so the centre of voxel ``i`` is at ``translation / scale + i`` display units.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from .ome_image import OmeImage

NEUROGLANCER_DEMO = "https://neuroglancer-demo.appspot.com/"
METRES_PER_MICROMETRE = 1e-6
VIEWPORT_PX = 700  # screen pixels the whole section should fit in at the start

SHADER = """#uicontrol invlerp contrast(range=[{low}, {high}])
#uicontrol vec3 color color(default="#{color}")
void main() {{
  emitRGB(color * contrast());
}}
"""


def zarr_source(image: OmeImage, base_url: str) -> str:
    """Neuroglancer's data source URL of the image served at ``base_url`` (zarr2:// or zarr3://)."""
    return f"zarr{image.zarr_format}://{base_url.rstrip('/')}/"


def neuroglancer_state(image: OmeImage, base_url: str) -> dict:
    """The viewer state of ``image`` served at ``base_url`` (the URL of the image group's folder)."""
    spatial = [image.axes[i] for i in image.spatial_axes]
    index = {name: i for i, name in enumerate(image.axes)}
    order = ["x", "y", *[a for a in spatial if a not in ("x", "y")]]
    scales, shifts, shape = image.level_scales_um[0], image.level_translations_um[0], image.level_shapes[0]
    dimensions = {a: [scales[index[a]] * METRES_PER_MICROMETRE, "m"] for a in order}
    position = []
    for a in order:
        i = index[a]
        # x, y: the middle of the section; other axes (z): the centre of the first section
        voxel = (shape[i] - 1) / 2 if a in ("x", "y") else 0
        position.append(shifts[i] / scales[i] + voxel)
    source = zarr_source(image, base_url)
    layers = []
    for k, channel in enumerate(image.channels):
        layer = {
            "type": "image",
            "name": channel.label,
            "source": source,
            "opacity": 1.0,
            "blend": "additive",
            "shader": SHADER.format(low=_number(channel.window[0]), high=_number(channel.window[1]), color=channel.color.lower()),
        }
        if image.channel_axis is not None:
            # voxel centres at integers here too: channel k is at k
            layer["localDimensions"] = {f"{image.axes[image.channel_axis]}'": [1, ""]}
            layer["localPosition"] = [k]
        layers.append(layer)
    return {
        "title": f"teramind: {image.path.name}",
        "dimensions": dimensions,
        "displayDimensions": ["x", "y", "z"] if "z" in order else ["x", "y"],
        "position": position,
        "crossSectionScale": max(shape[index["x"]], shape[index["y"]]) / VIEWPORT_PX,
        "layers": layers,
        "layout": "xy",
    }


def neuroglancer_link(state: dict, client: str = NEUROGLANCER_DEMO) -> str:
    """``client#!<state as URL-encoded JSON>``: the link a browser opens."""
    return f"{client.rstrip('/')}/#!{quote(json.dumps(state, separators=(',', ':')), safe='')}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
