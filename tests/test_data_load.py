"""load(): root lookup, md5 checks, offline errors, downloads from a local mirror, caches,
CIFAR layouts; and the real MNIST / Fashion-MNIST files when this machine has them."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cifar_batch_bytes, make_idx_dataset, md5_of

import bnnrobust.data.loading as loading
from bnnrobust.data import REGISTRY, data_root, load, status
from bnnrobust.data.registry import CIFAR10, FileSpec
from bnnrobust.errors import DatasetError


def test_load_contract(fake_mnist):
    x, y = load("mnist", "train")
    assert x.dtype == torch.float32 and x.shape == (300, 1, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (300,)
    assert 0.0 <= x.min() and x.max() <= 1.0
    x5, y5 = load("mnist", "test", limit=5)
    xt, yt = load("mnist", "test")
    assert torch.equal(x5, xt[:5]) and torch.equal(y5, yt[:5])


def test_bad_name_split_and_limit(fake_mnist):
    with pytest.raises(DatasetError, match="known datasets: cifar10, cifar100, fashion-mnist"):
        load("mnits")
    with pytest.raises(DatasetError, match="expected 'train' or 'test'"):
        load("mnist", "validation")
    with pytest.raises(DatasetError, match="positive integer"):
        load("mnist", limit=0)


def test_root_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BNNROBUST_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("BNNROBUST_DATA")
    monkeypatch.setenv("BNNROBUST_CACHE", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "data"


def test_md5_mismatch_is_never_used(fake_mnist):
    path = fake_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="does not match its published md5"):
        load("mnist", "test")


def test_offline_error_names_everything(tmp_path, monkeypatch):
    spec = make_idx_dataset(tmp_path / "src")
    monkeypatch.setitem(REGISTRY, "mnist", spec)  # mirror is a closed local port
    root = tmp_path / "empty"
    with pytest.raises(DatasetError) as info:
        load("mnist", "train", root=root)
    text = str(info.value)
    assert "dataset 'mnist'" in text and "download failed" in text
    for f in spec.splits["train"]:
        assert f.name in text and f.md5 in text
    # the root was given: the error points at it, not at BNNROBUST_DATA, and creates nothing
    assert str(root / "mnist") in text and "--root" in text and "BNNROBUST_DATA" not in text
    assert not root.exists(), "a failed load must not create the root folder"
    monkeypatch.setenv("BNNROBUST_DATA", str(root))
    with pytest.raises(DatasetError, match="set BNNROBUST_DATA"):
        load("mnist", "train")
    assert not root.exists()


def test_download_false_reports_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "mnist", make_idx_dataset(tmp_path / "src"))
    with pytest.raises(DatasetError, match="download=False"):
        load("mnist", root=tmp_path / "none", download=False)


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server serving tmp_path/mirror; yields its URL."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_from_local_http_mirror(tmp_path, monkeypatch, http_mirror):
    mirror_dir, url = http_mirror
    spec = make_idx_dataset(tmp_path / "src")
    for f in (tmp_path / "src" / "mnist").iterdir():
        shutil.copy(f, mirror_dir / f.name)
    # first mirror is dead, the second works: the loader falls through to it
    monkeypatch.setitem(REGISTRY, "mnist", replace(spec, mirrors=("http://127.0.0.1:9/", url)))
    root = tmp_path / "root"
    x, y = load("mnist", "test", root=root)
    assert x.shape == (100, 1, 28, 28)
    for f in spec.splits["test"]:
        assert md5_of(root / "mnist" / f.name) == f.md5
    assert not list((root / "mnist").glob(".*part")), "no temporary files left"


def test_download_with_wrong_content_is_discarded(tmp_path, monkeypatch, http_mirror):
    mirror_dir, url = http_mirror
    spec = make_idx_dataset(tmp_path / "src")
    for f in (tmp_path / "src" / "mnist").iterdir():
        (mirror_dir / f.name).write_bytes(b"not the file")
    monkeypatch.setitem(REGISTRY, "mnist", replace(spec, mirrors=(url,)))
    with pytest.raises(DatasetError, match="md5"):
        load("mnist", "test", root=tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_download_from_file_mirror(tmp_path, monkeypatch):
    spec = make_idx_dataset(tmp_path / "src")
    monkeypatch.setitem(REGISTRY, "mnist",
                        replace(spec, mirrors=((tmp_path / "src" / "mnist").as_uri() + "/",)))
    x, _ = load("mnist", "train", root=tmp_path / "root")
    assert x.shape[0] == 300


def test_second_load_uses_decoded_cache(fake_mnist, monkeypatch):
    first = load("mnist", "train")
    loading._MEMORY.clear()  # a new process: only the on-disk caches remain

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    def no_md5(*args, **kwargs):
        raise AssertionError("md5 recomputed for a verified, unchanged file")

    monkeypatch.setattr(loading, "_decode", no_decode)
    monkeypatch.setattr("bnnrobust.data.download.md5sum", no_md5)
    second = load("mnist", "train")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_status_states(fake_mnist, tmp_path):
    assert status("mnist").state == "verified"
    assert status("mnist", root=tmp_path / "nothing").state == "missing"
    (fake_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x")
    assert status("mnist").state == "corrupt"


# ------------------------------------------------------------------------- CIFAR layouts
def _cifar_spec(tmp_path: Path, *, archive: bool) -> tuple:
    """Generated CIFAR-10 python batches (2 train of 4 images, 1 test of 3) and their spec."""
    src = tmp_path / "gen" / CIFAR10.archive_folder
    src.mkdir(parents=True)
    files, arrays = {}, {}
    for i, (name, n) in enumerate((("data_batch_1", 4), ("data_batch_2", 4), ("test_batch", 3))):
        raw, data, labels = cifar_batch_bytes(n, seed=i)
        (src / name).write_bytes(raw)
        files[name] = FileSpec(name, md5_of(src / name))
        arrays[name] = (data, labels)
    spec = replace(CIFAR10, splits={"train": (files["data_batch_1"], files["data_batch_2"]),
                                    "test": (files["test_batch"],)}, mirrors=("http://127.0.0.1:9/",))
    if archive:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in files:
                tar.add(src / name, arcname=f"{CIFAR10.archive_folder}/{name}")
        path = tmp_path / "gen" / CIFAR10.archive.name
        path.write_bytes(buf.getvalue())
        spec = replace(spec, archive=FileSpec(path.name, md5_of(path)))
    return spec, src, arrays


def test_cifar_python_batches(tmp_path, monkeypatch):
    spec, src, arrays = _cifar_spec(tmp_path, archive=False)
    monkeypatch.setitem(REGISTRY, "cifar10", spec)
    root = tmp_path / "root"
    shutil.copytree(src, root / "cifar10" / CIFAR10.archive_folder)
    x, y = load("cifar10", "train", root=root)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    expected = np.concatenate([arrays["data_batch_1"][0], arrays["data_batch_2"][0]])
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).reshape(8, -1).numpy(),
                                  expected)
    np.testing.assert_array_equal(
        y.numpy(), np.concatenate([arrays["data_batch_1"][1], arrays["data_batch_2"][1]]))


def test_cifar_archive_is_verified_and_extracted(tmp_path, monkeypatch):
    spec, _, arrays = _cifar_spec(tmp_path, archive=True)
    monkeypatch.setitem(REGISTRY, "cifar10", spec)
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    shutil.copy(tmp_path / "gen" / spec.archive.name, root / "cifar10")
    x, y = load("cifar10", "test", root=root)
    assert x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(y.numpy(), arrays["test_batch"][1])


def test_cifar_binary_layout(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "cifar10", replace(CIFAR10, mirrors=("http://127.0.0.1:9/",),
                                                     binary_records=6))
    folder = tmp_path / "root" / "cifar10" / CIFAR10.binary_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    records = np.concatenate([rng.integers(0, 10, (6, 1)), rng.integers(0, 256, (6, 3072))],
                             axis=1).astype(np.uint8)
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    x, y = load("cifar10", "test", root=tmp_path / "root")
    assert x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(y.numpy(), records[:, 0])
    from bnnrobust.files import cache_root

    assert not list((cache_root() / "arrays").glob("cifar10-*"))  # size-checked only: no cache
    (folder / "test_batch.bin").write_bytes(records[:5].tobytes())  # one record short
    with pytest.raises(DatasetError, match="holds 6 records"):
        load("cifar10", "test", root=tmp_path / "root")


def test_cifar_missing_names_archive(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz.*c58f30108f718f92721af3b95e74349a"):
        load("cifar10", root=tmp_path, download=False)


# ------------------------------------------------------------------------ the real files
def test_real_mnist(data_root):
    x, y = load("mnist", "train", root=data_root)
    assert x.shape == (60000, 1, 28, 28)
    assert y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    xt, yt = load("mnist", "test", root=data_root)
    assert yt.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist(data_root):
    x, y = load("fashion-mnist", "test", root=data_root)
    assert x.shape == (10000, 1, 28, 28) and y.bincount().tolist() == [1000] * 10


def test_generated_and_dataset_is_the_truth_table():
    from bnnrobust.data import load as load_data

    x, y = load_data("and", "train")
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.tolist() == [0, 0, 0, 1]
    assert load_data("and", "test", limit=2)[1].tolist() == [0, 0]
    with pytest.raises(DatasetError, match="unknown split 'val' for 'and'"):
        load_data("and", "val")


def test_cifar_binary_tarball_is_md5_checked_and_read_without_unpacking(tmp_path, monkeypatch):
    from tests.conftest import md5_of

    rng = np.random.default_rng(5)
    folder = tmp_path / "root" / "cifar10"
    folder.mkdir(parents=True)
    tarball = folder / "cifar-10-binary.tar.gz"
    batches = {}
    with tarfile.open(tarball, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            records = np.concatenate([rng.integers(0, 10, (3, 1)),
                                      rng.integers(0, 256, (3, 3072))], axis=1).astype(np.uint8)
            batches[name] = records
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}.bin")
            info.size = records.nbytes
            tar.addfile(info, io.BytesIO(records.tobytes()))
    spec = replace(CIFAR10, mirrors=("http://127.0.0.1:9/",), binary_records=3,
                   binary_archive=FileSpec(tarball.name, md5_of(tarball)))
    monkeypatch.setitem(REGISTRY, "cifar10", spec)
    x, y = load("cifar10", "test", root=tmp_path / "root")
    np.testing.assert_array_equal(y.numpy(), batches["test_batch"][:, 0])
    xt, _ = load("cifar10", "train", root=tmp_path / "root")
    assert xt.shape == (15, 3, 32, 32) and not (folder / CIFAR10.binary_folder).exists()
    from bnnrobust.data import identity

    assert identity("cifar10", root=tmp_path / "root")[0] == f"{tarball.name}:{md5_of(tarball)}"
    monkeypatch.setitem(REGISTRY, "cifar10", replace(spec, binary_archive=FileSpec(
        tarball.name, "0" * 32)))
    with pytest.raises(DatasetError, match="does not match its published md5"):
        load("cifar10", "test", root=tmp_path / "root")
