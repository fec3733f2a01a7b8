"""Sharded level 0: one zarr v3 shard per work unit (one writer each), the same pixels as the unsharded output,
pyramid levels built block by block."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from teramind_hf.pipelines.ome_zarr import PhysicalScale, build_level, create_image, downsample_2x, level_blocks
from teramind_hf.pipelines.streaming import generate_to_zarr
from teramind_hf.sampling import TileGrid

from .test_generate import REGION, STEPS, level0
from .test_generate import gene_store, genes, pipe, reference, workdir  # noqa: F401 (fixtures)


def shard_objects(array_dir) -> list[str]:
    return sorted(str(p.relative_to(array_dir)) for p in (array_dir / "c").rglob("*") if p.is_file())


def test_sharded_level0_equals_unsharded_and_has_one_object_per_work_unit(pipe, gene_store, reference, workdir):  # noqa: F811
    outputs = {}
    for shard_tiles in (None, 1, 2):
        out = workdir / f"shards_{shard_tiles}.ome.zarr"
        generate_to_zarr(pipe, gene_store, out, region=REGION, num_inference_steps=STEPS, generator=0,
                         shard_tiles=shard_tiles, batch_size=3, progress_bar=False)
        outputs[shard_tiles] = out
        np.testing.assert_array_equal(level0(out), reference)  # the pixels do not depend on the layout
    unsharded, per_tile, per_block = (zarr.open_array(str(outputs[k] / "0"), mode="r") for k in (None, 1, 2))
    assert unsharded.shards is None and per_tile.shards == (2, 2, 256, 256) and per_block.shards == (2, 2, 512, 512)
    assert per_block.chunks == (1, 1, 256, 256)  # inner chunks stay one tile per stain and section
    # 3 sections = 2 z chunks; 2 x 2 tiles: 8 work units of one tile, or 2 of 2 x 2 tiles
    assert len(shard_objects(outputs[1] / "0")) == 8 and len(shard_objects(outputs[2] / "0")) == 2
    assert len(shard_objects(outputs[None] / "0")) == 2 * 3 * 4  # stains x sections x tiles
    level1 = zarr.open_group(str(outputs[2]), mode="r")["1"]
    assert level1.shards == (2, 2, 256, 256)
    np.testing.assert_array_equal(level1[...], downsample_2x(reference))


def test_work_units_match_shards_and_cover_every_tile_once(pipe, gene_store):  # noqa: F811
    units = TileGrid(height=5 * 256, width=3 * 256, unit_tiles=2).work_units()
    assert units[0] == [(0, 0), (0, 1), (1, 0), (1, 1)] and units[-1] == [(4, 2)]  # clipped at the region edge
    tiles = [t for unit in units for t in unit]
    assert sorted(tiles) == [(r, c) for r in range(5) for c in range(3)] and len(set(tiles)) == len(tiles)
    for unit in units:  # every unit lies inside one shard of 2 x 2 tiles
        assert len({(r // 2, c // 2) for r, c in unit}) == 1


def test_pyramid_built_block_by_block(tmp_path):
    rng = np.random.default_rng(0)
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w")
    levels = create_image(group, (2, 3, 1024, 768), 256, PhysicalScale(), shard_tiles=2)
    assert [lv.shards for lv in levels] == [(2, 2, 512, 512), (2, 2, 512, 512), (2, 2, 256, 192)]  # whole chunks
    data = rng.integers(0, 256, levels[0].shape, dtype=np.uint8)
    levels[0][...] = data
    for finer, coarser in zip(levels, levels[1:]):
        build_level(finer, coarser, level_blocks(coarser))
    np.testing.assert_array_equal(levels[1][...], downsample_2x(data))
    np.testing.assert_array_equal(levels[2][...], downsample_2x(downsample_2x(data)))
    with pytest.raises(ValueError, match="shard_tiles must be >= 1"):
        create_image(zarr.open_group(str(tmp_path / "bad.zarr"), mode="w"), (2, 2, 512, 512), 256, PhysicalScale(), shard_tiles=0)
