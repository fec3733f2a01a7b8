"""Whole inner chunks written straight into the shard files of a sharded zarr v3 array (the output's level 0).

zarr-python updates part of a shard by reading the shard, re-assembling it and writing it back, which is the right
thing to do; but each inner chunk also passes through its asynchronous codec pipeline and thread hand-offs, which
cost several times the compression itself (docs/performance.md, "Engine floor"). The sampler writes level 0 one
batch of whole tiles (= whole inner chunks) at a time, each shard from one process. For an array that is

* in a local folder (zarr ``LocalStore``), zarr format 3, sharded with a regular chunk grid,
* with inner chunks encoded by the bytes codec and optionally zstd, and the shard index by the bytes codec
  (little-endian) and crc32c, at the end of the shard,

the shard object is, by the zarr v3 sharding specification, the encoded inner chunks in any order followed by the
index: ``(offset, nbytes)`` uint64 pairs in C order of the inner chunk grid (``2**64 - 1`` twice for an absent
chunk), then the index's CRC-32C. :class:`ShardFiles` writes exactly that: it encodes the new inner chunks (zstd
through numcodecs with the array's own level and checksum setting, as zarr does), keeps the bytes of the shard's
other chunks, leaves out chunks that hold only the fill value where the array is configured so
(``write_empty_chunks=False``, zarr's default), and replaces the shard file atomically (a temporary file renamed
over it, as zarr's local store does). zarr reads what it writes, and the other way round (tests). Any other array,
or a block that is not whole inner chunks of one shard, goes through the zarr API.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..sampling.chunk_files import little_endian_bytes, local_v3, replace_file

ABSENT = 2**64 - 1


class ShardFiles:
    """Whole-inner-chunk writes into the shard files of one sharded zarr v3 array (see module doc)."""

    def __init__(self, array):
        from numcodecs import Zstd

        self.array = array
        sharding = array.metadata.codecs[0]
        self.root = Path(array.store_path.store.root) / array.store_path.path
        self.encode_key = array.metadata.encode_chunk_key
        self.shard_shape, self.chunk_shape = tuple(array.shards), tuple(sharding.chunk_shape)
        self.chunks_per_shard = tuple(s // c for s, c in zip(self.shard_shape, self.chunk_shape))
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill_value = np.asarray(array.fill_value, dtype=self.dtype)
        self.keep_empty = bool(array.config.write_empty_chunks)
        zstd = sharding.codecs[1] if len(sharding.codecs) > 1 else None
        self.compressor = Zstd(level=zstd.level, checksum=zstd.checksum) if zstd is not None else None
        # the last shard written, (coords, its chunks): the sampler writes a shard's tiles in consecutive batches,
        # and this process is the shard's only writer, so its file holds exactly these until the next write
        self._last: tuple[tuple[int, ...], dict] | None = None

    @classmethod
    def eligible(cls, array) -> bool:
        from zarr.codecs import Crc32cCodec, ShardingCodec, ZstdCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation
        from zarr.core.chunk_grids import RegularChunkGrid

        codecs = tuple(array.metadata.codecs)
        if not local_v3(array) or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return False
        sharding = codecs[0]
        inner, index = tuple(sharding.codecs), tuple(sharding.index_codecs)
        inner_ok = little_endian_bytes(inner[0]) and (len(inner) == 1 or (len(inner) == 2 and isinstance(inner[1], ZstdCodec)))
        index_ok = len(index) == 2 and little_endian_bytes(index[0], unspecified_ok=False) and isinstance(index[1], Crc32cCodec)
        return (inner_ok and index_ok and sharding.index_location == ShardingCodecIndexLocation.end
                and isinstance(array.metadata.chunk_grid, RegularChunkGrid))

    # ------------------------------------------------------------------ geometry
    def shard_of(self, selection: tuple[slice, ...]) -> tuple[int, ...] | None:
        """The shard holding ``selection`` if it is whole inner chunks, inside the array, of one shard; else None."""
        coords = []
        for s, n, c, size in zip(selection, self.shard_shape, self.chunk_shape, self.array.shape):
            whole = s.start % c == 0 and s.stop % c == 0 and s.start < s.stop <= size
            if not whole or s.start // n != (s.stop - 1) // n:
                return None
            coords.append(s.start // n)
        return tuple(coords)

    def _path(self, shard: tuple[int, ...]) -> Path:
        return self.root / self.encode_key(shard)

    # ------------------------------------------------------------------ reading and writing
    def forget(self) -> None:
        """Drop the shard held in memory (call before anything else writes to the array)."""
        self._last = None

    def read_chunks(self, shard: tuple[int, ...]) -> dict[tuple[int, ...], bytes]:
        """The encoded inner chunks present in a shard file, by position in the shard's chunk grid."""
        import google_crc32c

        path = self._path(shard)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        count = math.prod(self.chunks_per_shard)
        size = 16 * count + 4
        if len(data) < size:
            raise ValueError(f"{path}: {len(data)} bytes, shorter than this array's shard index ({size} bytes)")
        index, checksum = data[-size:-4], data[-4:]
        if google_crc32c.value(index) != int.from_bytes(checksum, "little"):
            raise ValueError(f"{path}: the shard index does not match its CRC-32C checksum (a damaged shard)")
        pairs = np.frombuffer(index, dtype="<u8").reshape(count, 2)
        chunks = {}
        for position, (offset, nbytes) in zip(np.ndindex(*self.chunks_per_shard), pairs.tolist()):
            if offset == ABSENT and nbytes == ABSENT:
                continue
            if offset + nbytes > len(data) - size:
                raise ValueError(f"{path}: inner chunk {position} lies outside the shard's data")
            chunks[position] = data[offset : offset + nbytes]
        return chunks

    def encode(self, chunk: np.ndarray) -> bytes | None:
        """One inner chunk's stored bytes, or None where it holds only the fill value and is left out."""
        if not self.keep_empty and np.array_equiv(chunk, self.fill_value):
            return None
        raw = np.ascontiguousarray(chunk, dtype=self.dtype)
        return bytes(self.compressor.encode(raw)) if self.compressor is not None else raw.tobytes()

    def write(self, selection: tuple[slice, ...], block: np.ndarray, shard: tuple[int, ...]) -> None:
        """Write ``block`` (whole inner chunks at ``selection``, all in ``shard``: :meth:`shard_of`)."""
        import google_crc32c

        chunks = self._last[1] if self._last is not None and self._last[0] == shard else self.read_chunks(shard)
        self._last = None
        first = [s.start // c - q * (n // c) for s, c, n, q in zip(selection, self.chunk_shape, self.shard_shape, shard)]
        for local in np.ndindex(*(b // c for b, c in zip(block.shape, self.chunk_shape))):
            part = tuple(slice(i * c, (i + 1) * c) for i, c in zip(local, self.chunk_shape))
            position = tuple(f + i for f, i in zip(first, local))
            encoded = self.encode(block[part])
            if encoded is None:
                chunks.pop(position, None)
            else:
                chunks[position] = encoded
        path = self._path(shard)
        if not chunks:  # zarr keeps no object for a shard without chunks
            path.unlink(missing_ok=True)
            self._last = (shard, chunks)
            return
        pairs = np.full((math.prod(self.chunks_per_shard), 2), ABSENT, dtype="<u8")
        parts, offset = [], 0
        for n, position in enumerate(np.ndindex(*self.chunks_per_shard)):
            encoded = chunks.get(position)
            if encoded is not None:
                pairs[n] = (offset, len(encoded))
                parts.append(encoded)
                offset += len(encoded)
        index = pairs.tobytes()
        parts += [index, google_crc32c.value(index).to_bytes(4, "little")]
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, parts)
        self._last = (shard, chunks)


def block_writer(array):
    """``write(selection, block)`` into ``array``: straight into its shard files where :class:`ShardFiles` allows
    it, else through the zarr API."""
    shards = ShardFiles(array) if ShardFiles.eligible(array) else None

    def write(selection: tuple[slice, ...], block: np.ndarray) -> None:
        shard = shards.shard_of(selection) if shards is not None else None
        if shard is None:
            if shards is not None:
                shards.forget()  # zarr may rewrite the shard held in memory
            array[selection] = block
        else:
            shards.write(selection, block, shard)

    return write
