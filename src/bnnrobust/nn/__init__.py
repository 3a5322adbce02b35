"""Binarized building blocks: STE sign, stochastic binarization, binary layers, summary."""

from bnnrobust.nn.binarize import STE_RULES, hard_sigmoid, sign_ste, stochastic_binarize
from bnnrobust.nn.layers import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    LearnedScale,
    Normalize,
    Sign,
    approximate_activations,
    batch_norm,
    binary_layers,
    center_xnor_weights,
    clip_latent_weights,
    is_stochastic,
    seed_stochastic,
    seeded,
)
from bnnrobust.nn.summary import LayerRow, Summary, summary

__all__ = [
    "STE_RULES",
    "BinaryActivation",
    "BinaryConv2d",
    "BinaryLinear",
    "LayerRow",
    "LearnedScale",
    "Normalize",
    "Sign",
    "Summary",
    "approximate_activations",
    "batch_norm",
    "binary_layers",
    "center_xnor_weights",
    "clip_latent_weights",
    "hard_sigmoid",
    "is_stochastic",
    "seed_stochastic",
    "seeded",
    "sign_ste",
    "stochastic_binarize",
    "summary",
]
