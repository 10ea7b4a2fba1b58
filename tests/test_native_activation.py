"""The measured activations (kernels/activation.py) compute what the textbook functions compute, forward
and backward, by whichever kernel calibration chose."""

import copy
import math
import pickle

import pytest
import torch
from conftest import random_ids, tiny_config
from test_native import built

from triform.kernels import activation
from triform.kernels.calibrate import Calibration, set_calibration
from triform.kernels.fused_step import ACTIVATION_CODES
from triform.models import build_model
from triform.nn import feedforward


@pytest.fixture(params=["torch", "native"])
def kernel(request):
    if request.param == "native":
        built()
    calibration = Calibration(timer=lambda name, run: 0.0 if name == request.param else 1.0, read_disk=False)
    old = set_calibration(calibration)
    yield calibration, request.param
    set_calibration(old)


@pytest.mark.parametrize("layout", ["contiguous", "gate"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(feedforward.ACTIVATIONS))
def test_each_kernel_computes_the_textbook_activation_forward_and_backward(kernel, kind, dtype, layout):
    calibration, name = kernel
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3, 37, 2 * 70, generator=generator) * 4  # rows long and short of a vector's lanes
    values[0, 0, :8] = torch.tensor([0.0, -0.0, 1e-8, -1e-8, 9.0, -9.0, 30.0, -30.0])  # the tails and 0
    x = (values if layout == "gate" else values[..., :70].contiguous()).to(dtype).requires_grad_()
    part = x.split(70, dim=-1)[0] if layout == "gate" else x  # a gated network's gate: rows of stride 140
    grad = torch.randn(part.shape, generator=generator).to(dtype)
    ours = activation.ACTIVATIONS[kind](part)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    plain = x.detach().clone().requires_grad_()
    expected = feedforward.ACTIVATIONS[kind](plain.split(70, dim=-1)[0] if layout == "gate" else plain)
    (expected_grad,) = torch.autograd.grad(expected, plain, grad)
    assert ours.dtype == dtype and ours.shape == part.shape
    # fp32: where tanh rounds to -1 torch gives 0 and this the tiny value itself (3e-6 at most here)
    tolerance = dict(rtol=2e-6, atol=1e-5) if dtype == torch.float32 else dict(rtol=2**-7, atol=2**-7)
    torch.testing.assert_close(ours.float(), expected.float(), **tolerance)
    torch.testing.assert_close(ours_grad.float(), expected_grad.float(), **tolerance)
    assert [choice.kernel for _, choice in calibration.table()] == [name]


def test_values_it_cannot_take_as_rows_go_to_torch(kernel):
    calibration, _ = kernel
    x = torch.randn(6, 5).t()  # its last dimension is not contiguous
    torch.testing.assert_close(activation.ACTIVATIONS["gelu"](x), feedforward.ACTIVATIONS["gelu"](x))
    assert calibration.table() == []  # nothing chosen: torch's function ran as it is


def test_a_built_model_uses_them_and_its_decoding_step_still_fuses():
    model = build_model(tiny_config(activation="gelu_tanh"))
    feedforwards = [m for m in model.modules() if isinstance(m, feedforward.FeedForward)]
    assert feedforwards and all(m.activation is activation.ACTIVATIONS["gelu_tanh"] for m in feedforwards)
    assert all(id(m.activation) in ACTIVATION_CODES for m in feedforwards)  # the fused step knows the kind
    twin = copy.deepcopy(model)  # the bf16 twin, a quantized copy: the same activation, still known
    assert all(m.activation is activation.ACTIVATIONS["gelu_tanh"] for m in twin.modules() if hasattr(m, "up"))
    assert pickle.loads(pickle.dumps(feedforwards[0].activation)) is feedforwards[0].activation


def test_a_training_step_with_the_native_activation_matches_torch_s():
    built()
    ids = random_ids(2, 24)
    results = []
    for name in ("native", "torch"):
        old = set_calibration(Calibration(timer=lambda n, run, k=name: 0.0 if n == k else 1.0, read_disk=False))
        try:
            torch.manual_seed(0)
            model = build_model(tiny_config(activation="gelu"))
            logits = model(ids)
            results.append((logits.detach(), torch.autograd.grad(logits.square().mean(), list(model.parameters()))))
        finally:
            set_calibration(old)
    (logits, grads), (expected, expected_grads) = results
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_native_erf_gelu_is_within_5e_7_of_the_exact_function_forward_and_backward():
    """Abramowitz & Stegun's erfc (1.5e-7 of erf) in the tail-safe form: torch's own fp32 GELU is
    within 1.2e-6 on the same values."""
    built()
    x = torch.linspace(-10, 10, 200_001).double()  # fp32 values: the exact function of the inputs it gets
    exact = x * 0.5 * torch.erfc(-x / math.sqrt(2))
    slope = 0.5 * torch.erfc(-x / math.sqrt(2)) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    ours = x.float().requires_grad_()
    y = activation.natively("gelu", ours)
    (gradient,) = torch.autograd.grad(y, ours, torch.ones_like(y))
    # and an fp32 rounding of the result (half of 2⁻²³ of it: 6e-7 at 10)
    torch.testing.assert_close(y.detach().double(), exact, rtol=2**-24, atol=5e-7)
    torch.testing.assert_close(gradient.double(), slope, rtol=2**-24, atol=5e-7)
