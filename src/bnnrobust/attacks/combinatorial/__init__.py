"""Exact and combinatorial attacks on fully connected BNNs (Khalil et al. 2019)."""

from bnnrobust.attacks.combinatorial.export import ExportError, IntegerBNN, IntegerLayer, export

__all__ = ["ExportError", "IntegerBNN", "IntegerLayer", "export"]
