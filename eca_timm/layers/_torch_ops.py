"""The fused BatchNorm -> ECA -> residual step in torch ops (the CPU path): one autograd function.

The plain ``shortcut + eca(bn(c))`` adds, to a plain ResNet block's work, a pooling pass, a scale pass and, when
training, a kept BatchNorm output and four full-size backward passes (the gate's gradient, the scaled gradient, and
BatchNorm's own backward over it). ``torch_bn_eca_residual`` computes the same values with:

- forward: ECA's scale folded into the residual add (one ``addcmul`` written over the BatchNorm output, like
  ResNet's in-place ``x += shortcut``), and the spatial mean taken from the BatchNorm input, or, after a pointwise
  conv, from that conv's input (``fused.conv_input_mean``: a quarter of the channels in a bottleneck);
- backward: BatchNorm's and ECA's gradients in closed form from two per-(sample, channel) sums of the incoming
  gradient, so the input gradient is one ``addcmul`` pair and only what BatchNorm keeps anyway (its input) is kept.

Under torch.compile the same function is traced (out of place; the compiler fuses the passes). Also here: what both
fused paths share, BatchNorm's bookkeeping (``batch_norm_step``) and the accumulation dtype (``accumulation_dtype``).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .eca import EcaLayer

__all__ = ['accumulation_dtype', 'batch_norm_step', 'torch_bn_eca_residual']

_is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling  # torch < 2.3


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fused step's sums and per-channel terms are kept in: float64 for float64 tensors, else float32
    (half precision in and out, float32 inside), on both paths."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _windows(v: torch.Tensor, kernel_size: int, padding: int) -> torch.Tensor:
    """[B, C, k] zero-padded sliding windows over the channels of ``v`` [B, C] (a view of one padded copy)."""
    return F.pad(v, (padding, padding)).unfold(1, kernel_size, 1)


def _gate(pooled: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """ECA's gate sigmoid(conv1d(pooled)) for pooled means [B, C], as [B, C] in ``pooled``'s dtype.

    The k-tap channel conv is a multiply-add over [B, C, k] windows: on [B, C] vectors much cheaper than a conv
    call, and elementwise ops stay in ``pooled``'s precision under autocast.
    """
    k = weight.shape[-1]
    return (_windows(pooled, k, padding) * weight.reshape(k).to(pooled.dtype)).sum(-1).sigmoid()


def _gate_terms(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eca_weight: torch.Tensor,
                centered_mean: torch.Tensor, mask: Optional[torch.Tensor], invstd: torch.Tensor,
                padding: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchNorm's per-channel scale, ECA's pooled input, sigmoid and (drop-path masked) gate, in
    ``centered_mean``'s dtype."""
    acc = centered_mean.dtype
    scale = invstd.to(acc) if weight is None else weight.detach().to(acc) * invstd.to(acc)
    pooled = centered_mean * scale if bias is None else torch.addcmul(bias.detach().to(acc), centered_mean, scale)
    sig = _gate(pooled, eca_weight.detach(), padding)
    gate = sig if mask is None else sig * mask.to(acc)
    return scale, pooled, sig, gate


def _gated_add(x: torch.Tensor, gate: torch.Tensor, shortcut: Optional[torch.Tensor], inplace: bool) -> torch.Tensor:
    """``shortcut + x * gate`` (or ``x * gate``) with a [B, C] gate; written over ``x`` when ``inplace``."""
    gate = gate.to(x.dtype)[:, :, None, None]
    if not inplace:  # torch.compile: it plans the memory itself
        return x * gate if shortcut is None else torch.addcmul(shortcut, x, gate)
    return x.mul_(gate) if shortcut is None else torch.addcmul(shortcut, x, gate, out=x)


