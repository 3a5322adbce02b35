"""Readers for the original dataset file formats. None of them trusts a header or runs code.

- IDX (MNIST, Fashion-MNIST), gzipped or raw: the header's claimed size is checked against the
  real amount of data before the array is built.
- CIFAR-10/100 python pickles: a restricted unpickler admits only built-in containers, bytes and
  NumPy arrays.
- CIFAR-10 binary version (``data_batch_N.bin``, ``test_batch.bin``, plain or ``.gz``).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from bnnrobust.errors import DatasetError

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 20


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _read_exact(stream: io.BufferedIOBase, nbytes: int, path: Path) -> bytes:
    """Read exactly ``nbytes`` in chunks (memory grows with the real data, not with a claim)."""
    buf = bytearray()
    try:
        while len(buf) <= nbytes:
            chunk = stream.read(min(_CHUNK, nbytes + 1 - len(buf)))
            if not chunk:
                break
            buf.extend(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}); the file is corrupt or truncated.") from exc
    if len(buf) != nbytes:
        what = "more" if len(buf) > nbytes else f"only {len(buf)}"
        raise DatasetError(
            f"{path}: its header promises {nbytes} bytes of data but the file holds {what}; "
            "the file is truncated or not an IDX file. Delete it and fetch it again."
        )
    return bytes(buf)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) into a NumPy array."""
    path = Path(path)
    with _open(path) as stream:
        try:
            head = stream.read(4)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DatasetError(f"{path}: not a readable IDX file ({exc}).") from exc
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise DatasetError(
                f"{path}: not an IDX file (magic bytes {head.hex() or 'missing'}; expected "
                "00 00 <type> <ndim>)."
            )
        dtype, ndim = _IDX_DTYPES[head[2]], head[3]
        if ndim == 0:
            raise DatasetError(f"{path}: IDX header declares 0 dimensions.")
        dims_raw = stream.read(4 * ndim)
        if len(dims_raw) != 4 * ndim:
            raise DatasetError(f"{path}: IDX header is truncated.")
        dims = struct.unpack(f">{ndim}I", dims_raw)
        nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        data = _read_exact(stream, nbytes, path)
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds: containers, bytes, numbers and NumPy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_cifar_pickle(path: str | Path, *, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch: ``(images uint8 N×3×32×32, labels int64 N)``.

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` for CIFAR-100.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _RestrictedUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: refused as a CIFAR batch ({exc}).") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: a CIFAR batch must be a dict, found {type(batch).__name__}.")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DatasetError(
            f"{path}: CIFAR batch lacks 'data' or {label_key!r} (keys: {sorted(batch)})."
        )
    data, labels = batch["data"], np.asarray(batch[label_key], dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: 'data' must be an N×3072 uint8 array.")
    if data.shape[0] != labels.shape[0]:
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels.")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def read_cifar_binary(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch (records of 1 label byte + 3072 pixel bytes)."""
    path = Path(path)
    record = 1 + 3072
    with _open(path) as stream:
        try:
            data = stream.read()
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DatasetError(f"{path}: cannot be read ({exc}).") from exc
    if not data or len(data) % record:
        raise DatasetError(
            f"{path}: {len(data)} bytes is not a whole number of CIFAR-10 records "
            f"({record} bytes each); the file is truncated or not a CIFAR-10 binary batch."
        )
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = arr[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"{path}: label {labels.max()} > 9; not a CIFAR-10 binary batch.")
    return arr[:, 1:].reshape(-1, 3, 32, 32).copy(), labels
