"""BatchNorm -> ECA -> residual add as one autograd function, for the ECA blocks.

The plain ``shortcut + eca(bn(c))`` adds, to a plain ResNet block's work, a pooling pass, a scale pass and, when
training, a kept BatchNorm output and four full-size backward passes (the gate's gradient, the scaled gradient, and
BatchNorm's own backward over it). ``bn_eca_residual`` computes the same values with:

- forward: ECA's scale folded into the residual add (one ``addcmul`` written over the BatchNorm output, like
  ResNet's in-place ``x += shortcut``), and the spatial mean taken from the BatchNorm input, or, after a pointwise
  conv, from that conv's input (``conv_input_mean``: a quarter of the channels in a bottleneck);
- backward: BatchNorm's and ECA's gradients in closed form from two per-(sample, channel) sums of the incoming
  gradient, so the input gradient is one ``addcmul`` pair and only what BatchNorm keeps anyway (its input) is kept.

Under torch.compile the same function is traced (out of place; the compiler fuses the passes). The model families
register their fused blocks as fx leaf modules (timm's feature extraction then runs them as in eager); tracing this
function itself, TorchScript and norm layers other than a plain BatchNorm take the plain ops; the values are the same.

On CUDA the step runs as Triton kernels instead (``_triton_kernels``, registered as torch.library ops in
``_fused_ops``): BatchNorm's statistics and ECA's pooled means in one read of the conv output, then one pass that
writes ``relu(shortcut + gate * bn(c))``; eager and torch.compile alike. ``_uses_triton`` is the one dispatch rule.
"""
import contextlib
import importlib.util
import logging
import os
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from timm.layers import BatchNormAct2d

from .eca import EcaLayer

try:
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _is_fx_tracing
except ImportError:  # torch < 2.5
    from torch.fx._symbolic_trace import is_fx_tracing as _is_fx_tracing

_is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling  # torch < 2.3

__all__ = ['BACKENDS', 'bn_eca_residual', 'conv_input_mean', 'fused_backend', 'set_fused_backend', 'triton_available']

_logger = logging.getLogger(__name__)

