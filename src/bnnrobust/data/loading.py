"""``load(name, split)``: find, verify (md5), fetch if missing, decode and cache a dataset.

Root lookup: the ``root=`` argument, else ``$BNNROBUST_DATA``, else ``~/.cache/bnnrobust/data``.
A dataset lives in ``<root>/<name>/`` under its original file names. Verified files and decoded
arrays are cached (``$BNNROBUST_CACHE``, default ``~/.cache/bnnrobust``) so that a second
``load`` is fast, and within one process the decoded arrays are kept in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bnnrobust.data.download import VerifiedFiles, fetch, md5sum
from bnnrobust.data.imagenet import ArchiveImages, archive_index
from bnnrobust.data.readers import read_cifar_binary, read_cifar_pickle, read_idx
from bnnrobust.data.registry import REGISTRY, SPLITS, STREAMED, DatasetSpec, FileSpec
from bnnrobust.data.synthetic import GENERATED
from bnnrobust.errors import DatasetError
from bnnrobust.files import atomic_write, cache_root

_DECODER_VERSION = "1"
_MEMORY: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def data_root(root: str | Path | None = None) -> Path:
    """The datasets folder: ``root``, else ``$BNNROBUST_DATA``, else ``~/.cache/bnnrobust/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("BNNROBUST_DATA")
    return Path(env).expanduser() if env else cache_root() / "data"


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``, or an error listing the known datasets."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(REGISTRY))}."
        ) from None


def _missing_error(spec: DatasetSpec, folder: Path, missing: list[FileSpec], why: str, *,
                   explicit: bool = False) -> DatasetError:
    lines = [f"dataset {spec.name!r} is not available: {why}", f"Missing file(s) in {folder}:"]
    lines += [f"  {f.name}  (md5 {f.md5})" for f in missing]
    where = (f"or give as the data root (--root / root=) a folder that holds '{spec.name}/' with "
             "them." if explicit else
             f"or set BNNROBUST_DATA to a folder that holds '{spec.name}/' with them (e.g. "
             "export BNNROBUST_DATA=/path/to/data).")
    lines += [f"Put the original files there (from {spec.homepage or 'the official mirrors'}), "
              + where]
    return DatasetError("\n".join(lines))


def _missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    out = []
    while not folder.exists():
        out.append(folder)
        folder = folder.parent
    return out


def _verify_or_fail(spec: DatasetSpec, path: Path, fspec: FileSpec, verified: VerifiedFiles) -> None:
    if not verified.check(path, fspec.md5):
        raise DatasetError(
            f"dataset {spec.name!r}: {path} does not match its published md5 {fspec.md5}; it is "
            "corrupt or a different file and will not be used. Delete it and fetch it again "
            "(bnnrobust downloads missing files when online)."
        )


def _ensure(spec: DatasetSpec, folder: Path, files: tuple[FileSpec, ...], *, download: bool,
            verified: VerifiedFiles, explicit: bool = False) -> list[Path]:
    """Make sure ``files`` are in ``folder`` and verified; download missing ones if allowed (a
    folder created for a download that fails is removed again)."""
    missing = [f for f in files if not (folder / f.name).exists()]
    if missing and not spec.mirrors:
        raise _missing_error(spec, folder, missing, "the files are not present (they cannot be "
                                                    "downloaded automatically).", explicit=explicit)
    if missing and not download:
        raise _missing_error(spec, folder, missing, "download=False and the files are not present.",
                             explicit=explicit)
    created = _missing_dirs(folder)
    failures: list[str] = []
    for fspec in missing:
        failures += fetch(fspec, folder / fspec.name, spec.mirrors)
    still = [f for f in files if not (folder / f.name).exists()]
    if still:
        for made in created:  # a failed load leaves no new folders behind
            if made.is_dir() and not any(made.iterdir()):
                made.rmdir()
        reason = "the download failed:\n    " + "\n    ".join(failures) if failures else "not found."
        raise _missing_error(spec, folder, still, reason, explicit=explicit)
    for fspec in files:
        _verify_or_fail(spec, folder / fspec.name, fspec, verified)
    return [folder / f.name for f in files]


def _extract(archive: Path, into: Path, members: list[str]) -> None:
    """Extract only the named members of a tar archive, refusing links and odd paths."""
    with tarfile.open(archive, "r:*") as tar:
        for name in members:
            try:
                member = tar.getmember(name)
            except KeyError:
                raise DatasetError(f"{archive}: has no member {name!r}; not the expected archive.") from None
            if not member.isfile():
                raise DatasetError(f"{archive}: member {name!r} is not a regular file; refused.")
            data = tar.extractfile(member).read()
            atomic_write(into / name, data)


