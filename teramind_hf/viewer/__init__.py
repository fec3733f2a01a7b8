"""Viewing an OME-Zarr output (`teramind view`): its placement read from the NGFF metadata, napari layers, a
local HTTP server with byte ranges and CORS, and a neuroglancer state. Torch- and zarr-free until napari opens."""

from .napari_layers import add_to_napari, napari_available, napari_layer_arguments, open_in_napari
from .neuroglancer_state import NEUROGLANCER_DEMO, neuroglancer_link, neuroglancer_state, zarr_source
from .ome_image import Channel, OmeImage, read_ome_image
from .range_server import RangeRequestHandler, make_range_server, parse_byte_range, serve_until_interrupted, server_url

__all__ = [
    "Channel", "NEUROGLANCER_DEMO", "OmeImage", "add_to_napari", "RangeRequestHandler", "make_range_server", "napari_available",
    "napari_layer_arguments", "neuroglancer_link", "neuroglancer_state", "open_in_napari", "parse_byte_range",
    "read_ome_image", "serve_until_interrupted", "server_url", "zarr_source",
]
