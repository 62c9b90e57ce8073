"""Models: shapes and parameter counts from seed 003's table, the fixed LeNetRes, the residual MLP."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import LeNet, LeNetRes, ResBlockMLP
from models.blocks import ResBlock, conv_whole_input, out_dim

ALL_MODELS = [LeNet, LeNetRes, ResBlockMLP]


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_logits_shape_for_a_batch(model_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    logits = model_class()(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10)
    # Logits, not probabilities: rows do not sum to one (the seeds' double softmax is gone).
    assert not torch.allclose(logits.sum(dim=1), torch.ones(5))


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_every_parameter_gets_a_gradient(model_class: type[nn.Module]) -> None:
    # Catches declared-but-unused layers, such as the seed's LeNetRes batch norm and its fc[2].
    torch.manual_seed(0)
    model = model_class()
    F.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.arange(8)).backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


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
    """Seed 003's LeNet, copied as written (its forward is not used here, only its layout)."""

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
    # On a 28x28 digit our C1 pads to the paper's 32x32, which is what the seed's 32x32 input was.
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


@pytest.mark.parametrize(("width", "depth"), [(64, 0), (64, 1), (128, 3)])
def test_resmlp_width_and_depth(width: int, depth: int) -> None:
    model = ResBlockMLP(width=width, depth=depth, dropout=0.2)
    expected = (784 * width + width) + depth * 2 * (width * width + width) + (width * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert len(model.blocks) == depth
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resmlp_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    model = ResBlockMLP(width=32, depth=2, dropout=0.5)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_resblock_is_relu_of_input_plus_residual() -> None:
    torch.manual_seed(0)
    block = ResBlock(8)
    x = torch.randn(3, 8)
    expected = torch.relu(x + block.fc[1](torch.relu(block.fc[0](x))))
    assert torch.allclose(block(x), expected)


@pytest.mark.parametrize("model_class", [LeNet, LeNetRes, ResBlockMLP])
def test_unknown_activation_is_refused_by_name(model_class: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="model.activation must be one of .* got 'swish'"):
        model_class(activation="swish")


def test_out_dim_matches_pytorch_layers() -> None:
    for size, kernel, stride, padding, dilation in itertools.product(
        (7, 28, 32), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)
    ):
        if padding > kernel // 2 or dilation * (kernel - 1) + 1 > size + 2 * padding:
            continue
        conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
        actual = conv(torch.zeros(1, 1, size, size)).shape[-1]
        assert out_dim(size, kernel, padding, stride, dilation) == actual, (
            size,
            kernel,
            stride,
            padding,
            dilation,
        )
        if dilation == 1:
            pool = nn.AvgPool2d(kernel, stride=stride, padding=padding)
            assert out_dim(size, kernel, padding, stride) == pool(torch.zeros(1, 1, size, size)).shape[-1]


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
    # The parameters are still those of a Conv2d(16, 120, 5): seed 003's layout and count.
    assert c5.weight.shape == (120, 16, 5, 5) and isinstance(c5, nn.Conv2d)


def test_c5_falls_back_to_the_convolution_on_larger_inputs() -> None:
    model = LeNet(image_size=32)  # C5 sees 6x6 and gives 120x2x2
    assert model.fc[0].in_features == 480
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
