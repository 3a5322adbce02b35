"""ILSVRC2012 (ImageNet) read straight from its original archives, never unpacked.

The three files of the ILSVRC2012 release live in ``<root>/imagenet/`` (image-net.org gives
them after a login; they cannot be downloaded for you):

- ``ILSVRC2012_img_train.tar``: one tar per class (``n01440764.tar``, ...) of JPEG images;
- ``ILSVRC2012_img_val.tar``: the 50,000 validation JPEGs (``ILSVRC2012_val_00000001.JPEG``, ...);
- ``ILSVRC2012_devkit_t12.tar.gz``: ``data/meta.mat`` (synset WNIDs by ILSVRC2012 id) and
  ``data/ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012 id per validation image).

Each file is md5-checked once (the verified-files cache remembers it). The first use of a split
builds an index — where every JPEG lies in the archive (absolute byte offset and size) and its
label — and caches it; an image is then one seek and one read, so a
:class:`torch.utils.data.DataLoader` with workers streams the 138 GB training archive without
unpacking it. Labels are the position of the synset's WNID in the sorted list of the 1000 leaf
synsets (torchvision's convention; 0 = ``n01440764``, tench).

Preprocessing (Krizhevsky et al. 2012, as the XNOR-Net and BinaryNet.pytorch code do): the
shorter side is resized to 256 pixels (bilinear); training takes a random ``size``×``size`` crop
and a random horizontal flip, evaluation the centre crop. Images come out as ``uint8``-valued
float tensors in [0, 1] (so k-bit input discretization acts on 8-bit pixels as for the other
data sets); normalization belongs inside the model. Decoding needs Pillow, the index of the
devkit needs SciPy (``pip install 'bnnrobust[imagenet]'``).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bnnrobust.errors import DatasetError
from bnnrobust.files import atomic_write, cache_root

_INDEX_VERSION = "1"
_CLASS_TAR = re.compile(r"(?:.*/)?(n\d{8})\.tar")
_VAL_IMAGE = re.compile(r"(?:.*/)?ILSVRC2012_val_(\d{8})\.JPEG")
_DEVKIT_META = "ILSVRC2012_devkit_t12/data/meta.mat"
_DEVKIT_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
#: the longest member an index accepts (the largest ILSVRC2012 JPEG is about 15 MB)
MAX_IMAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class ArchiveIndex:
    """Where each image of a split lies: ``offsets``/``sizes`` (bytes, in ``archive``) and
    ``labels`` (class index), plus the sorted WNIDs the labels index."""

    archive: Path
    offsets: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    wnids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _open_tar(path: Path, mode: str = "r:") -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode)
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot be read as a tar archive ({exc}); is it the "
                           "original ILSVRC2012 file?") from None


def devkit_labels(devkit: Path) -> tuple[tuple[str, ...], dict[int, str], list[int]]:
    """From the devkit: the 1000 leaf WNIDs (sorted), ILSVRC2012 id → WNID, and the validation
    ground truth (one ILSVRC2012 id per image, in image order)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("reading the ImageNet devkit needs SciPy: pip install "
                           "'bnnrobust[imagenet]'.") from None
    with _open_tar(devkit, "r:gz") as tar:
        try:
            meta = tar.extractfile(_DEVKIT_META)
            truth = tar.extractfile(_DEVKIT_TRUTH)
            meta_bytes, truth_bytes = meta.read(), truth.read()
        except (KeyError, AttributeError, tarfile.TarError, OSError, EOFError, zlib.error):
            raise DatasetError(f"{devkit}: lacks {_DEVKIT_META} or {_DEVKIT_TRUTH}; not the "
                               "ILSVRC2012 development kit (task 1 & 2).") from None
    try:
        synsets = loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
        ids = [int(v) for v in np.atleast_1d(synsets["ILSVRC2012_ID"])]
        wnids = [str(v) for v in np.atleast_1d(synsets["WNID"])]
        children = [int(v) for v in np.atleast_1d(synsets["num_children"])]
    except Exception as exc:  # noqa: BLE001 - any fault of a foreign MATLAB file is a data error
        raise DatasetError(f"{devkit}: {_DEVKIT_META} is not the devkit's synset table "
                           f"({type(exc).__name__}: {exc}).") from None
    by_id = {i: w for i, w, c in zip(ids, wnids, children, strict=True) if c == 0}
    try:
        ground_truth = [int(line) for line in truth_bytes.decode("ascii").split()]
    except (UnicodeDecodeError, ValueError):
        raise DatasetError(f"{devkit}: {_DEVKIT_TRUTH} must hold one integer id per "
                           "line.") from None
    unknown = sorted({g for g in ground_truth if g not in by_id})
    if unknown:
        raise DatasetError(f"{devkit}: the validation ground truth names ids that are not leaf "
                           f"synsets of meta.mat (first: {unknown[0]}).")
    return tuple(sorted(by_id.values())), by_id, ground_truth


