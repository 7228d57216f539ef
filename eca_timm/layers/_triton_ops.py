"""The fused ECA step's CUDA path: the Triton kernels as ``torch.library`` custom ops, with fake kernels and autograd.

``torch.ops.eca_timm.bn_eca_residual`` and its backward are single ops to torch.compile: no graph break, and
inductor plans memory around them as around any aten op. ``triton_bn_eca_residual`` calls the op for a block's
modules. Imported by ``fused`` only where Triton can run.
"""
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from . import _triton_launch
from ._torch_ops import accumulation_dtype, batch_norm_step
from .eca import EcaLayer

__all__ = ['bn_eca_residual', 'bn_eca_residual_backward', 'triton_bn_eca_residual']


@torch.library.custom_op('eca_timm::bn_eca_residual', mutates_args=())
def bn_eca_residual(c: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eca_weight: Tensor,
                    shortcut: Optional[Tensor], mask: Optional[Tensor], mean: Optional[Tensor],
                    var: Optional[Tensor], eps: float, relu: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``relu?(shortcut + eca(bn(c)) * mask)`` with BatchNorm's ``mean``/``var``, or the batch's when None.

    Returns the output, ``c``'s centered spatial means [B, C], and the batch mean and biased variance [C] (empty
    when ``mean``/``var`` were given).
    """
    return _triton_launch.forward(c, weight, bias, eca_weight, shortcut, mask, mean, var, eps, relu)


@bn_eca_residual.register_fake
def _(c, weight, bias, eca_weight, shortcut, mask, mean, var, eps, relu):
    n = c.shape[1] if mean is None else 0
    acc = accumulation_dtype(c.dtype)
    return torch.empty_like(c), c.new_empty(c.shape[:2], dtype=acc), c.new_empty(n, dtype=acc), \
        c.new_empty(n, dtype=acc)


@torch.library.custom_op('eca_timm::bn_eca_residual_backward', mutates_args=())
def bn_eca_residual_backward(grad: Tensor, out: Optional[Tensor], c: Tensor, centered: Tensor, mean: Tensor,
                             var: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eca_weight: Tensor,
                             mask: Optional[Tensor], eps: float, batch_stats: bool
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(d_c, g, d_weight, d_bias, d_eca)``; ``g = grad * (out > 0)`` is the shortcut's gradient after a ReLU
    (empty when ``out`` is None); ``d_weight``/``d_bias`` are empty without weight/bias."""
    d_c, g, d_weight, d_bias, d_eca = _triton_launch.backward(
        grad, out, c, centered, mean, var, weight, bias, eca_weight, mask, eps, batch_stats)
    def present(t: Optional[Tensor]) -> Tensor:  # an empty tensor for a missing output (outputs must not alias)
        return centered.new_empty(0, dtype=c.dtype if t is g else centered.dtype) if t is None else t
    return d_c, present(g), present(d_weight), present(d_bias), d_eca


@bn_eca_residual_backward.register_fake
def _(grad, out, c, centered, mean, var, weight, bias, eca_weight, mask, eps, batch_stats):
    acc = accumulation_dtype(c.dtype)
    return (torch.empty_like(c), torch.empty_like(c) if out is not None else c.new_empty(0, dtype=c.dtype),
            c.new_empty(c.shape[1] if weight is not None else 0, dtype=acc),
            c.new_empty(c.shape[1] if bias is not None else 0, dtype=acc), c.new_empty(eca_weight.numel(), dtype=acc))


def _setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, ...]) -> None:
    c, weight, bias, eca_weight, shortcut, mask, mean, var, eps, relu = inputs
    out, centered, batch_mean, batch_var = output
    batch_stats = mean is None
    ctx.mark_non_differentiable(centered, batch_mean, batch_var)
    ctx.save_for_backward(c, weight, bias, eca_weight, mask, centered, batch_mean if batch_stats else mean,
                          batch_var if batch_stats else var, out if relu else None)
    ctx.eps, ctx.batch_stats, ctx.has_shortcut = eps, batch_stats, shortcut is not None


def _backward(ctx: Any, grad: Tensor, *_: Any) -> Tuple[Optional[Tensor], ...]:
    c, weight, bias, eca_weight, mask, centered, mean, var, out = ctx.saved_tensors
    d_c, g, d_weight, d_bias, d_eca = bn_eca_residual_backward(
        grad, out, c, centered, mean, var, weight, bias, eca_weight, mask, ctx.eps, ctx.batch_stats)
    d_shortcut = None
    if ctx.has_shortcut:
        d_shortcut = grad if out is None else g
    return (d_c, None if weight is None else d_weight.to(weight.dtype), None if bias is None else d_bias.to(bias.dtype),
            d_eca.view(eca_weight.shape).to(eca_weight.dtype), d_shortcut, None, None, None, None, None)


bn_eca_residual.register_autograd(_backward, setup_context=_setup_context)


def triton_bn_eca_residual(c: Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[Tensor],
                           drop_path: Optional[nn.Module], relu: bool) -> Tensor:
    """``relu?(shortcut + drop_path(eca(bn(c))))`` for a plain BatchNorm ``bn``: the op, then BatchNorm's running
    averages."""
    momentum, batch_stats, keep_running = batch_norm_step(bn)
    n = c.numel() // c.shape[1]
    if batch_stats and n <= 1:
        raise ValueError(f'Expected more than 1 value per channel when training, got input size {list(c.shape)}')
    mask = None
    if drop_path is not None and not isinstance(drop_path, nn.Identity):
        mask = drop_path(c.new_ones(c.shape[0], 1, dtype=accumulation_dtype(c.dtype))).view(-1)
    out, _, batch_mean, batch_var = torch.ops.eca_timm.bn_eca_residual(
        c, bn.weight, bn.bias, eca.conv.weight, shortcut, mask, None if batch_stats else bn.running_mean,
        None if batch_stats else bn.running_var, bn.eps, relu)
    if batch_stats and keep_running and bn.running_mean is not None:
        with torch.no_grad():
            bn.running_mean.lerp_(batch_mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((batch_var * (n / (n - 1))).to(bn.running_var.dtype), momentum)
    return out