class _BnEcaResidual(torch.autograd.Function):
    """``shortcut + x * gate`` (or ``x * gate``) for ``x = bn(c)`` already computed, with
    ``gate = sigmoid(conv1d(mean_hw(x))) * mask`` and the gradients of ``c``, BatchNorm's affine, ECA's conv and
    ``shortcut``.

    ``c_mean - mean`` ([B, C], ``c``'s spatial mean minus BatchNorm's mean) gives the pooled ``x``; ``mask`` is
    drop path's per-sample factor. With ``g = gate * grad + d_pooled / HW`` the gradient reaching BatchNorm's
    output, everything BatchNorm's backward needs reduces to per-(sample, channel) sums of ``grad`` and
    ``grad * c``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                eca_weight: torch.Tensor, shortcut: Optional[torch.Tensor], centered_mean: torch.Tensor,
                mask: Optional[torch.Tensor], mean: torch.Tensor, invstd: torch.Tensor, batch_stats: bool,
                padding: int, inplace: bool) -> torch.Tensor:
        scale, pooled, sig, gate = _gate_terms(weight, bias, eca_weight, centered_mean, mask, invstd, padding)
        ctx.save_for_backward(c, weight, bias, eca_weight, centered_mean, mask, mean, invstd, scale, pooled, sig,
                              gate)
        ctx.batch_stats, ctx.padding, ctx.has_shortcut = batch_stats, padding, shortcut is not None
        if inplace:
            ctx.mark_dirty(x)
        return _gated_add(x, gate, shortcut, inplace)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        c, weight, bias, eca_weight, centered_mean, mask, mean, invstd, scale, pooled, sig, gate = ctx.saved_tensors
        acc = gate.dtype
        mean, invstd = mean.to(acc), invstd.to(acc)
        hw = grad.shape[2] * grad.shape[3]
        total = grad.sum(dim=(2, 3), dtype=acc)
        # sum_hw(grad * (c - mean)), centered for accuracy; buf (>= fp32) is the one full-size temporary
        buf = torch.sub(c, mean[None, :, None, None]).mul_(grad)
        dot = buf.sum(dim=(2, 3), dtype=acc)
        # d out / d gate = sum_hw(grad * x) with x = scale * (c - mean) + bias
        d_gate = dot * scale if bias is None else torch.addcmul(dot * scale, total, bias.detach().to(acc))
        d_sig = d_gate if mask is None else d_gate * mask.to(acc)
        d_conv = d_sig * sig * (1 - sig)  # through the sigmoid, [B, C]
        k = eca_weight.shape[-1]
        # the channel conv's input gradient is the correlation with the flipped kernel
        d_pooled = (_windows(d_conv, k, ctx.padding) * eca_weight.detach().reshape(k).flip(0).to(acc)).sum(-1)
        d_eca = None
        if ctx.needs_input_grad[4]:
            d_eca = (_windows(pooled, k, ctx.padding) * d_conv[:, :, None]).sum((0, 1))
            d_eca = d_eca.reshape(eca_weight.shape).to(eca_weight.dtype)
        # BatchNorm's output gradient g = gate * grad + d_pooled / HW: its sums over samples and pixels
        sum_g = (gate * total + d_pooled).sum(0)
        sum_g_centered = (gate * dot + d_pooled * centered_mean).sum(0)
        d_weight = (sum_g_centered * invstd).to(weight.dtype) if ctx.needs_input_grad[2] else None
        d_bias = sum_g.to(bias.dtype) if ctx.needs_input_grad[3] else None
        d_c = None
        if ctx.needs_input_grad[1]:
            # d_c = alpha * grad + beta * c + offset, per (sample, channel)
            alpha = gate * scale
            offset = d_pooled * (scale / hw)
            if ctx.batch_stats:
                n = grad.shape[0] * hw
                beta = -scale * invstd ** 2 * sum_g_centered / n
                offset = offset - scale * sum_g / n - beta * mean
                torch.addcmul(offset[:, :, None, None], c, beta[None, :, None, None], out=buf)
                buf.addcmul_(grad, alpha[:, :, None, None])
            else:
                torch.addcmul(offset[:, :, None, None], grad, alpha[:, :, None, None], out=buf)
            d_c = buf.to(c.dtype)
        d_shortcut = grad if ctx.has_shortcut and ctx.needs_input_grad[5] else None
        return None, d_c, d_weight, d_bias, d_eca, d_shortcut, None, None, None, None, None, None, None


def batch_norm_step(bn: nn.Module) -> Tuple[float, bool, bool]:
    """``nn.BatchNorm2d.forward``'s bookkeeping: counts the batch; returns the running-average factor, whether
    the batch's statistics normalize, and whether the running statistics are passed (kept or updated)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    return momentum, use_batch_stats, not bn.training or bn.track_running_stats


def _batch_norm_with_stats(bn: nn.Module, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """``bn(c)`` as ``nn.BatchNorm2d.forward`` computes it (no autograd), the mean and 1/std it normalized with,
    and whether those are batch statistics."""
    momentum, use_batch_stats, keep_running = batch_norm_step(bn)
    with torch.no_grad():
        x, mean, invstd = torch.native_batch_norm(
            c, bn.weight, bn.bias, bn.running_mean if keep_running else None,
            bn.running_var if keep_running else None, use_batch_stats, momentum, bn.eps)
        if not use_batch_stats:
            mean, invstd = bn.running_mean.clone(), torch.rsqrt(bn.running_var + bn.eps)
    return x, mean, invstd, use_batch_stats


def torch_bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                          drop_path: Optional[nn.Module], conv: Optional[nn.Module],
                          input_mean: Optional[torch.Tensor]) -> torch.Tensor:
    """``shortcut + drop_path(eca(bn(c)))`` for a plain BatchNorm ``bn``, in torch ops; ``input_mean`` is
    ``fused.conv_input_mean(conv, bn, z)`` for ``c = conv(z)``, or None."""
    x, mean, invstd, batch_stats = _batch_norm_with_stats(bn, c)
    with torch.no_grad():
        acc = accumulation_dtype(c.dtype)
        if input_mean is not None and conv is not None:
            # float64 (a [B, Cin] x [Cin, Cout] product, which autocast leaves alone): W @ mean(z) minus the batch
            # mean cancels to a small difference, which float32 rounding of the product (~eps * sum|W||z|) swamps
            precise = torch.float64 if c.device.type != 'mps' else acc
            c_mean = torch.mm(input_mean.to(precise), conv.weight.flatten(1).t().to(precise))
            centered_mean = (c_mean - mean.to(precise)).to(acc)
        else:
            centered_mean = c.mean(dim=(2, 3), dtype=acc) - mean.to(acc)
        no_drop = drop_path is None or isinstance(drop_path, nn.Identity)
        mask = None if no_drop else drop_path(centered_mean.new_ones(c.shape[0], 1))
    inplace = not _is_compiling()
    padding = eca.conv.padding[0]
    if not torch.is_grad_enabled():
        gate = _gate_terms(bn.weight, bn.bias, eca.conv.weight, centered_mean, mask, invstd, padding)[3]
        return _gated_add(x, gate, shortcut, inplace)
    return _BnEcaResidual.apply(
        x, c, bn.weight, bn.bias, eca.conv.weight, shortcut, centered_mean, mask, mean, invstd, batch_stats,
        padding, inplace)
