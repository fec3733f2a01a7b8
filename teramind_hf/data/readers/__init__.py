"""Readers of real and synthetic formats; each returns a `SpatialVolume`."""

from .merscope import read_merscope, read_micron_to_pixel
from .official import read_official_tiles, tile_grid, write_official_tiles
from .table import read_points, read_transcript_table

__all__ = [
    "read_merscope",
    "read_micron_to_pixel",
    "read_official_tiles",
    "read_points",
    "read_transcript_table",
    "tile_grid",
    "write_official_tiles",
]
