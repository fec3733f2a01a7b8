"""Whole-chunk reads and writes of the step buffers' zarr arrays, without zarr's per-call machinery where it is safe.

The step buffers are read and written one tile (= one zarr chunk) at a time, many times per tile-step; through
``zarr.Array.__getitem__`` / ``__setitem__`` each call pays for the selection logic, the codec pipeline and two
thread hand-offs of zarr's event loop, which cost more CPU than the bytes themselves (docs/performance.md,
"Engine floor"). For an array that is

* in a local folder (zarr ``LocalStore``), zarr format 3, not sharded, and
* encoded by the bytes codec alone (no compressor, no filter) in little-endian order,

a chunk object is, by the zarr v3 specification, the chunk's C-order little-endian bytes at the key
``metadata.encode_chunk_key(coords)``; a missing object means every element holds the fill value. :class:`ChunkFiles`
reads and writes exactly that: one file read, or one write to a temporary file renamed over the chunk (atomic, as
zarr's own local store does) or over the chunk's bytes in place, so zarr reads what it writes and the other way
round. Any other array (memory store,
fsspec URL, compression, sharding) goes through the zarr API (:class:`ZarrChunks`), with the same interface.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import numpy as np


class ZarrChunks:
    """Whole chunks of any zarr array through the zarr API (the general path)."""

    def __init__(self, array):
        self.array = array
        self.chunk_shape = tuple(array.chunks)

    def _selection(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(i * n, min((i + 1) * n, size)) for i, n, size in zip(coords, self.chunk_shape, self.array.shape))

    def read(self, coords: tuple[int, ...]) -> np.ndarray:
        """The chunk at ``coords`` (clipped at the array's edge), as a writable array."""
        return np.array(self.array[self._selection(coords)])

    def read_into(self, coords: tuple[int, ...], out: np.ndarray) -> None:
        """Copy the chunk at ``coords`` into ``out`` (its clipped shape)."""
        out[...] = self.read(coords)

    def write(self, coords: tuple[int, ...], value: np.ndarray, in_place: bool = False) -> None:
        """Write the chunk at ``coords`` (``in_place``: see :meth:`ChunkFiles.write`; zarr writes objects whole)."""
        self.array[self._selection(coords)] = value


class ChunkFiles(ZarrChunks):
    """Whole chunks of an uncompressed, unsharded zarr v3 array in a local folder, as files (see module doc)."""

    def __init__(self, array):
        super().__init__(array)
        self.root = Path(array.store_path.store.root) / array.store_path.path
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill_value = np.asarray(array.fill_value, dtype=self.dtype)
        self.encode_key = array.metadata.encode_chunk_key
        self._folders: set[Path] = set()

    @classmethod
    def eligible(cls, array) -> bool:
        codecs = tuple(array.metadata.codecs)
        return local_v3(array) and array.shards is None and len(codecs) == 1 and little_endian_bytes(codecs[0])

    def _clip(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """The part of a (full-size) chunk object that lies inside the array."""
        return tuple(slice(0, min(n, size - i * n)) for i, n, size in zip(coords, self.chunk_shape, self.array.shape))

    def read(self, coords: tuple[int, ...]) -> np.ndarray:
        path = self.root / self.encode_key(coords)
        try:
            chunk = np.fromfile(path, dtype=self.dtype)
        except FileNotFoundError:
            chunk = np.full(self.chunk_shape, self.fill_value, dtype=self.dtype)
        else:
            if chunk.size != math.prod(self.chunk_shape):
                raise ValueError(f"{path}: {chunk.size} elements, a chunk of this array holds {self.chunk_shape}")
            chunk = chunk.reshape(self.chunk_shape)
        return chunk[self._clip(coords)]

    def read_into(self, coords: tuple[int, ...], out: np.ndarray) -> None:
        """Read the chunk at ``coords`` straight into ``out`` (a whole chunk, C-contiguous: one file read, no
        intermediate array; otherwise as :meth:`read`)."""
        if tuple(out.shape) != self.chunk_shape or not out.flags.c_contiguous or out.dtype != self.dtype:
            out[...] = self.read(coords)
            return
        path = self.root / self.encode_key(coords)
        try:
            handle = open(path, "rb", buffering=0)
        except FileNotFoundError:
            out[...] = self.fill_value
            return
        with handle:
            view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
            while done < len(view):
                got = handle.readinto(view[done:])
                if not got:
                    break
                done += got
            if done != len(view) or handle.read(1):
                raise ValueError(f"{path}: not a whole chunk of {self.chunk_shape} {self.dtype} elements")

    def write(self, coords: tuple[int, ...], value: np.ndarray, in_place: bool = False) -> None:
        """Write the chunk at ``coords``: to a temporary file renamed over the chunk (atomic), or, ``in_place``,
        over the chunk file's bytes (several times cheaper: no new file, no new pages; a reader or a process
        killed mid-write may see a partly written chunk, so only for data no one reads until it is complete)."""
        inside = self._clip(coords)
        if tuple(s.stop for s in inside) == self.chunk_shape:
            full = np.ascontiguousarray(value, dtype=self.dtype)
        else:  # an edge chunk: the object still holds the whole chunk, fill value outside the array
            full = np.full(self.chunk_shape, self.fill_value, dtype=self.dtype)
            full[inside] = value
        path = self.root / self.encode_key(coords)
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        if in_place:
            data = memoryview(full.reshape(-1).view(np.uint8))
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while data:
                    data = data[os.write(descriptor, data) :]
            finally:
                os.close(descriptor)
            return
        replace_file(path, [memoryview(full.reshape(-1).view(np.uint8))])


def replace_file(path: Path, parts) -> None:
    """Write ``parts`` (bytes-like, in order) to a temporary file beside ``path`` and rename it over ``path``:
    atomic, as zarr's own local store writes, so a reader (or a resumed run) sees the old file or the new one."""
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(partial, "wb") as handle:
            handle.writelines(parts)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def local_v3(array) -> bool:
    """Whether ``array`` is a zarr format 3 array in a local folder (zarr ``LocalStore``)."""
    from zarr.storage import LocalStore

    return getattr(array.metadata, "zarr_format", None) == 3 and isinstance(array.store_path.store, LocalStore)


def little_endian_bytes(codec, *, unspecified_ok: bool = True) -> bool:
    """Whether ``codec`` is zarr's bytes codec writing little-endian (or with no order: single-byte types)."""
    from zarr.codecs import BytesCodec

    if not isinstance(codec, BytesCodec):
        return False
    endian = getattr(codec.endian, "value", codec.endian)
    return endian == "little" or (unspecified_ok and endian is None)


def chunk_io(array) -> ZarrChunks:
    """:class:`ChunkFiles` where the array allows it, else :class:`ZarrChunks`."""
    return ChunkFiles(array) if ChunkFiles.eligible(array) else ZarrChunks(array)
