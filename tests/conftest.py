"""Shared fixtures. Real-data tests read ../shared/data through BNNROBUST_DATA and are skipped
with a clear reason when the data is not there; everything else uses generated files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bnnrobust.data import status


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch):
    """Every default test gets its own cache folder (checkpoints, decoded arrays, md5 records),
    and every test its own committed-results folder.

    Slow acceptance tests keep the user's cache ($BNNROBUST_CACHE or ~/.cache/bnnrobust) so
    that the models they need are trained once and shared with the CLI.
    """
    # a paper-profile run exports its results: never into the checkout's results/
    monkeypatch.setenv("BNNROBUST_RESULTS", str(tmp_path_factory.mktemp("results")))
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("BNNROBUST_CACHE", str(tmp_path_factory.mktemp("cache")))


def real_data_root() -> Path | None:
    """The folder with the real MNIST / Fashion-MNIST files, if this machine has it."""
    env = os.environ.get("BNNROBUST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for root in candidates:
        if (root / "mnist").is_dir():
            return root
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real datasets; skips the test when they are absent."""
    root = real_data_root()
    if root is None or status("mnist", root=root, verify=False).state == "missing":
        pytest.skip("real MNIST files not found: set BNNROBUST_DATA to a folder with mnist/")
    return root


# ---------------------------------------------------------------- generated datasets
import gzip  # noqa: E402
import hashlib  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402

from bnnrobust.data.registry import REGISTRY, DatasetSpec, FileSpec  # noqa: E402


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialize a uint8 array in IDX format."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def pattern_images(labels: np.ndarray, *, seed: int, size: int = 28, channels: int = 1) -> np.ndarray:
    """Learnable images: a bright 6×6 patch whose position encodes the class, plus noise."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 60, size=(len(labels), channels, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 5)
        imgs[i, :, 4 + 10 * r: 10 + 10 * r, 1 + 5 * q: 7 + 5 * q] = 250
    return imgs


def make_idx_dataset(root: Path, name: str = "mnist", *, n_train: int = 300, n_test: int = 100,
                     seed: int = 0) -> DatasetSpec:
    """Write an MNIST-layout dataset under root/name and return a matching DatasetSpec."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        imgs = pattern_images(labels, seed=seed + n)[:, 0]
        img_path = write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", imgs)
        lbl_path = write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        splits[split] = (FileSpec(img_path.name, md5_of(img_path)),
                         FileSpec(lbl_path.name, md5_of(lbl_path)))
    return DatasetSpec(name=name, format="idx", shape=(1, 28, 28), num_classes=10,
                       splits=splits, mirrors=("http://127.0.0.1:9/",))


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch) -> Path:
    """A small generated dataset registered as 'mnist' (md5s match); returns its root."""
    root = tmp_path / "data"
    spec = make_idx_dataset(root)
    monkeypatch.setitem(REGISTRY, "mnist", spec)
    monkeypatch.setenv("BNNROBUST_DATA", str(root))
    return root


def cifar_batch_bytes(n: int, *, seed: int, label_key: str = "labels",
                      num_classes: int = 10) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A CIFAR python batch (protocol 2, bytes keys, as the originals) with n images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    data = rng.integers(0, 256, size=(n, 3072)).astype(np.uint8)
    batch = {b"batch_label": b"generated", label_key.encode(): labels.tolist(), b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    return pickle.dumps(batch, protocol=2), data, labels


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``bnnrobust ARGS`` in-process: ``(exit code, stdout, stderr)``."""
    import sys

    from bnnrobust.cli import main

    monkeypatch.setattr(sys, "argv", ["bnnrobust", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- generated ILSVRC2012 archives
import io  # noqa: E402
import tarfile  # noqa: E402

#: leaf synsets of the generated devkit, listed by ILSVRC2012 id (deliberately not sorted)
FAKE_WNIDS = ("n01484850", "n01440764", "n01443537")


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def class_jpeg(label: int, *, seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A JPEG whose colour encodes the class: channel ``label % 3`` bright, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 70, size=(size[1], size[0], 3)).astype(np.uint8)
    pixels[..., label % 3] += 180
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_imagenet(root: Path, *, per_class: int = 3, n_val: int = 6) -> DatasetSpec:
    """Write the three ILSVRC2012 files (train tar of class tars, val tar, devkit with meta.mat
    and the ground truth) for the classes of FAKE_WNIDS under root/imagenet; return the
    matching DatasetSpec. Validation image k (1-based) has leaf id ``(k - 1) % 3 + 1``."""
    from scipy.io import savemat

    folder = root / "imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    sorted_wnids = sorted(FAKE_WNIDS)
    train = folder / "ILSVRC2012_img_train.tar"
    with tarfile.open(train, "w") as outer:
        for c, wnid in enumerate(FAKE_WNIDS):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(per_class):
                    label = sorted_wnids.index(wnid)
                    _tar_add(tar, f"{wnid}_{i}.JPEG",
                             class_jpeg(label, seed=100 * c + i, size=(48 + 8 * i, 40)))
            _tar_add(outer, f"{wnid}.tar", inner.getvalue())
    val = folder / "ILSVRC2012_img_val.tar"
    truth = [(k - 1) % 3 + 1 for k in range(1, n_val + 1)]
    with tarfile.open(val, "w") as tar:
        for k in reversed(range(1, n_val + 1)):  # out of order, as an archive may be
            label = sorted_wnids.index(FAKE_WNIDS[truth[k - 1] - 1])
            _tar_add(tar, f"ILSVRC2012_val_{k:08d}.JPEG",
                     class_jpeg(label, seed=1000 + k, size=(40, 52)))
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.zeros((len(FAKE_WNIDS) + 1, 1), dtype=fields)
    for i, wnid in enumerate(FAKE_WNIDS):
        synsets[i, 0] = (i + 1, wnid, wnid, 0)
    synsets[len(FAKE_WNIDS), 0] = (len(FAKE_WNIDS) + 1, "n00001740", "entity", 3)
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    devkit = folder / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit, "w:gz") as tar:
        _tar_add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        _tar_add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
                 "".join(f"{t}\n" for t in truth).encode())
    kit = FileSpec(devkit.name, md5_of(devkit))
    return DatasetSpec(name="imagenet", format="ilsvrc", shape=(3, 224, 224), num_classes=1000,
                       splits={"train": (FileSpec(train.name, md5_of(train)), kit),
                               "test": (FileSpec(val.name, md5_of(val)), kit)},
                       mirrors=())


@pytest.fixture
def fake_imagenet(tmp_path, monkeypatch) -> Path:
    """Generated ILSVRC2012 archives registered as 'imagenet' (md5s match); returns the root."""
    root = tmp_path / "data"
    monkeypatch.setitem(REGISTRY, "imagenet", make_imagenet(root))
    monkeypatch.setenv("BNNROBUST_DATA", str(root))
    return root