def _member_span(member: tarfile.TarInfo, base: int, archive: Path) -> tuple[int, int]:
    """Where ``member``'s data lies in ``archive`` (``base`` + its offset) and its size."""
    if not member.isfile():
        raise DatasetError(f"{archive}: member {member.name!r} is not a regular file; refused.")
    if member.size <= 0 or member.size > MAX_IMAGE_BYTES:
        raise DatasetError(f"{archive}: member {member.name!r} has {member.size} bytes; an "
                           f"image must have 1 to {MAX_IMAGE_BYTES} bytes.")
    return base + member.offset_data, member.size


def _class_of(member: tarfile.TarInfo, position: dict[str, int], train_tar: Path) -> int:
    """The label of a member of the training archive: the tar of one of the 1000 synsets."""
    match = _CLASS_TAR.fullmatch(member.name)
    if match is None or match.group(1) not in position:
        raise DatasetError(f"{train_tar}: member {member.name!r} is not the tar of one of the "
                           "devkit's 1000 synsets (nXXXXXXXX.tar).")
    if not member.isfile():
        raise DatasetError(f"{train_tar}: member {member.name!r} is not a regular file; refused.")
    return position[match.group(1)]


def index_train(train_tar: Path, wnids: tuple[str, ...]) -> ArchiveIndex:
    """Index the training archive: each class tar's JPEGs, labelled by their class tar."""
    position = {w: i for i, w in enumerate(wnids)}
    offsets: list[int] = []
    sizes: list[int] = []
    labels: list[int] = []
    try:
        with _open_tar(train_tar) as outer:
            for member in outer:
                label = _class_of(member, position, train_tar)
                try:
                    with tarfile.open(fileobj=outer.extractfile(member), mode="r:") as inner:
                        for image in inner:
                            offset, size = _member_span(image, member.offset_data, train_tar)
                            offsets.append(offset)
                            sizes.append(size)
                            labels.append(label)
                except (tarfile.TarError, EOFError) as exc:
                    raise DatasetError(f"{train_tar}: class archive {member.name!r} is damaged "
                                       f"({exc}).") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{train_tar}: the archive is damaged or truncated ({exc}).") from None
    if not labels:
        raise DatasetError(f"{train_tar}: holds no images.")
    return ArchiveIndex(train_tar, np.asarray(offsets, np.int64), np.asarray(sizes, np.int64),
                        np.asarray(labels, np.int16), wnids)


def index_val(val_tar: Path, wnids: tuple[str, ...], by_id: dict[int, str],
              ground_truth: list[int]) -> ArchiveIndex:
    """Index the validation archive, in image-number order, labelled by the devkit."""
    position = {w: i for i, w in enumerate(wnids)}
    found: dict[int, tuple[int, int]] = {}
    try:
        with _open_tar(val_tar) as tar:
            for member in tar:
                match = _VAL_IMAGE.fullmatch(member.name)
                number = int(match.group(1)) if match else 0
                if not 1 <= number <= len(ground_truth) or number in found:
                    raise DatasetError(f"{val_tar}: member {member.name!r} is not one of the "
                                       f"{len(ground_truth)} validation images of the devkit "
                                       "(ILSVRC2012_val_NNNNNNNN.JPEG), or is repeated.")
                found[number] = _member_span(member, 0, val_tar)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{val_tar}: the archive is damaged or truncated ({exc}).") from None
    if len(found) != len(ground_truth):
        raise DatasetError(f"{val_tar}: holds {len(found)} images; the devkit's ground truth "
                           f"lists {len(ground_truth)}.")
    numbers = sorted(found)
    return ArchiveIndex(
        val_tar,
        np.asarray([found[n][0] for n in numbers], np.int64),
        np.asarray([found[n][1] for n in numbers], np.int64),
        np.asarray([position[by_id[ground_truth[n - 1]]] for n in numbers], np.int16),
        wnids,
    )


