"""Read one image file (TIFF or .npy) with errors that name the file.

tifffile and numpy raise many exception types for a damaged file (``TiffFileError``, ``ValueError``, ``OSError``,
``struct.error``, ...); all become one ``ValueError`` naming the file, so the CLI prints a line, not a traceback.
``.npy`` files are read with ``allow_pickle=False``: an object array is refused, never unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    kind = ".npy" if path.suffix.lower() == ".npy" else "TIFF"
    try:
        if kind == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import logging

            import tifffile

            tiff_log = logging.getLogger("tifffile")
            level = tiff_log.level
            tiff_log.setLevel(logging.ERROR)  # a damaged file is our error below, not also a stray log line
            try:
                array = tifffile.imread(path)
            finally:
                tiff_log.setLevel(level)
    except Exception as err:  # a corrupt, truncated or mislabelled file: any reader error names the file
        raise ValueError(f"{path}: not a readable {kind} image ({type(err).__name__}: {err})") from err
    if array.size == 0:  # tifffile reads a TIFF whose pages are missing as an empty array (with a warning)
        raise ValueError(f"{path}: not a readable {kind} image (no image data in the file)")
    return array
