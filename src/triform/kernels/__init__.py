"""How matrix products, attention, dropout and the loss run on this device.

`nn/` holds the textbook parts, on plain torch. The kernels here compute the same functions faster
on a CPU; `models/build.py` hands them to the parts (`linear=Linear`, `attend=attend`,
`dropout=Dropout`), as torchtune hands in `q_proj=`, and the objectives' loss is `cross_entropy`.
tests/test_kernels.py checks each kernel against the textbook path it replaces.

- `linear`: each product (forward, and both of the backward pass) by the kernel measured fastest
  for its shape class on this machine: torch's (MKL, oneDNN's matmul), oneDNN's inner product,
  packed weights without autograd, fp32 for a few rows under bf16 autocast, and triform's own
  matrix-vector kernel for a few rows (`native`, built by this machine's C compiler) (`calibrate`).
- `attention`: torch's fused kernel, two products around a softmax, one query in fp32, or triform's
  own (one query; many in fp32, or bf16 by AVX512-BF16 pair products, forward and backward), measured.
- `fused_step`: a decoding step of a block as one native call (norm, product, activation and
  residual fused; the KV cache written and attended), where measured faster than the block's modules;
  a stack's whole step in one call (`stack_step`: embeddings, blocks, final norm) where each of
  its blocks would take that step.
- `calibrate`: the measurement, the table of choices, and its cache file; `machine`: what it is keyed by.
- `activation`: a feed-forward's activation by torch or triform's own kernel, measured.
- `dropout`: keep masks drawn from random integers rather than floats.
- `loss`: cross-entropy with its gradient computed in the same pass: in blocks of rows, or by
  triform's one-pass kernel, measured.
- `int8`: `quantize(model, "int8")`, int8 weights per output channel for CPU inference.
- `host_memory`: freed host memory kept in the process for the next step while a CPU training runs.
"""

from triform.kernels.activation import ACTIVATIONS
from triform.kernels.attention import attend
from triform.kernels.dropout import Dropout
from triform.kernels.fused_step import block_step, stack_step
from triform.kernels.int8 import quantize
from triform.kernels.linear import Linear
from triform.kernels.loss import cross_entropy

__all__ = ["ACTIVATIONS", "Dropout", "Linear", "attend", "block_step", "cross_entropy", "quantize", "stack_step"]
