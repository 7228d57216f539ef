"""Launchers of the Triton kernels (``_triton_kernels``): tensors, strides, tile sizes and grids, forward and backward."""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._torch_ops import accumulation_dtype
from ._triton_kernels import (_affine_kernel, _channel_backward_kernel, _channel_stats_kernel, _gate_backward_kernel,
                              _gate_kernel, _grad_sums_kernel, _plane_stats_kernel)

__all__ = ['forward', 'backward']


def _flat_strides(t: torch.Tensor) -> Optional[Tuple[int, int, int]]:
    """(sample, channel, pixel) strides of a [B, C, H, W] tensor whose H, W flatten to one index, else None."""
    sb, sc, sh, sw = t.stride()
    if t.shape[3] == 1:
        return sb, sc, sh
    if t.shape[2] == 1 or sh == t.shape[3] * sw:
        return sb, sc, sw
    return None


def _strides(t: torch.Tensor, like: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """``t`` with flattenable H, W (copied into ``like``'s layout if needed) and its strides."""
    s = _flat_strides(t)
    if s is None:
        t = t.contiguous(memory_format=_memory_format(like))
        s = _flat_strides(t)
    return t, s


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def _acc(t: torch.Tensor) -> Tuple[torch.dtype, 'tl.dtype']:
    """The accumulation dtype for ``t`` (``accumulation_dtype``), as torch and as Triton dtype."""
    acc = accumulation_dtype(t.dtype)
    return acc, _TL_DTYPES[acc]


def _tile(C: int, HW: int, channels_inner: bool) -> Tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) of a full-size tile: ~2048 elements, widest along the contiguous dimension."""
    if channels_inner:
        block_c = min(64, triton.next_power_of_2(C))
        return block_c, min(triton.next_power_of_2(HW), max(1, 2048 // block_c))
    block_hw = min(512, triton.next_power_of_2(HW))
    return min(triton.next_power_of_2(C), max(1, 2048 // block_hw)), block_hw


# [B, C] tiles: per-(sample, channel) kernels run a program per tile; per-channel kernels loop over the samples in
# tall tiles, so that few iterations cover a batch of 256 (there are only C / 16 such programs).
_SAMPLE_TILE = (16, 32)
_CHANNEL_TILE = (64, 16)


def _bc_tile(B: int, tile: Tuple[int, int]) -> Tuple[int, int]:
    return min(tile[0], triton.next_power_of_2(B)), tile[1]


def _vec_or(t: Optional[torch.Tensor], dummy: torch.Tensor) -> torch.Tensor:
    return dummy if t is None else t


def forward(c: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eca_weight: torch.Tensor,
            shortcut: Optional[torch.Tensor], mask: Optional[torch.Tensor], mean: Optional[torch.Tensor],
            var: Optional[torch.Tensor], eps: float, relu: bool
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``relu?(shortcut + eca(bn(c)) * mask)``; BatchNorm uses ``mean``/``var`` ([C]) or, when None, the batch's.

    Returns the output (``c``'s dtype and layout), ``c``'s centered spatial means [B, C] and the batch mean and
    biased variance [C] (empty when ``mean``/``var`` were given).
    """
    B, C, H, W = c.shape
    HW = H * W
    acc, ACC = _acc(c)
    c, (sxb, sxc, sxhw) = _strides(c, c)
    batch_stats = mean is None
    mean_bc = torch.empty(B, C, device=c.device, dtype=acc)
    m2_bc = torch.empty(B, C, device=c.device, dtype=acc) if batch_stats else mean_bc
    block_c, block_hw = _tile(C, HW, sxc == 1)
    _plane_stats_kernel[(B, triton.cdiv(C, block_c))](
        c, mean_bc, m2_bc, C, HW, sxb, sxc, sxhw, NEED_M2=batch_stats, ACC=ACC, BLOCK_C=block_c, BLOCK_HW=block_hw)
    if batch_stats:
        mean = torch.empty(C, device=c.device, dtype=acc)
        var = torch.empty(C, device=c.device, dtype=acc)
        block_b, block_cc = _bc_tile(B, _CHANNEL_TILE)
        _channel_stats_kernel[(triton.cdiv(C, block_cc),)](
            mean_bc, m2_bc, mean, var, B, C, HW, ACC=ACC, BLOCK_B=block_b, BLOCK_C=block_cc)
    a = torch.empty(B, C, device=c.device, dtype=acc)
    d = torch.empty_like(a)
    centered = torch.empty_like(a)
    block_b, block_cc = _bc_tile(B, _SAMPLE_TILE)
    _gate_kernel[(triton.cdiv(B, block_b), triton.cdiv(C, block_cc))](
        mean_bc, mean, var, _vec_or(weight, mean), _vec_or(bias, mean), eca_weight, _vec_or(mask, mean), a, d,
        centered, B, C, eps, HAS_W=weight is not None, HAS_BIAS=bias is not None, HAS_MASK=mask is not None,
        K=eca_weight.numel(), ACC=ACC, BLOCK_B=block_b, BLOCK_C=block_cc)
    out = torch.empty_like(c)
    if shortcut is not None:
        shortcut, (ssb, ssc, sshw) = _strides(shortcut, c)
    else:
        ssb = ssc = sshw = 0
    _affine_kernel[(B, triton.cdiv(C, block_c), triton.cdiv(HW, block_hw))](
        c, a, d, c, a, _vec_or(shortcut, c), out, C, HW, sxb, sxc, sxhw, 0, 0, 0, ssb, ssc, sshw,
        *_flat_strides(out), C, C, 0,
        HAS_Y=False, HAS_S=shortcut is not None, RELU=relu, ACC=ACC, BLOCK_C=block_c, BLOCK_HW=block_hw)
    if not batch_stats:  # the op returns no batch statistics (two distinct empty tensors: outputs must not alias)
        mean, var = c.new_empty(0, dtype=acc), c.new_empty(0, dtype=acc)
    return out, centered, mean, var


