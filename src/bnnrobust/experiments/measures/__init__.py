"""Measures: what a spec computes per unit of work, and how its report reads the units back.

One file per measure; :func:`measure_named` returns the instance registered under a name.
"""

from __future__ import annotations

import importlib

from bnnrobust.experiments.measures.base import (
    Cell,
    Figure,
    Measure,
    MeasureError,
    Outcome,
    Table,
    Task,
    execute,
)

#: measure name -> "module:class" (imported on first use)
MEASURES = {
    "accuracy": "bnnrobust.experiments.measures.accuracy:AccuracyMeasure",
    "cw_curve": "bnnrobust.experiments.measures.cw_curve:CWCurveMeasure",
    "blackbox": "bnnrobust.experiments.measures.blackbox:BlackBoxMeasure",
    "exact": "bnnrobust.experiments.measures.exact:ExactMeasure",
    "toy_surface": "bnnrobust.experiments.measures.toy_surface:ToySurfaceMeasure",
    "logit_sweep": "bnnrobust.experiments.measures.logit_sweep:LogitSweepMeasure",
    "activation_norm": "bnnrobust.experiments.measures.activation_norm:ActivationNormMeasure",
}
_INSTANCES: dict[str, Measure] = {}


def measure_named(name: str, *, where: str = "measure") -> Measure:
    """The measure registered as ``name``, or an error listing the valid names."""
    if name not in MEASURES:
        raise MeasureError(f"{where} = {name!r} is unknown; valid measures: "
                           f"{', '.join(MEASURES)}.")
    if name not in _INSTANCES:
        module, cls = MEASURES[name].split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
    return _INSTANCES[name]


__all__ = ["MEASURES", "Cell", "Figure", "Measure", "MeasureError", "Outcome", "Table", "Task",
           "execute", "measure_named"]
