"""`evaluation(model)`: every module evaluates for the duration, and each mode is back after it."""

import pytest
from torch import nn

from triform.models.modes import evaluation


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2)))


@pytest.mark.parametrize("training", [True, False])
def test_every_module_evaluates_inside_and_the_model_s_mode_is_back_after(training):
    net = model().train(training)
    net[1][0].train()  # a module left training inside a model that evaluates: dropout would still run
    with evaluation(net):
        assert not any(module.training for module in net.modules())
    assert net.training is training and net[1][0].training


def test_a_model_already_evaluating_is_left_as_it_is_even_on_an_error():
    net = model().eval()
    with pytest.raises(RuntimeError, match="inside"), evaluation(net):
        raise RuntimeError("inside")
    assert not any(module.training for module in net.modules())
    net.train()
    with pytest.raises(RuntimeError, match="inside"), evaluation(net):
        raise RuntimeError("inside")
    assert all(module.training for module in net.modules())
