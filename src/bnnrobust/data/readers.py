"""Readers for the original dataset file formats. None of them trusts a header or runs code.

- IDX (MNIST, Fashion-MNIST), gzipped or raw: the header's claimed size is checked against the
  real amount of data before the array is built.
- CIFAR-10/100 python pickles: a restricted unpickler admits only built-in containers, bytes and
  NumPy arrays.
- CIFAR-10 binary version (``data_batch_N.bin``, ``test_batch.bin``, plain or ``.gz``): read in
  bounded chunks and only when it holds exactly the expected number of records (a gzip bomb
  stops at the expected size plus one byte).

Every fault of a file — missing, a folder, truncated, corrupt compression, a foreign or altered
layout — is a :class:`~bnnrobust.errors.DatasetError` naming the file and what is wrong; memory
never grows past the expected size or the file's real content.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zlib
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
#: the most data an IDX header may claim (MNIST's largest file holds 47 MB)
MAX_IDX_BYTES = 1 << 30
#: the largest pickle batch read (CIFAR-100's training batch is 155 MB)
MAX_PICKLE_BYTES = 512 << 20
#: records in each CIFAR-10 binary batch
CIFAR_RECORDS = 10000
#: the stream faults of a corrupt plain or gzipped file
_STREAM_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


def _open(path: Path) -> io.BufferedIOBase:
    """Open ``path`` for reading (gunzipped when its name ends in ``.gz``)."""
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, not a data file.")
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise DatasetError(f"{path}: does not exist.") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be opened ({exc}).") from None


def _read(stream: io.BufferedIOBase, nbytes: int, path: Path) -> bytes:
    """Up to ``nbytes`` from ``stream``; a corrupt stream is a DatasetError."""
    try:
        return stream.read(nbytes)
    except _STREAM_ERRORS as exc:
        raise DatasetError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is "
                           "corrupt or truncated.") from None


def _read_exact(stream: io.BufferedIOBase, nbytes: int, path: Path, *, what: str) -> bytes:
    """Read exactly ``nbytes`` in chunks (memory grows with the real data, not with a claim:
    at most ``nbytes + 1`` bytes are read)."""
    buf = bytearray()
    while len(buf) <= nbytes:
        chunk = _read(stream, min(_CHUNK, nbytes + 1 - len(buf)), path)
        if not chunk:
            break
        buf.extend(chunk)
    if len(buf) != nbytes:
        held = "more" if len(buf) > nbytes else f"only {len(buf)}"
        raise DatasetError(
            f"{path}: {what} {nbytes} bytes of data but the file holds {held}; the file is "
            "truncated, altered or of another kind. Delete it and fetch it again."
        )
    return bytes(buf)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) into a NumPy array."""
    path = Path(path)
    with _open(path) as stream:
        head = _read(stream, 4, path)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise DatasetError(
                f"{path}: not an IDX file (magic bytes {head.hex() or 'missing'}; expected "
                "00 00 <type> <ndim>)."
            )
        dtype, ndim = _IDX_DTYPES[head[2]], head[3]
        if ndim == 0:
            raise DatasetError(f"{path}: IDX header declares 0 dimensions.")
        dims_raw = _read(stream, 4 * ndim, path)
        if len(dims_raw) != 4 * ndim:
            raise DatasetError(f"{path}: IDX header is truncated.")
        dims = struct.unpack(f">{ndim}I", dims_raw)
        nbytes = math.prod(dims) * dtype.itemsize
        if nbytes > MAX_IDX_BYTES:
            raise DatasetError(f"{path}: its IDX header claims {nbytes} bytes of data (dims "
                               f"{dims}); at most {MAX_IDX_BYTES} are read. Not an MNIST-style "
                               "file, or altered.")
        data = _read_exact(stream, nbytes, path, what="its IDX header promises")
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

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` for CIFAR-100. The file is
    read whole (at most :data:`MAX_PICKLE_BYTES`) and unpickled from memory, so that no pickle
    framing claim can allocate more than the file holds.
    """
    path = Path(path)
    with _open(path) as handle:
        raw = _read(handle, MAX_PICKLE_BYTES + 1, path)
    if len(raw) > MAX_PICKLE_BYTES:
        raise DatasetError(f"{path}: larger than {MAX_PICKLE_BYTES} bytes; not a CIFAR batch.")
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any fault of the unpickler on a foreign file
        raise DatasetError(f"{path}: refused as a CIFAR batch ({type(exc).__name__}: "
                           f"{str(exc)[:200]}).") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: a CIFAR batch must be a dict, found {type(batch).__name__}.")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: CIFAR batch lacks 'data' or {label_key!r} (keys: "
                           f"{', '.join(sorted(map(repr, batch)))[:300]}).")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        raise DatasetError(f"{path}: 'data' must be an N×3072 uint8 array.")
    try:
        labels = np.asarray(batch[label_key])
        ok = labels.ndim == 1 and labels.dtype.kind in "iu" and (labels >= 0).all()
    except Exception:  # noqa: BLE001 - whatever a foreign label list holds
        ok = False
    if not ok:
        raise DatasetError(f"{path}: {label_key!r} must be a list of non-negative integers.")
    if data.shape[0] != labels.shape[0]:
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels.")
    return data.reshape(-1, 3, 32, 32).copy(), labels.astype(np.int64)


def read_cifar_binary(path: str | Path, *, records: int = CIFAR_RECORDS,
                      stream: io.BufferedIOBase | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch: exactly ``records`` records of 1 label byte + 3072 pixel
    bytes (10,000 in every batch of the release), read in bounded chunks from ``path`` (or from
    ``stream``, e.g. a member of the binary tarball, ``path`` naming it in errors)."""
    path = Path(path)
    record = 1 + 3072
    what = f"a CIFAR-10 binary batch holds {records} records,"
    if stream is not None:
        data = _read_exact(stream, records * record, path, what=what)
    else:
        with _open(path) as handle:
            data = _read_exact(handle, records * record, path, what=what)
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = arr[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"{path}: label {labels.max()} > 9; not a CIFAR-10 binary batch.")
    return arr[:, 1:].reshape(-1, 3, 32, 32).copy(), labels
