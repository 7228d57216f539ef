"""BatchNorm -> ECA -> residual add with ECA's scale fused into the add, for the ECA blocks.

A plain ``shortcut + eca(bn(c))`` costs two full-size passes (the scale, then the add) and, when training, keeps
the BatchNorm output for the gate's gradient: one more activation per block than the plain ResNet block, which
keeps only the BatchNorm input ``c`` and the ReLU output. ``bn_eca_residual`` does the scale and the add in one
``addcmul`` written over the BatchNorm output (like ResNet's in-place ``x += shortcut``) and, for a plain
BatchNorm, computes the gate's gradient from ``c`` (kept by BatchNorm anyway) and the batch statistics BatchNorm
returns, so nothing more is kept. Under torch.compile the same function is traced (out of place; the compiler
plans memory and fuses the ops). fx symbolic tracing, other norm layers and no-grad compiled code take the plain
ops; the values are the same.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from timm.layers import BatchNormAct2d

from .eca import EcaLayer

try:
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _is_fx_tracing
except ImportError:  # torch < 2.5
    from torch.fx._symbolic_trace import is_fx_tracing as _is_fx_tracing

_is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling  # torch < 2.3

__all__ = ['bn_eca_residual']


class _GatedResidual(torch.autograd.Function):
    """``shortcut + x * gate`` (or ``x * gate``) over ``x``, where ``x = bn(c) = scale * (c - mean) + shift``.

    The backward needs ``sum_hw(grad * x) = scale * sum_hw(grad * (c - mean)) + shift * sum_hw(grad)`` for the gate:
    from ``c`` and per-channel vectors instead of a kept ``x``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor, shortcut: Optional[torch.Tensor], c: torch.Tensor,
                mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, inplace: bool) -> torch.Tensor:
        ctx.save_for_backward(gate, c, mean, scale, shift)
        if not inplace:  # torch.compile: it plans the memory itself
            return _scale_add(x, gate, shortcut)
        ctx.mark_dirty(x)
        return _scale_add(x, gate, shortcut, out=x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        gate, c, mean, scale, shift = ctx.saved_tensors
        view = (1, -1, 1, 1)
        # c - mean: the one full-size temporary (fp32 for low-precision c), reused for grad_x when dtypes agree
        buf = torch.sub(c, mean.view(view))
        grad_gate = None
        if ctx.needs_input_grad[1]:
            acc_dtype = torch.promote_types(grad.dtype, torch.float32)  # sum low-precision products in fp32
            dot = buf.mul_(grad).sum(dim=(2, 3), keepdim=True, dtype=acc_dtype)
            total = grad.sum(dim=(2, 3), keepdim=True, dtype=acc_dtype)
            grad_gate = (scale.view(view) * dot + shift.view(view) * total).to(gate.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mul(grad, gate, out=buf) if buf.dtype == grad.dtype else grad * gate
        grad_shortcut = grad if ctx.needs_input_grad[2] else None
        return grad_x, grad_gate, grad_shortcut, None, None, None, None, None


class _SpatialMean(torch.autograd.Function):
    """``x.mean((2, 3))`` whose gradient is a broadcast view, not a full-size tensor: autograd adds it in place
    into ``x``'s gradient from the scale instead of writing (and allocating) it first."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean(dim=(2, 3))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return (grad / (ctx.shape[2] * ctx.shape[3]))[:, :, None, None].expand(ctx.shape)


def _scale_add(x: torch.Tensor, gate: torch.Tensor, shortcut: Optional[torch.Tensor],
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    if shortcut is None:
        return torch.mul(x, gate, out=out) if out is not None else x * gate
    return torch.addcmul(shortcut, x, gate, out=out) if out is not None else torch.addcmul(shortcut, x, gate)


def _is_plain_batch_norm(bn: nn.Module) -> bool:
    """True when ``bn``'s forward is exactly ``nn.BatchNorm2d``'s (timm's BatchNormAct2d without act and drop)."""
    if type(bn) is nn.BatchNorm2d:
        return True
    return type(bn) is BatchNormAct2d and isinstance(bn.act, nn.Identity) and isinstance(bn.drop, nn.Identity)


def _batch_norm_with_stats(bn: nn.Module, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``bn(c)`` as ``nn.BatchNorm2d.forward`` computes it, plus the mean and 1/std it normalized with."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep_running = not bn.training or bn.track_running_stats
    x, mean, invstd = torch.native_batch_norm(
        c, bn.weight, bn.bias, bn.running_mean if keep_running else None,
        bn.running_var if keep_running else None, use_batch_stats, momentum, bn.eps)
    if not use_batch_stats:
        mean, invstd = bn.running_mean.clone(), torch.rsqrt(bn.running_var + bn.eps)
    return x, mean, invstd


def bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                    drop_path: Optional[nn.Module] = None) -> torch.Tensor:
    """``shortcut + drop_path(eca(bn(c)))`` (no add when ``shortcut`` is None) with ECA's scale fused into the add.

    Drop path scales each sample's gate instead of the full-size branch (the same per-sample factor). Without
    grad the result is written over ``bn(c)``; when training through a plain BatchNorm only what BatchNorm keeps
    anyway (``c``) is kept for the backward.
    """
    compiling = _is_compiling()
    fused = not (_is_fx_tracing() or compiling)
    if not _is_fx_tracing() and torch.is_grad_enabled() and _is_plain_batch_norm(bn):
        x, mean, invstd = _batch_norm_with_stats(bn, c)
        gate = eca.pooled_gate(_SpatialMean.apply(x), x.dtype)
        if drop_path is not None:
            gate = drop_path(gate)
        with torch.no_grad():
            scale = invstd if bn.weight is None else bn.weight * invstd
            shift = torch.zeros_like(mean) if bn.bias is None else bn.bias.detach().clone()
        return _GatedResidual.apply(x, gate, shortcut, c, mean, scale, shift, not compiling)
    x = bn(c)
    gate = eca.gate(x)
    if drop_path is not None:
        gate = drop_path(gate)
    return _scale_add(x, gate, shortcut, out=x if fused and not torch.is_grad_enabled() else None)