def backward(grad: torch.Tensor, out: Optional[torch.Tensor], c: torch.Tensor, centered: torch.Tensor,
             mean: torch.Tensor, var: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
             eca_weight: torch.Tensor, mask: Optional[torch.Tensor], eps: float, batch_stats: bool
             ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor],
                        torch.Tensor]:
    """Gradients of ``forward``: ``(d_c, g, d_weight, d_bias, d_eca)`` with ``g = grad * (out > 0)`` the
    shortcut's gradient (None without ReLU, ``out`` None: it is ``grad`` itself)."""
    B, C, H, W = c.shape
    HW = H * W
    acc, ACC = _acc(c)
    c, (scb, scc, schw) = _strides(c, c)
    grad, (sgb, sgc, sghw) = _strides(grad, c)
    relu = out is not None
    if relu:
        out, (sob, soc, sohw) = _strides(out, c)
        g = torch.empty_like(c)
    else:
        sob = soc = sohw = 0
        g = None
    total = torch.empty(B, C, device=c.device, dtype=acc)
    dot = torch.empty_like(total)
    block_c, block_hw = _tile(C, HW, scc == 1)
    _grad_sums_kernel[(B, triton.cdiv(C, block_c))](
        grad, _vec_or(out, c), c, mean, _vec_or(g, c), total, dot, C, HW, sgb, sgc, sghw, sob, soc, sohw,
        scb, scc, schw, RELU=relu, ACC=ACC, BLOCK_C=block_c, BLOCK_HW=block_hw)
    mean_bc = centered + mean  # the gate recomputation reads the plain means
    block_b, block_cc = _bc_tile(B, _SAMPLE_TILE)
    grid = (triton.cdiv(B, block_b), triton.cdiv(C, block_cc))
    gate = torch.empty_like(total)
    d_conv = torch.empty_like(total)
    K = eca_weight.numel()
    d_eca_parts = torch.empty(grid[0] * grid[1], K, device=c.device, dtype=acc)
    flags = dict(HAS_W=weight is not None, HAS_BIAS=bias is not None, K=K, ACC=ACC)
    _gate_backward_kernel[grid](
        mean_bc, mean, var, _vec_or(weight, mean), _vec_or(bias, mean), eca_weight, _vec_or(mask, mean), total, dot,
        gate, d_conv, d_eca_parts, B, C, eps, HAS_MASK=mask is not None, BLOCK_B=block_b, BLOCK_C=block_cc, **flags)
    alpha = torch.empty_like(total)
    offset = torch.empty_like(total)
    beta = torch.empty(C, device=c.device, dtype=acc)
    d_weight = torch.empty(C, device=c.device, dtype=acc) if weight is not None else None
    d_bias = torch.empty(C, device=c.device, dtype=acc) if bias is not None else None
    block_b, block_cc = _bc_tile(B, _CHANNEL_TILE)
    _channel_backward_kernel[(triton.cdiv(C, block_cc),)](
        centered, mean, var, _vec_or(weight, mean), _vec_or(bias, mean), eca_weight, total, dot, gate, d_conv, alpha,
        offset, beta, _vec_or(d_weight, beta), _vec_or(d_bias, beta), B, C, HW, eps, BATCH_STATS=batch_stats,
        BLOCK_B=block_b, BLOCK_C=block_cc, **flags)
    d_c = torch.empty_like(c)
    x, (sxb, sxc, sxhw) = (g, (scb, scc, schw)) if relu else (grad, (sgb, sgc, sghw))
    # d_c = alpha * x + offset (+ beta * c), written in c's layout
    _affine_kernel[(B, triton.cdiv(C, block_c), triton.cdiv(HW, block_hw))](
        x, alpha, offset, c, beta, c, d_c, C, HW, sxb, sxc, sxhw, scb, scc, schw, 0, 0, 0, *_flat_strides(d_c),
        C, C, 0, HAS_Y=batch_stats, HAS_S=False, RELU=False, ACC=ACC, BLOCK_C=block_c, BLOCK_HW=block_hw)
    return d_c, g, d_weight, d_bias, d_eca_parts.sum(0)