def archive_index(split: str, archive: Path, devkit: Path, *, md5s: tuple[str, ...]
                  ) -> ArchiveIndex:
    """The index of ``split`` (``"train"`` or ``"test"``), cached under a key made of the
    verified md5s of the archive and the devkit."""
    key = hashlib.sha256(repr((_INDEX_VERSION, split, md5s)).encode()).hexdigest()[:20]
    path = cache_root() / "arrays" / f"imagenet-{split}-index-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                return ArchiveIndex(archive, npz["offsets"], npz["sizes"], npz["labels"],
                                    tuple(str(w) for w in npz["wnids"]))
        except (OSError, ValueError, KeyError):
            pass
    wnids, by_id, truth = devkit_labels(devkit)
    index = (index_train(archive, wnids) if split == "train"
             else index_val(archive, wnids, by_id, truth))
    buf = io.BytesIO()
    np.savez(buf, offsets=index.offsets, sizes=index.sizes, labels=index.labels,
             wnids=np.asarray(index.wnids))
    try:
        atomic_write(path, buf.getvalue())
    except OSError:
        pass
    return index


def _decode(data: bytes, where: str):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DatasetError("decoding ImageNet JPEGs needs Pillow: pip install "
                           "'bnnrobust[imagenet]'.") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{where}: not a readable image ({exc}).") from None


def preprocess(image, *, size: int, train: bool, resize: int = 256) -> torch.Tensor:
    """Shorter side to ``resize`` (bilinear), then a ``size``² crop (random with a random
    horizontal flip when ``train``, else central); a 3×size×size float tensor in [0, 1]."""
    from PIL import Image

    width, height = image.size
    scale = resize / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new, Image.Resampling.BILINEAR)
    if train:
        left = int(torch.randint(0, new[0] - size + 1, ()).item())
        top = int(torch.randint(0, new[1] - size + 1, ()).item())
    else:
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    if train and torch.rand(()).item() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32).div_(255.0)


class ArchiveImages(Dataset):
    """A map-style dataset over an :class:`ArchiveIndex`: item ``i`` is ``(3×size×size image in
    [0, 1], label)``, read with one seek from the archive (each worker process opens its own
    handle). ``train``: random crop and flip (drawn from torch's RNG); else the centre crop.
    ``limit`` keeps the first ``limit`` images of a seeded shuffle (training: a class-balanced
    subset in expectation) or, for evaluation, the first ``limit`` images."""

    def __init__(self, index: ArchiveIndex, *, size: int, train: bool,
                 limit: int | None = None, seed: int = 0) -> None:
        self.index = index
        self.size = size
        self.train = train
        order = np.arange(len(index))
        if limit is not None and train:
            order = np.random.default_rng(seed).permutation(len(index))[:limit]
            order.sort()
        elif limit is not None:
            order = order[:limit]
        self.order = order
        self._handle: tuple[int, object] | None = None

    def __len__(self) -> int:
        return len(self.order)

    @property
    def labels(self) -> torch.Tensor:
        """Every label, in item order."""
        return torch.from_numpy(self.index.labels[self.order].astype(np.int64))

    def _file(self):
        pid = os.getpid()
        if self._handle is None or self._handle[0] != pid:
            try:
                self._handle = (pid, open(self.index.archive, "rb"))  # noqa: SIM115
            except OSError as exc:
                raise DatasetError(f"{self.index.archive}: cannot be opened ({exc}).") from None
        return self._handle[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.order[i])
        handle = self._file()
        handle.seek(int(self.index.offsets[j]))
        data = handle.read(int(self.index.sizes[j]))
        if len(data) != self.index.sizes[j]:
            raise DatasetError(f"{self.index.archive}: image {j} ends early; the archive is "
                               "truncated.")
        image = _decode(data, f"{self.index.archive}, image {j}")
        return preprocess(image, size=self.size, train=self.train), int(self.index.labels[j])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``start..stop-1`` stacked: ``(N×3×size×size, N labels)``."""
        if not 0 <= start <= stop <= len(self):
            raise DatasetError(f"images {start}..{stop} asked of a split of {len(self)}.")
        items = [self[i] for i in range(start, stop)]
        if not items:
            return torch.empty(0, 3, self.size, self.size), torch.empty(0, dtype=torch.long)
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