def _cifar_sources(spec: DatasetSpec, folder: Path, split: str, *, download: bool,
                   verified: VerifiedFiles, explicit: bool) -> tuple[str, list[Path]]:
    """Locate a CIFAR split: python batches, else the binary tarball (md5-checked), else loose
    binary batches (size-checked), else the python archive (fetched)."""
    files = spec.splits[split]
    py_dir = folder / spec.archive_folder
    if all((py_dir / f.name).exists() for f in files):
        for f in files:
            _verify_or_fail(spec, py_dir / f.name, f, verified)
        return "pickle", [py_dir / f.name for f in files]
    if spec.binary_archive is not None and (folder / spec.binary_archive.name).exists():
        tarball = folder / spec.binary_archive.name
        _verify_or_fail(spec, tarball, spec.binary_archive, verified)
        return "binary-archive", [tarball]
    if spec.binary_folder:
        bin_dir = folder / spec.binary_folder
        paths = []
        for f in files:
            for candidate in (bin_dir / f"{f.name}.bin", bin_dir / f"{f.name}.bin.gz"):
                if candidate.exists():
                    paths.append(candidate)
                    break
        if len(paths) == len(files):
            return "binary", paths
    archive = _ensure(spec, folder, (spec.archive,), download=download, verified=verified,
                      explicit=explicit)[0]
    _extract(archive, folder, [f"{spec.archive_folder}/{f.name}" for f in spec.files()])
    for f in files:
        _verify_or_fail(spec, py_dir / f.name, f, verified)
    return "pickle", [py_dir / f.name for f in files]


