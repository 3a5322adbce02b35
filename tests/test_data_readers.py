"""Readers on generated files: IDX (gzip and raw), CIFAR pickles (restricted), CIFAR-10 binary."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
from conftest import cifar_batch_bytes, idx_bytes, write_idx

from bnnrobust.data import read_cifar_binary, read_cifar_pickle, read_idx
from bnnrobust.errors import DatasetError


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), arr, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_idx_header_claiming_more_than_the_file_holds_is_refused(tmp_path):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    path = tmp_path / "trunc.idx"
    path.write_bytes(data[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(path)


def test_idx_huge_claim_does_not_allocate(tmp_path):
    # header claims 4e9 x 4e9 bytes; the reader must fail on the real size, not allocate.
    path = tmp_path / "huge.idx.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 2]) + (4_000_000_000).to_bytes(4, "big") * 2))
    with pytest.raises(DatasetError, match="claims 16000000000000000000 bytes"):
        read_idx(path)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"PK\x03\x04not an idx file")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(path)


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x.idx.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetError):
        read_idx(path)


@pytest.mark.parametrize(("label_key", "classes"), [("labels", 10), ("fine_labels", 100)])
def test_cifar_pickle(tmp_path, label_key, classes):
    raw, data, labels = cifar_batch_bytes(7, seed=1, label_key=label_key, num_classes=classes)
    path = tmp_path / "batch"
    path.write_bytes(raw)
    x, y = read_cifar_pickle(path, label_key=label_key)
    assert x.shape == (7, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x.reshape(7, -1), data)
    np.testing.assert_array_equal(y, labels)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/bnnrobust-pwned",))


def test_cifar_pickle_refuses_code(tmp_path):
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetError, match="refused"):
        read_cifar_pickle(path)
    assert not os.path.exists("/tmp/bnnrobust-pwned")


def test_cifar_pickle_wrong_layout(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.zeros((3, 10), np.uint8), b"labels": [0, 1, 2]}))
    with pytest.raises(DatasetError, match="N×3072"):
        read_cifar_pickle(path)


@pytest.mark.parametrize("gz", [False, True])
def test_cifar_binary(tmp_path, gz):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    pixels = rng.integers(0, 256, (5, 3072)).astype(np.uint8)
    raw = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
    path = tmp_path / ("data_batch_1.bin.gz" if gz else "data_batch_1.bin")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    x, y = read_cifar_binary(path, records=5)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x.reshape(5, -1), pixels)


def test_cifar_binary_partial_record(tmp_path):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(DatasetError, match="holds 2 records, 6146 bytes of data but the file "
                                           "holds more"):
        read_cifar_binary(path, records=2)
    with pytest.raises(DatasetError, match="holds only 6151"):
        read_cifar_binary(path, records=3)


def test_cifar_binary_gzip_bomb_stops_at_the_expected_size(tmp_path, monkeypatch):
    """A small .bin.gz that inflates far past a batch's size is refused after reading the
    expected size plus one byte, not inflated whole."""
    import bnnrobust.data.readers as readers

    path = tmp_path / "test_batch.bin.gz"
    path.write_bytes(gzip.compress(bytes(3073 * 2000), compresslevel=9))  # 6 MB from ~6 KB
    read = []
    original = readers._read
    monkeypatch.setattr(readers, "_read", lambda s, n, p: read.append(n) or original(s, n, p))
    with pytest.raises(DatasetError, match="holds more"):
        read_cifar_binary(path, records=3)
    assert sum(read) == 3 * 3073 + 1


def test_a_zlib_corrupt_binary_batch_is_a_dataset_error(tmp_path):
    data = bytearray(gzip.compress(bytes(3073 * 4)))
    data[20:30] = b"\xff" * 10
    path = tmp_path / "test_batch.bin.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="cannot be read"):
        read_cifar_binary(path, records=4)


@pytest.mark.parametrize("reader", [read_idx, read_cifar_pickle, read_cifar_binary])
def test_missing_files_and_folders_are_dataset_errors(tmp_path, reader):
    with pytest.raises(DatasetError, match="does not exist"):
        reader(tmp_path / "nope.bin")
    with pytest.raises(DatasetError, match="is a folder"):
        reader(tmp_path)


def test_a_right_sized_file_of_random_bytes_is_not_a_cifar_batch(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 3073 * 50).astype(np.uint8)
                     .tobytes())
    with pytest.raises(DatasetError, match="> 9; not a CIFAR-10 binary batch"):
        read_cifar_binary(path, records=50)
