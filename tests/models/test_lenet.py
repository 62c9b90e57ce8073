"""models/lenet.py: LeNet-5 layer by layer against the paper's table, and LeNetRes with the two bugs of its usual version fixed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_lab.models import LeNet, LeNetRes
from mnist_lab.models.blocks import conv_whole_input


def test_lenet_matches_seed_table_layer_by_layer() -> None:
    model = LeNet()
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert [p.numel() for p in model.conv.parameters()] == [150, 6, 2400, 16, 48000, 120]
    assert [sum(p.numel() for p in layer.parameters()) for layer in model.fc] == [10_164, 850]
    assert list(model.pool.parameters()) == list(model.activation.parameters()) == []

    outputs: list[torch.Tensor] = []
    for module in (model.conv[0], model.pool, model.conv[1], model.fc[0], model.fc[1]):
        module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    c5_inputs: list[torch.Tensor] = []
    model.fc[0].register_forward_pre_hook(lambda _m, args: c5_inputs.append(args[0]))
    model(torch.zeros(2, 1, 28, 28))
    shapes = [tuple(out.shape[1:]) for out in outputs]
    # C1, S2, C3, S4 (the pool runs twice), F6, output
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (84,), (10,)]
    s4 = outputs[3]
    assert model.conv[2](s4).shape == (2, 120, 1, 1)  # C5 as the table has it
    assert c5_inputs[0].shape == (2, 120)  # and what F6 receives from it


class SeedLeNet(nn.Module):
    """LeNet as notebooks usually write it (its forward is not used here, only its layout)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            [
                nn.Conv2d(in_channels, 6, kernel_size=5, stride=1),
                nn.Conv2d(6, 16, kernel_size=5, stride=1),
                nn.Conv2d(16, 120, kernel_size=5, stride=1),
            ]
        )
        self.pool = nn.AvgPool2d(2)
        self.activation = nn.Tanh()
        self.fc = nn.ModuleList([nn.Linear(120, 84), nn.Linear(84, 10)])


def test_lenet_keeps_the_seed_state_dict_layout() -> None:
    seed_state = SeedLeNet().state_dict()
    ours = LeNet()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in seed_state.items()}
    ours.load_state_dict(seed_state)  # strict: same keys, same shapes
    # On a 28x28 digit our C1 pads to the paper's 32x32, the input size the paper's table assumes.
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(ours.conv[0](x), seed_conv_on_padded(ours.conv[0], x), atol=1e-6)


def seed_conv_on_padded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2)), conv.weight, conv.bias)


def test_lenet_res_applies_its_batch_norm_layers() -> None:
    torch.manual_seed(0)
    model = LeNetRes()
    before = [bn.running_mean.clone() for bn in model.bn]
    model.train()
    model(torch.randn(16, 1, 28, 28) * 3 + 1)
    assert all(not torch.equal(b, bn.running_mean) for b, bn in zip(before, model.bn, strict=True))
    assert [bn.num_batches_tracked.item() for bn in model.bn] == [1, 1]


def test_lenet_res_ends_with_the_84_to_10_layer() -> None:
    model = LeNetRes()
    assert [(layer.in_features, layer.out_features) for layer in model.fc] == [
        (120, 120),
        (120, 84),
        (84, 10),
    ]
    captured = []
    model.fc[2].register_forward_hook(lambda _m, _i, out: captured.append(out))
    logits = model(torch.randn(4, 1, 28, 28))
    assert len(captured) == 1 and torch.equal(captured[0], logits)


@pytest.mark.parametrize("model_class", [LeNet, LeNetRes])
def test_c5_as_matrix_product_gives_the_convolutions_numbers(model_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = model_class().double()  # float64: the two orders of summation agree to ~1e-15
    x = torch.randn(6, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    c5 = model.conv[2]
    fast = conv_whole_input(c5, x)
    plain = c5(x).flatten(1)
    assert fast.shape == plain.shape == (6, 120)
    assert torch.allclose(fast, plain, rtol=0, atol=1e-12)
    fast_grads = torch.autograd.grad(fast.square().sum(), [x, c5.weight, c5.bias])
    plain_grads = torch.autograd.grad(plain.square().sum(), [x, c5.weight, c5.bias])
    for a, b in zip(fast_grads, plain_grads, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    # The parameters are still those of a Conv2d(16, 120, 5): the usual layout and count.
    assert c5.weight.shape == (120, 16, 5, 5) and isinstance(c5, nn.Conv2d)


def test_c5_falls_back_to_the_convolution_on_larger_inputs() -> None:
    model = LeNet(image_size=32)  # C5 sees 6x6 and gives 120x2x2
    assert model.fc[0].in_features == 480
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_the_modern_variant_takes_maxima_with_the_same_parameters() -> None:
    torch.manual_seed(0)
    paper, modern = LeNet(), LeNet(activation="relu", pool="max")
    assert isinstance(modern.pool, nn.MaxPool2d) and isinstance(modern.activation, nn.ReLU)
    modern.load_state_dict(paper.state_dict())  # same layout, same 61,706 parameters
    x = torch.randn(4, 1, 28, 28)
    s2 = modern.pool(modern.activation(modern.conv[0](x)))
    assert torch.equal(s2, F.max_pool2d(F.relu(paper.conv[0](x)), 2))
