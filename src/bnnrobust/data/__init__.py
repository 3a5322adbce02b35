"""Datasets (registry, readers, download with checksums, root lookup) and input discretization."""

from bnnrobust.data.imagenet import ArchiveImages
from bnnrobust.data.loading import (
    DatasetStatus,
    data_root,
    get_spec,
    identity,
    images,
    load,
    load_arrays,
    status,
)
from bnnrobust.data.quantize import InputQuantizer, discretize_like, input_quantizers
from bnnrobust.data.readers import read_cifar_binary, read_cifar_pickle, read_idx
from bnnrobust.data.registry import REGISTRY, STREAMED, DatasetSpec, FileSpec
from bnnrobust.data.synthetic import GENERATED

__all__ = [
    "GENERATED",
    "REGISTRY",
    "STREAMED",
    "ArchiveImages",
    "DatasetSpec",
    "DatasetStatus",
    "FileSpec",
    "InputQuantizer",
    "discretize_like",
    "input_quantizers",
    "data_root",
    "get_spec",
    "identity",
    "images",
    "load",
    "load_arrays",
    "read_cifar_binary",
    "read_cifar_pickle",
    "read_idx",
    "status",
]
