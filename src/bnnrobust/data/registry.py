"""Where each dataset comes from: its files, their md5, the official mirrors, and its layout.

A dataset lives in ``<root>/<name>/`` under the original file names. The md5 values are the
ones published by the dataset authors (and used by torchvision); a file whose md5 differs is
never used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: its original name, its md5 and, for archives, what it holds."""

    name: str
    md5: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its registry name, file format, files per split and mirrors to fetch them from.

    ``format`` is ``"idx"`` (MNIST-style gzipped IDX files, one image and one label file per
    split), ``"cifar"`` (CIFAR python batches, shipped in ``archive``) or ``"ilsvrc"`` (the
    ImageNet archives, streamed by :mod:`bnnrobust.data.imagenet`, never loaded whole).
    """

    name: str
    format: str
    shape: tuple[int, int, int]
    num_classes: int
    splits: dict[str, tuple[FileSpec, ...]]
    mirrors: tuple[str, ...]
    archive: FileSpec | None = None
    archive_folder: str | None = None
    binary_folder: str | None = None
    binary_archive: FileSpec | None = None
    binary_records: int = 10000
    label_key: str = "labels"
    homepage: str = ""
    #: examples per split as published (what a cost estimate counts without the files)
    examples: tuple[tuple[str, int], ...] = ()

    def files(self) -> tuple[FileSpec, ...]:
        """Every file of every split, in a stable order."""
        seen: dict[str, FileSpec] = {}
        for split_files in self.splits.values():
            for spec in split_files:
                seen.setdefault(spec.name, spec)
        return tuple(seen.values())


MNIST = DatasetSpec(
    name="mnist",
    examples=(("train", 60000), ("test", 10000)),
    format="idx",
    shape=(1, 28, 28),
    num_classes=10,
    splits={
        "train": (
            FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
            FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
        ),
        "test": (
            FileSpec("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
            FileSpec("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    homepage="http://yann.lecun.com/exdb/mnist/",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    examples=(("train", 60000), ("test", 10000)),
    format="idx",
    shape=(1, 28, 28),
    num_classes=10,
    splits={
        "train": (
            FileSpec("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
            FileSpec("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
        ),
        "test": (
            FileSpec("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
            FileSpec("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148),
        ),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    examples=(("train", 50000), ("test", 10000)),
    format="cifar",
    shape=(3, 32, 32),
    num_classes=10,
    splits={
        "train": tuple(
            FileSpec(f"data_batch_{i}", md5)
            for i, md5 in enumerate(
                (
                    "c99cafc152244af753f735de768cd75f",
                    "d4bba439e000b95fd0a9bffe97cbabec",
                    "54ebc095f3ab1f0389bbae665268c751",
                    "634d18415352ddfa80567beed471001a",
                    "482c414d41f54cd18b22e5b47cb7c3cb",
                ),
                start=1,
            )
        ),
        "test": (FileSpec("test_batch", "40351d587109b95175f43aff81a1287e"),),
    },
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    archive=FileSpec("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),
    archive_folder="cifar-10-batches-py",
    binary_folder="cifar-10-batches-bin",
    binary_archive=FileSpec("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                            162342271),
    label_key="labels",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
)

CIFAR100 = DatasetSpec(
    name="cifar100",
    examples=(("train", 50000), ("test", 10000)),
    format="cifar",
    shape=(3, 32, 32),
    num_classes=100,
    splits={
        "train": (FileSpec("train", "16019d7e3df5f24257cddd939b257f8d"),),
        "test": (FileSpec("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    },
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    archive=FileSpec("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437),
    archive_folder="cifar-100-python",
    label_key="fine_labels",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
)

_DEVKIT = FileSpec("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf")

IMAGENET = DatasetSpec(
    name="imagenet",
    examples=(("train", 1281167), ("test", 50000)),
    format="ilsvrc",
    shape=(3, 224, 224),
    num_classes=1000,
    splits={
        "train": (FileSpec("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
                  _DEVKIT),
        "test": (FileSpec("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
                 _DEVKIT),
    },
    mirrors=(),
    homepage="https://image-net.org/download (a login is needed; files cannot be fetched "
             "for you)",
)

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10, CIFAR100, IMAGENET)
}

#: data sets read as a stream of images (map-style torch datasets), never as whole arrays
STREAMED = frozenset(n for n, s in REGISTRY.items() if s.format == "ilsvrc")

SPLITS = ("train", "test")
