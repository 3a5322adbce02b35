"""The model zoo: ``build(name, **params)``, ``available()``.

Families: ``galloway-cnn``, ``fc-bnn``, ``fcn``, ``alexnet-cifar``, ``alexnet-imagenet``,
``resnet20``, ``toy-mlp``,
``mlp`` (the black-box substitute).
"""

from bnnrobust.models import alexnet, fully_connected, galloway_cnn, mlp, resnet20, toy_mlp  # noqa: F401
from bnnrobust.models.base import (
    ModelEntry,
    Param,
    ZooModel,
    available,
    build,
    entry,
    resolve_params,
)

__all__ = ["ModelEntry", "Param", "ZooModel", "available", "build", "entry", "resolve_params"]