def _binary_members(spec: DatasetSpec, tarball: Path, split: str
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's batches read straight from the (verified) binary tarball."""
    parts = []
    with tarfile.open(tarball, "r:gz") as tar:
        for f in spec.splits[split]:
            name = f"{spec.binary_folder}/{f.name}.bin"
            try:
                member = tar.getmember(name)
            except KeyError:
                raise DatasetError(f"{tarball}: has no member {name!r}; not the CIFAR-10 binary "
                                   "tarball.") from None
            if not member.isfile():
                raise DatasetError(f"{tarball}: member {name!r} is not a regular file; refused.")
            parts.append(read_cifar_binary(tarball / name, records=spec.binary_records,
                                           stream=tar.extractfile(member)))
    return parts


def _decode(spec: DatasetSpec, kind: str, paths: list[Path], split: str
            ) -> tuple[np.ndarray, np.ndarray]:
    if kind == "idx":
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{paths[0]} / {paths[1]}: expected N×H×W images and N labels, found "
                f"{images.shape} and {labels.shape}."
            )
        return images[:, None, :, :].astype(np.uint8), labels.astype(np.int64)
    if kind == "binary-archive":
        parts = _binary_members(spec, paths[0], split)
    else:
        parts = [
            read_cifar_pickle(p, label_key=spec.label_key) if kind == "pickle"
            else read_cifar_binary(p, records=spec.binary_records)
            for p in paths
        ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _decoded_cache(spec: DatasetSpec, split: str, kind: str,
                   paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    key = hashlib.sha256(
        repr((_DECODER_VERSION, kind, split,
              [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths])).encode()
    ).hexdigest()[:20]
    if key in _MEMORY:
        return _MEMORY[key]
    cache = cache_root() / "arrays" / f"{spec.name}-{split}-{key}.npz"
    arrays = None
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as npz:
                arrays = (npz["x"], npz["y"])
        except (OSError, ValueError, KeyError):
            arrays = None
    if arrays is None:
        arrays = _decode(spec, kind, paths, split)
        if kind == "binary":  # size-checked only (no published md5): never cached on disk
            _MEMORY[key] = arrays
            return arrays
        try:
            buf = io.BytesIO()
            np.savez(buf, x=arrays[0], y=arrays[1])
            atomic_write(cache, buf.getvalue())
        except OSError:
            pass
    _MEMORY[key] = arrays
    return arrays


def load_arrays(name: str, split: str = "train", *, root: str | Path | None = None,
                download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The raw dataset: ``(uint8 images N×C×H×W, int64 labels N)``. See :func:`load`."""
    spec = get_spec(name)
    _check_split(name, split)
    if name in STREAMED:
        raise DatasetError(f"dataset {name!r} is too large to load as arrays; it is read as a "
                           "stream of images: use bnnrobust.data.images(...).")
    folder = data_root(root) / spec.name
    verified = VerifiedFiles(cache_root())
    explicit = root is not None
    if spec.format == "idx":
        kind, paths = "idx", _ensure(spec, folder, spec.splits[split], download=download,
                                     verified=verified, explicit=explicit)
    else:
        kind, paths = _cifar_sources(spec, folder, split, download=download, verified=verified,
                                     explicit=explicit)
    return _decoded_cache(spec, split, kind, paths)


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for {name!r}; expected 'train' or 'test'.")


def images(name: str, split: str = "train", *, size: int, train: bool,
           root: str | Path | None = None, limit: int | None = None,
           seed: int = 0) -> ArchiveImages:
    """A streamed split (ImageNet) as a map-style dataset of ``(3×size×size image in [0, 1],
    label)``: the md5-checked original archives, indexed once (see
    :mod:`bnnrobust.data.imagenet`). ``train``: random crops and flips (training), else centre
    crops (evaluation). ``limit``: a seeded random subset for training, the first images for
    evaluation. Nothing is downloaded (ImageNet needs a login)."""
    spec = get_spec(name)
    _check_split(name, split)
    if name not in STREAMED:
        raise DatasetError(f"dataset {name!r} is loaded as arrays: use bnnrobust.data.load(...).")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}.")
    files = spec.splits[split]
    verified = VerifiedFiles(cache_root())
    archive, devkit = _ensure(spec, data_root(root) / spec.name, files, download=False,
                              verified=verified, explicit=root is not None)
    index = archive_index(split, archive, devkit, md5s=tuple(f.md5 for f in files))
    return ArchiveImages(index, size=size, train=train, limit=limit, seed=seed)


def load(name: str, split: str = "train", *, root: str | Path | None = None,
         download: bool = True, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as ``(x, y)``: x float32 in [0, 1], N×C×H×W; y int64.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"``, or a generated
            dataset of :data:`~bnnrobust.data.synthetic.GENERATED` (``"and"``).
        split: ``"train"`` or ``"test"``.
        root: datasets folder (default ``$BNNROBUST_DATA`` or ``~/.cache/bnnrobust/data``).
        download: fetch missing files from the official mirrors (md5-checked, atomic).
        limit: keep only the first ``limit`` examples (deterministic).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}.")
    if name in GENERATED:
        _check_split(name, split)
        x, y = GENERATED[name]()
        return (x, y) if limit is None else (x[:limit], y[:limit])
    images, labels = load_arrays(name, split, root=root, download=download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(labels.copy())


_IDENTITY: dict[tuple, tuple[str, ...]] = {}


def identity(name: str, split: str = "train", *, root: str | Path | None = None
             ) -> tuple[str, ...]:
    """What identifies the data a split is read from, for cache keys: the md5s of its files.

    Files checked against published md5s before use are identified by those md5s (nothing is
    read); CIFAR-10's binary batches, which have none, by the md5 of their real content (read
    once per file version); a generated dataset by its name.
    """
    if name in GENERATED:
        return (f"generated:{name}",)
    spec = get_spec(name)
    _check_split(name, split)
    files = spec.splits[split]
    if spec.format == "cifar" and spec.binary_folder:
        folder = data_root(root) / spec.name
        tarball = spec.binary_archive
        pickles = all((folder / spec.archive_folder / f.name).exists() for f in files)
        if not pickles and tarball is not None and (folder / tarball.name).exists():
            return (f"{tarball.name}:{tarball.md5}", split)
        if not pickles:
            binary = [folder / spec.binary_folder / f"{f.name}{ext}" for f in files
                      for ext in (".bin", ".bin.gz")]
            present = [p for p in binary if p.exists()]
            if len(present) == len(files):
                key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in present)
                if key not in _IDENTITY:
                    _IDENTITY[key] = tuple(f"{p.name}:{md5sum(p)}" for p in present)
                return _IDENTITY[key]
    return tuple(f"{f.name}:{f.md5}" for f in files)


@dataclass(frozen=True)
class DatasetStatus:
    """What ``bnnrobust datasets`` shows for one dataset."""

    name: str
    folder: Path
    state: str  # "verified", "present" (not all verified), "missing", "corrupt"
    detail: str


def status(name: str, *, root: str | Path | None = None, verify: bool = True) -> DatasetStatus:
    """Whether a dataset's files are present and (with ``verify``) match their md5."""
    spec = get_spec(name)
    folder = data_root(root) / spec.name
    candidates = [folder / f.name for f in spec.files() if spec.format in ("idx", "ilsvrc")]
    if spec.format == "cifar":
        py = [folder / spec.archive_folder / f.name for f in spec.files()]
        candidates = py if all(p.exists() for p in py) else [folder / spec.archive.name]
        if spec.binary_folder and not all(p.exists() for p in candidates):
            bin_dir = folder / spec.binary_folder
            if bin_dir.is_dir() and any(bin_dir.glob("*.bin*")):
                return DatasetStatus(name, folder, "present", "binary batches (size-checked on load)")
    missing = [p.name for p in candidates if not p.exists()]
    if missing:
        return DatasetStatus(name, folder, "missing", "missing: " + ", ".join(missing))
    if not verify:
        return DatasetStatus(name, folder, "present", f"{len(candidates)} file(s)")
    verified = VerifiedFiles(cache_root())
    md5s = {f.name: f.md5 for f in spec.files()}
    if spec.archive is not None:
        md5s[spec.archive.name] = spec.archive.md5
    bad = [p.name for p in candidates if not verified.check(p, md5s[p.name])]
    if bad:
        return DatasetStatus(name, folder, "corrupt", "md5 mismatch: " + ", ".join(bad))
    return DatasetStatus(name, folder, "verified", f"{len(candidates)} file(s), md5 ok")
