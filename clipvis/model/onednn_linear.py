"""Float32 linear layers on CPU through oneDNN instead of the BLAS library PyTorch links (MKL).

PyTorch multiplies a float32 linear layer's matrices with MKL, and MKL picks its AVX-512 kernels on
Intel CPUs only: on the project's 2-core AMD EPYC (AVX-512) it runs AVX2 code, about 185 GFLOP/s,
where oneDNN, which PyTorch already uses for every convolution, reaches about 400 (a (1200 x 512) by
(512 x 2048) product: 13.6 ms against 6.1 ms). Most of the network's time is such products:
ConvNeXt-B's trunk is 82 % linear layers, and the pixel decoder's encoder is mostly its projections
and feed-forward layers.

`OneDNNLinears()` is a context in which every float32 `F.linear` called on CPU (nn.Linear layers, the
deformable attention's fused projections) runs as oneDNN's linear op: the same products summed in
another order, so the results move by float rounding. nn.MultiheadAttention's projections (the query
decoder's, a small share) stay with PyTorch: its function runs them inside the override, out of the
context's sight. It leaves alone what it cannot speed up or must not change: other devices and dtypes,
autocast (bf16 already goes to oneDNN), and anything autograd must differentiate (the op has no
backward), so training is untouched.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


@functools.cache  # asked once per frame by `CLIPVIS.infer`; the answer cannot change
def onednn_available() -> bool:
    """oneDNN is built into this PyTorch and exposes its linear op (x86 and most ARM builds)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDNNLinears(TorchFunctionMode):
    """Inside `with OneDNNLinears():`, float32 CPU `F.linear` calls without gradients run through oneDNN."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and _redirectable(*args, **kwargs):
            return onednn_linear(*args, **kwargs)
        return func(*args, **kwargs)


def onednn_linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(input, weight, bias)` computed by oneDNN (float32, CPU, no autograd)."""
    return torch.ops.mkldnn._linear_pointwise(input, weight, bias, "none", [], "")


def _redirectable(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    tensors = [t for t in (input, weight, bias) if t is not None]
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))
