"""Measures: what a spec computes per unit of work, and how its report reads the units back.

One file per measure; :func:`measure_named` returns the instance registered under a name.
"""

from bnnrobust.experiments.measures.base import (
    Cell,
    Computed,
    Measure,
    MeasureError,
    Options,
    Table,
    Task,
)
from bnnrobust.experiments.measures.registry import MEASURES, execute, measure_named

__all__ = ["MEASURES", "Cell", "Computed", "Measure", "MeasureError", "Options", "Table",
           "Task", "execute", "measure_named"]
