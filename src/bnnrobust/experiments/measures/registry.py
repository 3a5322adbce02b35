"""The measures by name: :func:`measure_named` returns the instance registered under a name
(its module imported on first use), :func:`execute` computes one task in any process."""

from __future__ import annotations

import importlib
import json
import time

from bnnrobust.experiments.measures.base import (
    Computed,
    Measure,
    MeasureError,
    Task,
    model_for,
    test_points,
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
    "input_sweep": "bnnrobust.experiments.measures.input_sweep:InputSweepMeasure",
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


def execute(task: Task) -> Computed:
    """Compute one task (in any process): its model from the cache, its test points."""
    measure = measure_named(task.measure)
    start = time.perf_counter()
    model = None
    if task.model is not None:
        model = model_for(json.dumps(task.model, sort_keys=True), task.device, task.data_root,
                           task.cache_dir)
    x, y = test_points(task, model)
    value = measure.compute(task, model, x, y)
    return Computed(value, time.perf_counter() - start, task.device)


