"""Read the tensors of a ``torch.save`` zip file (``.ckpt`` / ``.pt``) without running any code in it.

A ``torch.save`` file is a zip holding ``<name>/data.pkl`` (the pickled object) and one record per tensor storage
(``<name>/data/<key>``). Real training checkpoints pickle much more than tensors: Lightning's ``AttributeDict``
hyper-parameters, callback states, numpy scalars, ``pathlib`` paths, often from packages not installed where the
file is converted. ``torch.load(weights_only=True)`` refuses those, and ``weights_only=False`` would import and call
whatever the file names.

:class:`InertUnpickler` rebuilds tensors (from the zip's storage records, by our own function) and plain
containers; every other global becomes an :class:`Inert` placeholder that records its name and arguments and is
never imported or called. Only tensors are taken from the result, so a crafted object anywhere in the file runs
nothing.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

# storage class names of the torch.save format -> the dtype of their elements
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}
# plain builtins a checkpoint's containers are made of (their constructors take data, not code)
# (not bytes / bytearray: `bytearray(10**12)` would be a memory bomb; they stay inert)
_PLAIN_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
                   "float": float, "complex": complex, "bool": bool, "str": str}


class Inert:
    """Stand-in for a global the file names (a class or function that is never imported or called).

    ``Inert("os", "system")("rm -rf ~")`` returns another :class:`Inert` holding the arguments; state, items and
    appended values are stored, so the pickle's structure can be walked and inspected, but no method of the named
    object ever runs.
    """

    def __init__(self, module: str, name: str, args: tuple = ()):
        self.module, self.name, self.args = module, name, args
        self.state: Any = None
        self.items: dict = {}
        self.values: list = []

    def __call__(self, *args, **kwargs) -> Inert:  # REDUCE: "call" the global
        return Inert(self.module, self.name, args)

    def __setstate__(self, state) -> None:  # BUILD
        self.state = state

    def __setitem__(self, key, value) -> None:  # SETITEM(S) on a dict subclass
        self.items[key] = value

    def append(self, value) -> None:  # APPEND(S) on a list subclass
        self.values.append(value)

    def extend(self, values) -> None:
        self.values.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.module}.{self.name}>"


def _inert_class(module: str, name: str) -> type:
    """A fresh class standing for ``module.name``: NEWOBJ (``cls.__new__(cls, *args)``) makes an inert instance."""

    def new(cls, *args, **kwargs):
        return Inert(module, name, args)

    return type(f"Inert_{name}", (), {"__new__": new, "module": module, "name": name})


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *rest) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_tensor_v2``: a view of the 1-D storage, copied out contiguous."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError(f"tensor built from {storage!r}, not from a storage record")
    return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


def _rebuild_from_type(func, new_type, args, state):  # torch._tensor._rebuild_from_type_v2 (Parameter subclasses)
    return func(*args)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("collections", "OrderedDict"): OrderedDict,
}


class InertUnpickler(pickle.Unpickler):
    """Unpickle ``data.pkl`` of a torch.save zip: tensors and containers real, every other global inert."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source
        self.globals_seen: set[str] = set()

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS:
            return _PLAIN_BUILTINS[name]
        self.globals_seen.add(f"{module}.{name}")
        return _inert_class(module, name)

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel): the storage's bytes are the zip record data/<key>
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        elif isinstance(storage_type, torch.dtype):
            dtype = storage_type
        else:
            raise pickle.UnpicklingError(f"{self.source}: storage of unknown type {storage_type!r}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        try:
            info = self.archive.getinfo(f"{self.prefix}data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"{self.source}: storage record data/{key} is missing") from None
        if info.file_size < numel * itemsize:
            raise pickle.UnpicklingError(f"{self.source}: storage record data/{key} is truncated")
        if info.file_size > numel * itemsize + 64:  # torch pads nothing: a larger record is not a storage (zip bomb)
            raise pickle.UnpicklingError(f"{self.source}: storage record data/{key} holds {info.file_size} bytes, not {numel * itemsize}")
        data = self.archive.read(info)
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(data[: numel * itemsize]), dtype=dtype)


def is_torch_zip(path: str | Path) -> bool:
    return zipfile.is_zipfile(path)


def read_torch_zip(path: str | Path) -> tuple[Any, set[str]]:
    """(the unpickled object with inert placeholders, names of the globals made inert) of a torch.save zip."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path}: not a torch.save zip (expected one <name>/data.pkl, found {pickles})")
        prefix = pickles[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        if order in archive.namelist() and archive.read(order).strip() not in (b"little", b""):
            raise pickle.UnpicklingError(f"{path}: big-endian torch.save files are not supported")
        with archive.open(pickles[0]) as fh:
            unpickler = InertUnpickler(fh, archive, prefix, str(path))
            return unpickler.load(), unpickler.globals_seen
