"""Peak memory of `teramind export spatialdata` against the output's size: flat, because the export streams.

Builds synthetic `teramind generate` outputs (the project's own OME-Zarr writer and pyramid, no sampling) of
SIZE^2 px x 2 sections for each --sizes value, exports each in a fresh subprocess, and prints the child's peak
RSS (ru_maxrss) and its ratio to the smallest size's. Target: at most 1.2x.

    python benchmarks/export_memory.py --sizes 512,16384
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
from teramind_hf.data.export import export_spatialdata
started, cpu = time.perf_counter(), time.process_time()
export_spatialdata(sys.argv[1], sys.argv[2])
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}))
"""


def write_output(path: Path, size: int, sections: int = 2, tile: int = 256, um_per_px: float = 0.5) -> Path:
    """A complete output as `teramind generate` lays it out (sharded level 0, pyramid, run record), filled with a
    pattern one shard at a time."""
    import zarr

    from teramind_hf.constants import DEFAULT_SHARD_TILES
    from teramind_hf.pipelines.ome_zarr import PhysicalScale, build_level, create_image, level_blocks, write_block

    group = zarr.open_group(str(path), mode="w")
    scale = PhysicalScale(um_per_px=um_per_px, origin_um=(100.25, 200.75))
    levels = create_image(group, (2, sections, size, size), tile, scale, DEFAULT_SHARD_TILES)
    block = write_block(levels[0])
    for index in level_blocks(levels[0]):
        (c0, c1), (z0, z1), (y0, y1), (x0, x1) = ((i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, levels[0].shape))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        pattern = ((yy // 7 + xx // 5) % 256).astype(np.uint8)
        levels[0][c0:c1, z0:z1, y0:y1, x0:x1] = np.broadcast_to(pattern, (c1 - c0, z1 - z0, *pattern.shape))
    for level in range(1, len(levels)):
        build_level(levels[level - 1], levels[level], level_blocks(levels[level]))
    run = {"region_yxhw": [0, 0, size, size], "slices": [0, sections], "um_per_px": um_per_px,
           "origin_um": list(scale.origin_um), "coordinate_system": "global"}
    group.attrs["teramind"] = {"run": run, "complete": True, "pyramid_levels_done": len(levels)}
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,16384", help="comma list of output sizes (px per side)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            out = write_output(Path(tmp) / f"o{size}.ome.zarr", size)
            started = time.perf_counter()
            child = subprocess.run([sys.executable, "-c", CHILD, str(out), str(Path(tmp) / f"s{size}.zarr")],
                                   capture_output=True, text=True, check=True)
            row = {"size": size, **json.loads(child.stdout.strip().splitlines()[-1]),
                   "subprocess_wall_s": time.perf_counter() - started}
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = rows[0]["peak_rss_mb"]
    for row in rows:
        print(f"{row['size']}^2 px x 2 sections: peak RSS {row['peak_rss_mb']:.0f} MB = {row['peak_rss_mb'] / base:.2f}x "
              f"the {rows[0]['size']}^2 export (wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s)")


if __name__ == "__main__":
    main()
