"""Direct shard-file writes of the output's level 0 (teramind_hf/pipelines/shard_files.py) against zarr itself."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from teramind_hf.pipelines.ome_zarr import PhysicalScale, create_image
from teramind_hf.pipelines.shard_files import ShardFiles, block_writer

SHAPE = (2, 3, 768, 1280)  # 3 sections (a z shard of 2 and a clipped one), shards of 4 x 4 tiles clipped in y and x


def level0(path, shard_tiles=4):
    return create_image(zarr.open_group(str(path), mode="w"), SHAPE, 256, PhysicalScale(), shard_tiles)[0]


def sel(z, y, x):
    return (slice(0, 2), slice(*z), slice(*y), slice(*x))


def blocks(rng):
    """A sequence of whole-tile writes: several into one shard, one into the edge shards, one of fill only (its
    chunks are left out) and one over already written tiles."""
    for i, (z, y, x) in enumerate([
        ((0, 2), (0, 512), (0, 512)), ((2, 3), (256, 768), (1024, 1280)), ((0, 2), (512, 768), (256, 1024)),
        ((0, 2), (0, 256), (0, 256)), ((1, 2), (0, 256), (1024, 1280)), ((0, 2), (256, 512), (256, 768)),
    ]):
        shape = (2, z[1] - z[0], y[1] - y[0], x[1] - x[0])
        yield sel(z, y, x), np.zeros(shape, np.uint8) if i == 3 else rng.integers(1, 255, shape, dtype=np.uint8)


def test_direct_shard_writes_read_back_as_zarrs_own(tmp_path):
    direct, reference = level0(tmp_path / "direct.zarr"), level0(tmp_path / "reference.zarr")
    assert ShardFiles.eligible(direct)
    write = block_writer(direct)
    for selection, block in blocks(np.random.default_rng(0)):
        write(selection, block)
        reference[selection] = block
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "direct.zarr" / "0"), mode="r")[...], reference[...])
    # a fresh zarr handle reads the same, and the first tile (written, then overwritten with fill) has no chunk left
    assert ShardFiles(direct).read_chunks((0, 0, 0, 0)).keys() == ShardFiles(reference).read_chunks((0, 0, 0, 0)).keys()


def test_direct_writes_keep_the_chunks_zarr_wrote_and_zarr_keeps_theirs(tmp_path):
    direct, reference = level0(tmp_path / "direct.zarr"), level0(tmp_path / "reference.zarr")
    rng = np.random.default_rng(1)
    first = rng.integers(1, 255, (2, 2, 256, 512), dtype=np.uint8)
    direct[sel((0, 2), (0, 256), (0, 512))] = first  # zarr writes part of the shard, then we write another part
    reference[sel((0, 2), (0, 256), (0, 512))] = first
    second = rng.integers(1, 255, (2, 2, 256, 256), dtype=np.uint8)
    block_writer(direct)(sel((0, 2), (256, 512), (512, 768)), second)
    reference[sel((0, 2), (256, 512), (512, 768))] = second
    third = rng.integers(1, 255, (2, 1, 256, 256), dtype=np.uint8)
    direct[sel((1, 2), (512, 768), (0, 256))] = third  # and zarr again over our shard
    reference[sel((1, 2), (512, 768), (0, 256))] = third
    np.testing.assert_array_equal(direct[...], reference[...])


def test_blocks_that_are_not_whole_chunks_of_one_shard_go_through_zarr(tmp_path):
    direct, reference = level0(tmp_path / "direct.zarr"), level0(tmp_path / "reference.zarr")
    files = ShardFiles(direct)
    assert files.shard_of(sel((0, 2), (0, 256), (768, 1280))) is None  # spans two shards in x
    assert files.shard_of(sel((0, 2), (0, 100), (0, 256))) is None  # part of a chunk
    assert files.shard_of(sel((1, 3), (0, 256), (0, 256))) is None  # spans two shards in z
    write, rng = block_writer(direct), np.random.default_rng(2)
    write(sel((0, 2), (0, 256), (0, 256)), rng.integers(1, 255, (2, 2, 256, 256), dtype=np.uint8))  # held in memory
    reference[sel((0, 2), (0, 256), (0, 256))] = direct[sel((0, 2), (0, 256), (0, 256))]
    for selection in (sel((0, 2), (0, 256), (768, 1280)), sel((0, 2), (100, 300), (0, 256)), sel((1, 3), (0, 256), (0, 256))):
        block = rng.integers(1, 255, tuple(s.stop - s.start for s in selection), dtype=np.uint8)
        write(selection, block)
        reference[selection] = block
    np.testing.assert_array_equal(direct[...], reference[...])
    # zarr rewrote shard (0, 0, 0, 0) in between: the writer's next direct write there keeps what zarr wrote
    write(sel((0, 2), (256, 512), (256, 512)), np.full((2, 2, 256, 256), 5, np.uint8))
    reference[sel((0, 2), (256, 512), (256, 512))] = 5
    np.testing.assert_array_equal(direct[...], reference[...])


def test_other_layouts_are_not_eligible_and_are_written_by_zarr(tmp_path):
    unsharded = level0(tmp_path / "unsharded.zarr", shard_tiles=None)
    blosc = zarr.create_array(str(tmp_path / "blosc.zarr"), shape=(2, 2, 512, 512), chunks=(1, 1, 256, 256), shards=(2, 2, 512, 512),
                              dtype="uint8", compressors=zarr.codecs.BloscCodec())
    for array in (unsharded, blosc):
        assert not ShardFiles.eligible(array)
        block = np.random.default_rng(3).integers(1, 255, (2, 2, 256, 256), dtype=np.uint8)
        block_writer(array)(sel((0, 2), (0, 256), (0, 256)), block)
        np.testing.assert_array_equal(array[sel((0, 2), (0, 256), (0, 256))], block)


def test_a_damaged_shard_is_refused_by_name(tmp_path):
    direct = level0(tmp_path / "direct.zarr")
    block_writer(direct)(sel((0, 2), (0, 256), (0, 256)), np.full((2, 2, 256, 256), 9, np.uint8))
    path = tmp_path / "direct.zarr" / "0" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the index
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c/0/0/0/0: the shard index does not match its CRC-32C"):
        block_writer(direct)(sel((0, 2), (256, 512), (0, 256)), np.full((2, 2, 256, 256), 9, np.uint8))
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(ValueError, match=r"c/0/0/0/0: 100 bytes, shorter than this array's shard index"):
        block_writer(direct)(sel((0, 2), (256, 512), (0, 256)), np.full((2, 2, 256, 256), 9, np.uint8))
