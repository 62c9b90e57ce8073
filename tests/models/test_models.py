"""models/: what every model promises: (B, 10) logits, and a gradient for every parameter."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_lab.models import LeNet, LeNetRes, ResBlockMLP

ALL_MODELS = [LeNet, LeNetRes, ResBlockMLP]


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_models_return_logits_not_probabilities(model_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = model_class()
    x = torch.randn(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    # The last layer's bias passes straight to the output: raised by 50 for class 3, the logit rises by
    # exactly 50. A softmax inside forward (the seeds' double softmax) would keep every output in [0, 1].
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    before = model.eval()(x)
    with torch.no_grad():
        last.bias[3] += 50.0
    after = model(x)
    assert torch.allclose(after[:, 3] - before[:, 3], torch.full((5,), 50.0), atol=1e-3)
    assert torch.equal(after[:, :3], before[:, :3])


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_every_parameter_gets_a_gradient(model_class: type[nn.Module]) -> None:
    # Catches declared-but-unused layers, such as a LeNetRes whose batch norm and fc[2] are never called.
    torch.manual_seed(0)
    model = model_class()
    F.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.arange(8)).backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []
