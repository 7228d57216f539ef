"""Triton kernels of the fused BatchNorm -> ECA -> residual step (the CUDA path of ``fused.bn_eca_residual``);
``_triton_launch`` launches them.

Full-size tensors are [B, C, H, W] in any layout whose H, W flatten to one stride (NCHW and channels_last); each
kernel reads them at most once per pass, in their own dtype, and accumulates in float32 (float64 for float64).

forward:  ``plane_stats`` (per-(sample, channel) mean and centered sum of squares, one read of ``c``)
          -> ``channel_stats`` (BatchNorm's batch mean and variance from those, training only)
          -> ``gate`` (ECA's pooled input, k-tap channel conv, sigmoid, drop path: the [B, C] factors A, D)
          -> ``affine`` (``out = relu?(shortcut + A * c + D)``: one read of ``c`` and the shortcut, one write)
backward: ``grad_sums`` (``g = grad * (out > 0)`` and its per-(sample, channel) sums with ``c``, one read each)
          -> ``gate_backward`` and ``channel_backward`` (all of ECA's and BatchNorm's [B, C] and [C] terms)
          -> ``affine`` (``d_c = alpha * g + beta * c + offset``)
A plain ResNet block pays the same full-size passes for BatchNorm, the add and the ReLU.
"""
import triton
import triton.language as tl


@triton.jit
def _plane_stats_kernel(x_ptr, mean_ptr, m2_ptr, C, HW, sxb, sxc, sxhw,
                        NEED_M2: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    base = x_ptr + b * sxb + cs[None, :].to(tl.int64) * sxc
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    count = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, HW, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        ok = (hw < HW)[:, None] & c_ok[None, :]
        x = tl.load(base + hw[:, None].to(tl.int64) * sxhw, mask=ok, other=0.).to(ACC)
        if NEED_M2:  # Chan et al.'s merge of this chunk's mean and centered squares into the running ones
            n_chunk = tl.sum((hw < HW).to(ACC), 0)
            chunk_mean = tl.sum(x, 0) / n_chunk
            d = tl.where(ok, x - chunk_mean[None, :], 0.)
            n_new = count + n_chunk
            delta = chunk_mean - mean
            mean += delta * (n_chunk / n_new)
            m2 += tl.sum(d * d, 0) + delta * delta * (count * n_chunk / n_new)
            count = n_new
        else:
            mean += tl.sum(x, 0)
    if not NEED_M2:
        mean = mean / HW
    out = b * C + cs
    tl.store(mean_ptr + out, mean, mask=c_ok)
    if NEED_M2:
        tl.store(m2_ptr + out, m2, mask=c_ok)


@triton.jit
def _channel_stats_kernel(mean_bc_ptr, m2_bc_ptr, mean_ptr, var_ptr, B, C, HW,
                          ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """BatchNorm's batch mean and (biased) variance per channel from the per-(sample, channel) ones."""
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    total = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, B, BLOCK_B):
        bs = start + tl.arange(0, BLOCK_B)
        ok = (bs < B)[:, None] & c_ok[None, :]
        total += tl.sum(tl.load(mean_bc_ptr + bs[:, None] * C + cs[None, :], mask=ok, other=0.), 0)
    mean = total / B
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, B, BLOCK_B):
        bs = start + tl.arange(0, BLOCK_B)
        ok = (bs < B)[:, None] & c_ok[None, :]
        idx = bs[:, None] * C + cs[None, :]
        d = tl.where(ok, tl.load(mean_bc_ptr + idx, mask=ok, other=0.) - mean[None, :], 0.)
        m2 += tl.sum(tl.load(m2_bc_ptr + idx, mask=ok, other=0.) + HW * d * d, 0)
    tl.store(mean_ptr + cs, mean, mask=c_ok)
    tl.store(var_ptr + cs, m2 / (B * HW), mask=c_ok)


@triton.jit
def _bn_terms(cs, c_ok, mean_ptr, var_ptr, w_ptr, bias_ptr, eps,
              HAS_W: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr):
    """BatchNorm's per-channel mean, 1/std, scale and bias at channels ``cs`` (0 outside)."""
    mean = tl.load(mean_ptr + cs, mask=c_ok, other=0.).to(ACC)
    invstd = 1. / tl.sqrt(tl.load(var_ptr + cs, mask=c_ok, other=1.).to(ACC) + eps)
    scale = invstd
    if HAS_W:
        scale = scale * tl.load(w_ptr + cs, mask=c_ok, other=0.).to(ACC)
    bias = tl.zeros_like(scale)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cs, mask=c_ok, other=0.).to(ACC)
    return mean, invstd, scale, bias


@triton.jit
def _pooled(bs, b_ok, cj, C, mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eps,
            HAS_W: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr):
    """ECA's pooled input, the spatial mean of the BatchNorm output ``(mean_bc - mean) * scale + bias``, at samples
    ``bs`` and channels ``cj`` (0 outside: the channel conv's zero padding)."""
    cj_ok = (cj >= 0) & (cj < C)
    mean, invstd, scale, bias = _bn_terms(cj, cj_ok, mean_ptr, var_ptr, w_ptr, bias_ptr, eps, HAS_W, HAS_BIAS, ACC)
    ok = b_ok[:, None] & cj_ok[None, :]
    m_bc = tl.load(mean_bc_ptr + bs[:, None] * C + cj[None, :], mask=ok, other=0.).to(ACC)
    return tl.where(ok, (m_bc - mean[None, :]) * scale[None, :] + bias[None, :], 0.)


@triton.jit
def _gate_logits(bs, b_ok, cs, C, mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eca_ptr, eps,
                 HAS_W: tl.constexpr, HAS_BIAS: tl.constexpr, K: tl.constexpr, ACC: tl.constexpr):
    """ECA's conv over the pooled BatchNorm output, ``sum_j eca[j] * pooled[b, c + j - (K - 1) // 2]`` (zero
    padded), for a [BLOCK_B, BLOCK_C] tile."""
    acc = tl.zeros([bs.shape[0], cs.shape[0]], dtype=ACC)
    for j in tl.static_range(K):
        pooled = _pooled(bs, b_ok, cs + (j - (K - 1) // 2), C, mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eps,
                         HAS_W, HAS_BIAS, ACC)
        acc += tl.load(eca_ptr + j).to(ACC) * pooled
    return acc


@triton.jit
def _gate_kernel(mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eca_ptr, mask_ptr, a_ptr, d_ptr, cm_ptr,
                 B, C, eps, HAS_W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, K: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """The forward's per-(sample, channel) factors: ``out = A * c + D (+ shortcut)``, and ``c``'s centered mean."""
    bs = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b_ok, c_ok = bs < B, cs < C
    ok = b_ok[:, None] & c_ok[None, :]
    gate = tl.sigmoid(_gate_logits(bs, b_ok, cs, C, mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eca_ptr, eps,
                                   HAS_W, HAS_BIAS, K, ACC))
    if HAS_MASK:
        gate = gate * tl.load(mask_ptr + bs, mask=b_ok, other=0.).to(ACC)[:, None]
    mean, invstd, scale, bias = _bn_terms(cs, c_ok, mean_ptr, var_ptr, w_ptr, bias_ptr, eps, HAS_W, HAS_BIAS, ACC)
    idx = bs[:, None] * C + cs[None, :]
    tl.store(a_ptr + idx, gate * scale[None, :], mask=ok)
    tl.store(d_ptr + idx, gate * (bias - mean * scale)[None, :], mask=ok)
    m_bc = tl.load(mean_bc_ptr + idx, mask=ok, other=0.).to(ACC)
    tl.store(cm_ptr + idx, m_bc - mean[None, :], mask=ok)


@triton.jit
def _affine_kernel(x_ptr, a_ptr, d_ptr, y_ptr, q_ptr, s_ptr, out_ptr, C, HW,
                   sxb, sxc, sxhw, syb, syc, syhw, ssb, ssc, sshw, sob, soc, sohw, sab, sdb, sqb,
                   HAS_Y: tl.constexpr, HAS_S: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """``out = relu?(A[b, c] * x + D[b, c] (+ Q[b, c] * y) (+ s))`` over [B, C, HW] tensors of any strides; A, D, Q
    are rows of C values, ``sab``/``sdb``/``sqb`` apart per sample (0 broadcasts one row)."""
    b = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = (tl.program_id(2) * BLOCK_HW + tl.arange(0, BLOCK_HW)).to(tl.int64)
    c_ok = cs < C
    ok = (hw < HW)[:, None] & c_ok[None, :]
    cs64 = cs.to(tl.int64)
    a = tl.load(a_ptr + b * sab + cs, mask=c_ok, other=0.).to(ACC)
    d = tl.load(d_ptr + b * sdb + cs, mask=c_ok, other=0.).to(ACC)
    x = tl.load(x_ptr + b * sxb + cs64[None, :] * sxc + hw[:, None] * sxhw, mask=ok, other=0.).to(ACC)
    acc = x * a[None, :] + d[None, :]
    if HAS_Y:
        q = tl.load(q_ptr + b * sqb + cs, mask=c_ok, other=0.).to(ACC)
        y = tl.load(y_ptr + b * syb + cs64[None, :] * syc + hw[:, None] * syhw, mask=ok, other=0.).to(ACC)
        acc += y * q[None, :]
    if HAS_S:
        acc += tl.load(s_ptr + b * ssb + cs64[None, :] * ssc + hw[:, None] * sshw, mask=ok, other=0.).to(ACC)
    if RELU:
        acc = tl.where(acc < 0, 0., acc)  # keeps NaN, like torch.relu
    tl.store(out_ptr + b * sob + cs64[None, :] * soc + hw[:, None] * sohw, acc.to(out_ptr.dtype.element_ty),
             mask=ok)


@triton.jit
def _grad_sums_kernel(grad_ptr, out_ptr, c_ptr, mean_ptr, g_ptr, total_ptr, dot_ptr, C, HW,
                      sgb, sgc, sghw, sob, soc, sohw, scb, scc, schw,
                      RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """``g = grad * (out > 0)`` (written in c's layout) and ``sum_hw g``, ``sum_hw g * (c - mean)`` per (b, c)."""
    b = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    cs64 = cs.to(tl.int64)
    mean = tl.load(mean_ptr + cs, mask=c_ok, other=0.).to(ACC)
    total = tl.zeros([BLOCK_C], dtype=ACC)
    dot = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, HW, BLOCK_HW):
        hw = (start + tl.arange(0, BLOCK_HW)).to(tl.int64)
        ok = (hw < HW)[:, None] & c_ok[None, :]
        c_off = b * scb + cs64[None, :] * scc + hw[:, None] * schw
        grad = tl.load(grad_ptr + b * sgb + cs64[None, :] * sgc + hw[:, None] * sghw, mask=ok, other=0.)
        if RELU:
            out = tl.load(out_ptr + b * sob + cs64[None, :] * soc + hw[:, None] * sohw, mask=ok, other=0.)
            grad = tl.where(out > 0, grad, 0.)
            tl.store(g_ptr + c_off, grad.to(g_ptr.dtype.element_ty), mask=ok)
        grad = grad.to(ACC)
        c = tl.load(c_ptr + c_off, mask=ok, other=0.).to(ACC)
        total += tl.sum(grad, 0)
        dot += tl.sum(tl.where(ok, grad * (c - mean[None, :]), 0.), 0)
    out_idx = b * C + cs
    tl.store(total_ptr + out_idx, total, mask=c_ok)
    tl.store(dot_ptr + out_idx, dot, mask=c_ok)


@triton.jit
def _gate_backward_kernel(mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eca_ptr, mask_ptr, total_ptr, dot_ptr,
                          gate_ptr, dconv_ptr, deca_ptr, B, C, eps,
                          HAS_W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, K: tl.constexpr,
                          ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per (b, c): the gate, the gradient at ECA's conv output, and this tile's share of ECA's weight gradient."""
    pid_b, pid_c = tl.program_id(0), tl.program_id(1)
    bs = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    b_ok, c_ok = bs < B, cs < C
    ok = b_ok[:, None] & c_ok[None, :]
    sig = tl.sigmoid(_gate_logits(bs, b_ok, cs, C, mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eca_ptr, eps,
                                  HAS_W, HAS_BIAS, K, ACC))
    mask = tl.full([BLOCK_B], 1., ACC)
    if HAS_MASK:
        mask = tl.load(mask_ptr + bs, mask=b_ok, other=0.).to(ACC)
    mean, invstd, scale, bias = _bn_terms(cs, c_ok, mean_ptr, var_ptr, w_ptr, bias_ptr, eps, HAS_W, HAS_BIAS, ACC)
    idx = bs[:, None] * C + cs[None, :]
    total = tl.load(total_ptr + idx, mask=ok, other=0.)
    d_gate = tl.load(dot_ptr + idx, mask=ok, other=0.) * scale[None, :] + total * bias[None, :]
    d_conv = tl.where(ok, d_gate * mask[:, None] * sig * (1. - sig), 0.)
    tl.store(gate_ptr + idx, sig * mask[:, None], mask=ok)
    tl.store(dconv_ptr + idx, d_conv, mask=ok)
    # d eca[j] = sum_{b, c} pooled[b, c + j - pad] * d_conv[b, c]
    n_prog = tl.num_programs(1)
    for j in tl.static_range(K):
        pooled = _pooled(bs, b_ok, cs + (j - (K - 1) // 2), C, mean_bc_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eps,
                         HAS_W, HAS_BIAS, ACC)
        tl.store(deca_ptr + (pid_b * n_prog + pid_c) * K + j, tl.sum(tl.sum(pooled * d_conv, 1), 0))


@triton.jit
def _d_pooled(bs, b_ok, cs, C, dconv_ptr, eca_ptr, K: tl.constexpr, ACC: tl.constexpr):
    """The channel conv's input gradient: ``sum_j eca[j] * d_conv[b, c - j + pad]`` (the flipped kernel)."""
    acc = tl.zeros([bs.shape[0], cs.shape[0]], dtype=ACC)
    for j in tl.static_range(K):
        cj = cs - (j - (K - 1) // 2)
        ok = b_ok[:, None] & ((cj >= 0) & (cj < C))[None, :]
        acc += tl.load(eca_ptr + j).to(ACC) * tl.load(dconv_ptr + bs[:, None] * C + cj[None, :], mask=ok, other=0.)
    return acc


@triton.jit
def _channel_backward_kernel(cm_ptr, mean_ptr, var_ptr, w_ptr, bias_ptr, eca_ptr, total_ptr, dot_ptr, gate_ptr,
                             dconv_ptr, alpha_ptr, offset_ptr, beta_ptr, dw_ptr, db_ptr, B, C, HW, eps,
                             HAS_W: tl.constexpr, HAS_BIAS: tl.constexpr, BATCH_STATS: tl.constexpr,
                             K: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """BatchNorm's backward per channel: with ``g' = gate * g + d_pooled / HW`` the gradient at BatchNorm's output,
    ``d_c = alpha * g + beta * c + offset`` and the affine gradients, from sums over samples of [B, C] terms."""
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    mean, invstd, scale, bias = _bn_terms(cs, c_ok, mean_ptr, var_ptr, w_ptr, bias_ptr, eps, HAS_W, HAS_BIAS, ACC)
    sum_g = tl.zeros([BLOCK_C], dtype=ACC)
    sum_gc = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, B, BLOCK_B):
        bs = start + tl.arange(0, BLOCK_B)
        b_ok = bs < B
        ok = b_ok[:, None] & c_ok[None, :]
        idx = bs[:, None] * C + cs[None, :]
        d_pooled = _d_pooled(bs, b_ok, cs, C, dconv_ptr, eca_ptr, K, ACC)
        gate = tl.load(gate_ptr + idx, mask=ok, other=0.)
        sum_g += tl.sum(gate * tl.load(total_ptr + idx, mask=ok, other=0.) + d_pooled, 0)
        sum_gc += tl.sum(gate * tl.load(dot_ptr + idx, mask=ok, other=0.)
                         + d_pooled * tl.load(cm_ptr + idx, mask=ok, other=0.), 0)
    if HAS_W:
        tl.store(dw_ptr + cs, sum_gc * invstd, mask=c_ok)
    if HAS_BIAS:
        tl.store(db_ptr + cs, sum_g, mask=c_ok)
    n = B * HW
    beta = tl.zeros_like(scale)
    shift = tl.zeros_like(scale)
    if BATCH_STATS:
        beta = -scale * invstd * invstd * sum_gc / n
        shift = -scale * sum_g / n - beta * mean
        tl.store(beta_ptr + cs, beta, mask=c_ok)
    for start in range(0, B, BLOCK_B):
        bs = start + tl.arange(0, BLOCK_B)
        b_ok = bs < B
        ok = b_ok[:, None] & c_ok[None, :]
        idx = bs[:, None] * C + cs[None, :]
        d_pooled = _d_pooled(bs, b_ok, cs, C, dconv_ptr, eca_ptr, K, ACC)
        tl.store(alpha_ptr + idx, tl.load(gate_ptr + idx, mask=ok, other=0.) * scale[None, :], mask=ok)
        tl.store(offset_ptr + idx, d_pooled * (scale / HW)[None, :] + shift[None, :], mask=ok)
