"""A model summary in the manner of Larq's: binary vs float parameters and memory in bits.

Binary layers' weights count as 1 bit each; every other parameter as 32 bits. Buffers (batch
norm running statistics) are reported apart, as they are not trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from bnnrobust.nn.layers import _BinaryLayer


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary: a module that owns parameters directly."""

    name: str
    kind: str
    binary_params: int
    float_params: int

    @property
    def memory_bits(self) -> int:
        """Memory of this layer's parameters: 1 bit per binary, 32 bits per float parameter."""
        return self.binary_params + 32 * self.float_params


@dataclass(frozen=True)
class Summary:
    """Per-layer rows and totals; ``str(summary)`` is a plain-text table."""

    rows: list[LayerRow] = field(default_factory=list)
    buffer_values: int = 0

    @property
    def binary_params(self) -> int:
        """Number of ±1 weights."""
        return sum(r.binary_params for r in self.rows)

    @property
    def float_params(self) -> int:
        """Number of real-valued trainable parameters."""
        return sum(r.float_params for r in self.rows)

    @property
    def memory_bits(self) -> int:
        """Parameter memory in bits for inference (binary weights packed)."""
        return sum(r.memory_bits for r in self.rows)

    @property
    def float32_memory_bits(self) -> int:
        """Parameter memory if every parameter were float32 (the full-precision equivalent)."""
        return 32 * (self.binary_params + self.float_params)

    def __str__(self) -> str:
        header = f"{'layer':<28}{'type':<18}{'binary':>12}{'float':>12}{'memory (KiB)':>14}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r.name:<28}{r.kind:<18}{r.binary_params:>12,}{r.float_params:>12,}"
                         f"{r.memory_bits / 8192:>14.2f}")
        lines.append("-" * len(header))
        lines.append(f"{'total':<46}{self.binary_params:>12,}{self.float_params:>12,}"
                     f"{self.memory_bits / 8192:>14.2f}")
        ratio = self.float32_memory_bits / max(self.memory_bits, 1)
        lines.append(f"float32 equivalent: {self.float32_memory_bits / 8192:.2f} KiB "
                     f"(compression {ratio:.1f}x); non-trained buffer values: {self.buffer_values:,}")
        return "\n".join(lines)


def summary(model: nn.Module) -> Summary:
    """Count binary and float parameters of ``model`` layer by layer."""
    rows = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        binary = own["weight"].numel() if isinstance(module, _BinaryLayer) else 0
        floats = sum(p.numel() for p in own.values()) - binary
        rows.append(LayerRow(name or "(model)", type(module).__name__, binary, floats))
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return Summary(rows=rows, buffer_values=buffers)
