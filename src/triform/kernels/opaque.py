"""The layers that a compiled graph's opaque product operators find by the storage of their tensors.

Inside torch.compile a layer's product is one custom operator (kernels/linear.py's
`triform::linear_inference`, kernels/int8.py's `triform::int8_linear`), so that the product stays
this machine's kernel while inductor fuses the work around it. An operator takes tensors, not
modules, and an index baked into the graph would make every other model of the same shape compile
again; so the operator finds its layer by the data pointers of the tensors it is handed. Entries are
weak (a layer freed is forgotten), and a layer whose weight was replaced since it was registered is
not found: the operator then computes the plain product from the tensors alone.
"""

from __future__ import annotations

import weakref

from torch import Tensor, nn


class LayersByStorage:
    def __init__(self):
        self._layers: dict[tuple[int, ...], weakref.ref] = {}

    def add(self, layer: nn.Module, *tensors: Tensor | None) -> None:
        """Register `layer` under its `tensors` (its weight first; None for an absent bias)."""
        for key in [key for key, found in self._layers.items() if found() is None]:
            del self._layers[key]
        self._layers[_key(tensors)] = weakref.ref(layer)

    def find(self, *tensors: Tensor | None) -> nn.Module | None:
        """The layer registered under `tensors` whose weight is still the first of them, or None."""
        found = self._layers.get(_key(tensors))
        layer = found() if found is not None else None
        if layer is None or layer.weight.data_ptr() != tensors[0].data_ptr():
            return None
        return layer


def _key(tensors: tuple[Tensor | None, ...]) -> tuple[int, ...]:
    return tuple(0 if tensor is None else tensor.data_ptr() for tensor in tensors)