# 'auto': Triton kernels for CUDA tensors (NCHW or channels_last), torch ops elsewhere; 'torch': torch ops
# everywhere; 'triton': the kernels on any device (on the CPU only under TRITON_INTERPRET=1, for tests).
BACKENDS = ('auto', 'torch', 'triton')
BACKEND_ENV = 'ECA_TIMM_FUSED_BACKEND'
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _load_triton_ops():
    """``_fused_ops`` (the kernels as torch.library ops) where Triton can run them, else None. Loaded at import:
    torch.compile should find the ops registered rather than trace an import."""
    if not hasattr(torch.library, 'custom_op') or importlib.util.find_spec('triton') is None:
        return None  # torch < 2.4, or a CPU-only torch without Triton
    if not (torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1'):
        return None
    try:
        from . import _fused_ops
    except Exception as e:  # a Triton that does not match this torch: the torch ops still work
        _logger.warning('eca_timm: Triton kernels unavailable (%s); the fused ECA step uses torch ops', e)
        return None
    return _fused_ops


_ops = _load_triton_ops()
_backend = os.environ.get(BACKEND_ENV, 'auto')
if _backend not in BACKENDS:
    raise ValueError(f'{BACKEND_ENV}={_backend!r}: choose one of {", ".join(BACKENDS)}')


def triton_available() -> bool:
    """True where the fused ECA step can run as Triton kernels (CUDA with Triton, or TRITON_INTERPRET=1)."""
    return _ops is not None


def set_fused_backend(name: str) -> str:
    """Choose how the fused ECA step runs (``BACKENDS``); returns the previous choice."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f'fused ECA backend must be one of {", ".join(BACKENDS)}, got {name!r}')
    if name == 'triton' and _ops is None:
        raise RuntimeError('fused ECA backend triton: Triton kernels are not available here (they need CUDA and '
                           'triton, or TRITON_INTERPRET=1 set before eca_timm is imported)')
    previous, _backend = _backend, name
    return previous


@contextlib.contextmanager
def fused_backend(name: str) -> Iterator[None]:
    """``set_fused_backend(name)`` for the duration of a block."""
    previous = set_fused_backend(name)
    try:
        yield
    finally:
        set_fused_backend(previous)


def _uses_triton(t: torch.Tensor) -> bool:
    """The dispatch rule: the Triton kernels take ``t`` (a [B, C, H, W] conv output) or the torch ops do."""
    if _ops is None or _backend == 'torch' or (_backend == 'auto' and not t.is_cuda):
        return False
    return t.dim() == 4 and t.dtype in _TRITON_DTYPES and (
        t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last))


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


def _is_plain_batch_norm(bn: nn.Module) -> bool:
    """True when ``bn``'s forward is exactly ``nn.BatchNorm2d``'s (timm's BatchNormAct2d without act and drop)."""
    if type(bn) is nn.BatchNorm2d:
        return True
    return type(bn) is BatchNormAct2d and isinstance(bn.act, nn.Identity) and isinstance(bn.drop, nn.Identity)


def _is_pointwise_conv(conv: nn.Module) -> bool:
    """True for a bias-free 1x1, stride-1, ungrouped ``nn.Conv2d`` (one that commutes with the spatial mean)."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1 and conv.bias is None)


def conv_input_mean(conv: nn.Module, bn: nn.Module, z: torch.Tensor) -> Optional[torch.Tensor]:
    """``z``'s spatial mean (at least fp32, no grad) when ECA after ``bn(conv(z))`` should pool ``z`` instead.

    A 1x1 conv commutes with the spatial mean: ``mean_hw(conv(z)) = W @ mean_hw(z)``. For a bottleneck's last
    conv ``z`` has a quarter of the output channels, so pooling it is up to 4x cheaper, plus a [B, Cin] x [Cin, Cout]
    float64 matmul: worth it where ``B * H * W >= 16 * Cin`` (measured on CPU; it holds for ResNet-50's first two
    stages at batch 8, and the first three from batch 32). None where it does not apply (``bn_eca_residual`` then
    pools the conv output). Call it before ``conv`` so that ``z`` can be freed.
    """
    if _is_fx_tracing() or not _is_plain_batch_norm(bn) or not _is_pointwise_conv(conv) or _uses_triton(z):
        return None  # (the Triton kernels pool in the pass that gathers BatchNorm's statistics)
    if z.shape[0] * z.shape[2] * z.shape[3] < 16 * z.shape[1]:
        return None
    with torch.no_grad():
        return z.mean(dim=(2, 3), dtype=torch.promote_types(z.dtype, torch.float32))


def _batch_norm_step(bn: nn.Module) -> Tuple[float, bool, bool]:
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
    momentum, use_batch_stats, keep_running = _batch_norm_step(bn)
    with torch.no_grad():
        x, mean, invstd = torch.native_batch_norm(
            c, bn.weight, bn.bias, bn.running_mean if keep_running else None,
            bn.running_var if keep_running else None, use_batch_stats, momentum, bn.eps)
        if not use_batch_stats:
            mean, invstd = bn.running_mean.clone(), torch.rsqrt(bn.running_var + bn.eps)
    return x, mean, invstd, use_batch_stats


def _triton_bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                             drop_path: Optional[nn.Module], relu: bool) -> torch.Tensor:
    """The CUDA path: ``torch.ops.eca_timm.bn_eca_residual`` (``_fused_ops``), then BatchNorm's running averages."""
    momentum, batch_stats, keep_running = _batch_norm_step(bn)
    n = c.numel() // c.shape[1]
    if batch_stats and n <= 1:
        raise ValueError(f'Expected more than 1 value per channel when training, got input size {list(c.shape)}')
    mask = None
    if drop_path is not None and not isinstance(drop_path, nn.Identity):
        acc = torch.float64 if c.dtype == torch.float64 else torch.float32
        mask = drop_path(c.new_ones(c.shape[0], 1, dtype=acc)).view(-1)
    out, _, batch_mean, batch_var = torch.ops.eca_timm.bn_eca_residual(
        c, bn.weight, bn.bias, eca.conv.weight, shortcut, mask, None if batch_stats else bn.running_mean,
        None if batch_stats else bn.running_var, bn.eps, relu)
    if batch_stats and keep_running and bn.running_mean is not None:
        with torch.no_grad():
            bn.running_mean.lerp_(batch_mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((batch_var * (n / (n - 1))).to(bn.running_var.dtype), momentum)
    return out


def bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                    drop_path: Optional[nn.Module] = None, conv: Optional[nn.Module] = None,
                    conv_input_mean: Optional[torch.Tensor] = None, act: Optional[nn.Module] = None
                    ) -> torch.Tensor:
    """``act(shortcut + drop_path(eca(bn(c))))`` (no add when ``shortcut`` is None, no ``act`` when None) as one
    fused step.

    Drop path scales each sample's gate instead of the full-size branch (the same per-sample factor: it is applied
    to a [B, 1] tensor of ones, which draws the same random numbers). With ``c = conv(z)`` pass ``conv`` and
    ``conv_input_mean(conv, bn, z)``: ECA then pools ``z`` instead of ``c``. The result is written over
    ``bn(c)``'s buffer outside torch.compile. On the Triton path a ``nn.ReLU`` ``act`` runs inside the kernel.
    """
    if not _is_fx_tracing() and _is_plain_batch_norm(bn) and _uses_triton(c) and (
            shortcut is None or shortcut.shape == c.shape):
        relu = type(act) is nn.ReLU
        out = _triton_bn_eca_residual(c, bn, eca, shortcut, drop_path, relu)
        return out if relu or act is None else act(out)
    out = _bn_eca_residual(c, bn, eca, shortcut, drop_path, conv, conv_input_mean)
    return out if act is None else act(out)


def _bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                     drop_path: Optional[nn.Module], conv: Optional[nn.Module],
                     conv_input_mean: Optional[torch.Tensor]) -> torch.Tensor:
    """The torch-ops path of ``bn_eca_residual`` (CPU, and wherever the Triton kernels do not apply)."""
    if _is_fx_tracing() or not _is_plain_batch_norm(bn):
        x = bn(c)
        gate = eca.gate(x)
        if drop_path is not None:
            gate = drop_path(gate)
        return x * gate if shortcut is None else torch.addcmul(shortcut, x, gate)
    x, mean, invstd, batch_stats = _batch_norm_with_stats(bn, c)
    with torch.no_grad():
        acc = torch.promote_types(c.dtype, torch.float32)
        if conv_input_mean is not None and conv is not None:
            # float64 (a [B, Cin] x [Cin, Cout] product, which autocast leaves alone): W @ mean(z) minus the batch
            # mean cancels to a small difference, which float32 rounding of the product (~eps * sum|W||z|) swamps
            precise = torch.float64 if c.device.type != 'mps' else acc
            c_mean = torch.mm(conv_input_mean.to(precise), conv.weight.flatten(1).t().to(precise))
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
