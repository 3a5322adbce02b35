"""bnnrobust: how robust are binarized and low-precision neural networks, really?

Layers (lowest first): ``data`` -> ``nn`` -> ``models`` -> ``train`` -> (attacks, evaluate,
experiments, report) -> ``cli``. See DESIGN.md in the shared folder for the contracts.
"""

from bnnrobust.errors import BnnRobustError

__version__ = "0.1.0"
__all__ = ["BnnRobustError", "__version__"]
