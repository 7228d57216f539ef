"""ECA's scale fused into the residual add: ``shortcut + x * gate`` in one pass, written over ``x``.

A plain ``shortcut + eca(x)`` costs two full-size passes (the scale, then the add) and, when training, keeps the
BatchNorm output ``x`` for the gate's gradient: one more activation per block than the plain ResNet block, which
only keeps the BatchNorm input and the ReLU output. ``gated_residual`` does the scale and the add in one
``addcmul`` written into ``x``'s memory (like ResNet's in-place ``x += shortcut``) and, when ``x`` is the output
of a plain BatchNorm, recomputes ``x`` from the BatchNorm input (which BatchNorm keeps anyway) in the backward pass
instead of keeping it. TorchScript, fx symbolic tracing, torch.compile (whose own fusion and recompute
partitioner handle this) and other norm layers take the plain ``torch.addcmul(shortcut, x, gate)``, the same values.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from timm.layers import BatchNormAct2d

try:
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _is_fx_tracing
except ImportError:  # torch < 2.5
    from torch.fx._symbolic_trace import is_fx_tracing as _is_fx_tracing

_is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling  # torch < 2.3

__all__ = ['gated_residual']


class _BnGatedResidual(torch.autograd.Function):
    """``shortcut + x * gate`` in place of ``x``; the backward recomputes ``x = bn(bn_input)``."""

    @staticmethod
    def forward(
            ctx,
            x: torch.Tensor,
            gate: torch.Tensor,
            shortcut: torch.Tensor,
            bn_input: torch.Tensor,
            weight: Optional[torch.Tensor],
            bias: Optional[torch.Tensor],
            running_mean: Optional[torch.Tensor],
            running_var: Optional[torch.Tensor],
            eps: float,
    ) -> torch.Tensor:
        # Batch statistics (no running stats passed) are recomputed from bn_input; running stats are kept only
        # in eval mode, where no forward updates them before this backward.
        ctx.save_for_backward(gate, bn_input, weight, bias, running_mean, running_var)
        ctx.eps = eps
        ctx.x_dtype = x.dtype
        ctx.mark_dirty(x)
        return torch.addcmul(shortcut, x, gate, out=x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        gate, bn_input, weight, bias, running_mean, running_var = ctx.saved_tensors
        grad_x = grad * gate if ctx.needs_input_grad[0] else None
        grad_gate = None
        if ctx.needs_input_grad[1]:
            x = F.batch_norm(
                bn_input.to(ctx.x_dtype), running_mean, running_var, weight, bias,
                training=running_mean is None, momentum=0., eps=ctx.eps)
            acc_dtype = torch.promote_types(x.dtype, torch.float32)  # sum low-precision products in fp32
            grad_gate = torch.sum(grad * x, dim=(2, 3), keepdim=True, dtype=acc_dtype).to(gate.dtype)
        grad_shortcut = grad if ctx.needs_input_grad[2] else None
        return grad_x, grad_gate, grad_shortcut, None, None, None, None, None, None


def _recomputable(bn: nn.Module) -> bool:
    """True when ``bn``'s forward is exactly ``F.batch_norm`` with its own parameters and buffers."""
    if type(bn) is nn.BatchNorm2d:
        return True
    # timm's BatchNormAct2d without activation and drop (as in EcaInvertedResidual's projection norm).
    return type(bn) is BatchNormAct2d and isinstance(bn.act, nn.Identity) and isinstance(bn.drop, nn.Identity)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, shortcut: torch.Tensor, bn_input: Optional[torch.Tensor],
                   bn: nn.Module) -> torch.Tensor:
    """``shortcut + x * gate`` where ``x = bn(bn_input)``; may overwrite ``x`` (a fresh BatchNorm output).

    Args:
        x: The norm layer's output, [B, C, H, W]; not used after this call.
        gate: Per-channel scale, [B, C, 1, 1] (ECA gate, with drop path folded in).
        shortcut: Residual branch, same shape as ``x``.
        bn_input: The norm layer's input, recomputed into ``x`` for the gate's gradient (None when grad is off,
            so that inference does not keep it alive).
        bn: The norm layer; a plain BatchNorm2d gets the memory-saving path, any other the plain ``addcmul``.
    """
    if _is_fx_tracing() or _is_compiling():
        return torch.addcmul(shortcut, x, gate)
    if not torch.is_grad_enabled():
        return torch.addcmul(shortcut, x, gate, out=x)
    if bn_input is None or not _recomputable(bn):
        return torch.addcmul(shortcut, x, gate)
    use_batch_stats = bn.training or bn.running_mean is None
    return _BnGatedResidual.apply(
        x, gate, shortcut, bn_input, bn.weight, bn.bias,
        None if use_batch_stats else bn.running_mean, None if use_batch_stats else bn.running_var, bn.eps)
