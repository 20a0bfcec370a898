import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clipvis.model.onednn_linear as onednn
from clipvis.model.onednn_linear import OneDNNLinears, onednn_available

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no oneDNN")


@pytest.fixture
def redirected(monkeypatch):
    """Counts the linear products the mode sent to oneDNN."""
    calls = []
    real = onednn.onednn_linear

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(onednn, "onednn_linear", counting)
    return calls


def test_inference_linears_go_to_onednn_with_the_same_results(redirected):
    torch.manual_seed(0)
    linear, attention = nn.Linear(256, 512), nn.MultiheadAttention(256, 8, batch_first=True).eval()
    x = torch.randn(2, 300, 256)
    with torch.inference_mode():
        expected = linear(x), F.linear(x[0], linear.weight), attention(x, x, x)[0]
        with OneDNNLinears():
            got = linear(x), F.linear(x[0], linear.weight), attention(x, x, x)[0]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    # nn.Linear and the bare F.linear; the attention layer's projections stay with PyTorch
    assert redirected == [(2, 300, 256), (300, 256)]


def test_what_autograd_autocast_or_another_dtype_needs_is_left_to_pytorch(redirected):
    linear = nn.Linear(256, 512)
    x = torch.randn(4, 256)
    with OneDNNLinears():
        linear(x).sum().backward()  # training: the op has no backward
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert linear(x).dtype == torch.bfloat16  # autocast still casts
        with torch.no_grad():
            assert linear.double()(x.double()).dtype == torch.float64
    assert redirected == []
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
