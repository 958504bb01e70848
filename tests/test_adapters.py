"""loreal.layers.adapters: gradient scaling, the bottleneck and its init."""
import torch
import torch.nn.functional as F

from loreal.layers.adapters import Bottleneck, grad_scale, kaiming_init_, linear_as_input, relu_linear


def test_grad_scale_is_identity_forward_and_scales_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_scale(x, 0.25)
    assert torch.equal(y, x)
    g = torch.randn(4, 3)
    (y * g).sum().backward()
    assert torch.equal(x.grad, g * 0.25)


def test_grad_scale_pair_leaves_outer_gradient_exact():
    w = torch.randn(5, 5, requires_grad=True)
    x = torch.randn(2, 5, requires_grad=True)
    s = 1e-3
    out = grad_scale((grad_scale(x, s) @ w) * s, 1 / s)
    gx, gw = torch.autograd.grad(out.sum(), (x, w))
    rx, rw = torch.autograd.grad(((x @ w) * s).sum(), (x, w))
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(gw, rw / s, rtol=1e-5, atol=1e-9)


def test_bottleneck_layout_and_forward():
    b = Bottleneck(16, 4)
    mid = relu_linear(4, 4)
    assert sorted(b.state_dict()) == ["down.0.bias", "down.0.weight", "up.bias", "up.weight"]
    assert sorted(mid.state_dict()) == ["0.bias", "0.weight"]
    x = torch.randn(3, 7, 16)
    expected = b.up(mid(b.down(x)))
    torch.testing.assert_close(b(x, mid), expected)
    torch.testing.assert_close(b(x), b.up(b.down(x)))


def test_bottleneck_casts_fp32_masters_to_the_input_dtype():
    b = Bottleneck(16, 4)
    x = torch.randn(2, 16).to(torch.bfloat16)
    out = b(x, relu_linear(4, 4))
    assert out.dtype == torch.bfloat16
    assert b.up.weight.dtype == torch.float32
    lin = torch.nn.Linear(16, 3)
    torch.testing.assert_close(linear_as_input(x, lin), F.linear(x, lin.weight.bfloat16(), lin.bias.bfloat16()))


def test_kaiming_init_fan_out_and_zero_bias():
    torch.manual_seed(0)
    b = kaiming_init_(Bottleneck(256, 512))
    assert torch.count_nonzero(b.up.bias) == 0 and torch.count_nonzero(b.down[0].bias) == 0
    # fan_out of down is 512: std sqrt(2/512)
    assert abs(b.down[0].weight.std().item() - (2 / 512) ** 0.5) < 0.005
    assert abs(b.up.weight.std().item() - (2 / 256) ** 0.5) < 0.005
