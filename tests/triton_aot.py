"""Compile every Triton kernel of ``eca_timm.layers._triton_kernels`` ahead of time for NVIDIA GPUs, without a GPU.

Run as a script (TRITON_INTERPRET unset, so the kernels are JIT functions): it compiles each kernel down to cubin for
sm_90 (H100/H200) and sm_80 (A100) with bf16 activations, specialized as Triton's JIT specializes a channels_last or
NCHW launch (unit strides as constants, 16-divisible pointers and sizes), and prints one JSON line per kernel with
the number of 128-bit global loads and stores in its PTX; then the other specializations (``VARIANTS``).
"""
import json
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from eca_timm.layers import _triton_kernels as ft

FULL_SIZE = {'x_ptr', 'y_ptr', 's_ptr', 'out_ptr', 'grad_ptr', 'c_ptr', 'g_ptr'}  # [B, C, H, W] in the model's dtype
ACC = dict(ACC=tl.float32)
# (kernel, constexprs, unit-stride args of a channels_last launch, of an NCHW launch)
KERNELS = [
    (ft._plane_stats_kernel, dict(NEED_M2=True, BLOCK_C=64, BLOCK_HW=32, **ACC), ('sxc',), ('sxhw',)),
    (ft._plane_stats_kernel, dict(NEED_M2=False, BLOCK_C=64, BLOCK_HW=32, **ACC), ('sxc',), ('sxhw',)),
    (ft._channel_stats_kernel, dict(BLOCK_B=64, BLOCK_C=16, **ACC), (), ()),
    (ft._gate_kernel, dict(HAS_W=True, HAS_BIAS=True, HAS_MASK=True, K=7, BLOCK_B=16, BLOCK_C=32, **ACC), (), ()),
    (ft._affine_kernel, dict(HAS_Y=False, HAS_S=True, RELU=True, BLOCK_C=64, BLOCK_HW=32, **ACC),
     ('sxc', 'ssc', 'soc'), ('sxhw', 'sshw', 'sohw')),
    (ft._affine_kernel, dict(HAS_Y=True, HAS_S=False, RELU=False, BLOCK_C=64, BLOCK_HW=32, **ACC),
     ('sxc', 'syc', 'soc'), ('sxhw', 'syhw', 'sohw')),
    (ft._grad_sums_kernel, dict(RELU=True, BLOCK_C=64, BLOCK_HW=32, **ACC), ('sgc', 'soc', 'scc'),
     ('sghw', 'sohw', 'schw')),
    (ft._gate_backward_kernel, dict(HAS_W=True, HAS_BIAS=True, HAS_MASK=True, K=7, BLOCK_B=16, BLOCK_C=32, **ACC),
     (), ()),
    (ft._channel_backward_kernel, dict(HAS_W=True, HAS_BIAS=True, BATCH_STATS=True, K=7, BLOCK_B=64, BLOCK_C=16,
                                       **ACC), (), ()),
]
# The other specializations a launch can take (no BatchNorm affine, no drop path, k=1, eval statistics, no ReLU, no
# shortcut), and fp16 / fp32 activations: sm_90, channels_last.
VARIANTS = [
    (ft._gate_kernel, dict(HAS_W=False, HAS_BIAS=False, HAS_MASK=False, K=1, BLOCK_B=16, BLOCK_C=32, **ACC), 'bf16'),
    (ft._gate_backward_kernel, dict(HAS_W=False, HAS_BIAS=False, HAS_MASK=False, K=1, BLOCK_B=16, BLOCK_C=32, **ACC),
     'bf16'),
    (ft._channel_backward_kernel, dict(HAS_W=False, HAS_BIAS=False, BATCH_STATS=False, K=3, BLOCK_B=64, BLOCK_C=16,
                                       **ACC), 'bf16'),
    (ft._affine_kernel, dict(HAS_Y=False, HAS_S=False, RELU=False, BLOCK_C=64, BLOCK_HW=32, **ACC), 'fp16'),
    (ft._affine_kernel, dict(HAS_Y=True, HAS_S=False, RELU=False, BLOCK_C=64, BLOCK_HW=32, **ACC), 'fp32'),
    (ft._grad_sums_kernel, dict(RELU=False, BLOCK_C=64, BLOCK_HW=32, **ACC), 'fp16'),
    (ft._plane_stats_kernel, dict(NEED_M2=True, BLOCK_C=64, BLOCK_HW=32, **ACC), 'fp32'),
    (ft._plane_stats_kernel, dict(NEED_M2=True, BLOCK_C=64, BLOCK_HW=32, ACC=tl.float64), 'fp64'),
]


def compile_kernel(kernel, constexprs, unit_strides, target: GPUTarget, dtype: str = 'bf16'):
    sig, attrs, consts = {}, {}, dict(constexprs)
    for i, name in enumerate(kernel.arg_names):
        if name in unit_strides:
            consts[name] = 1
        if name in consts:
            sig[name] = 'constexpr'
        elif name.endswith('_ptr'):
            sig[name] = f'*{dtype}' if name in FULL_SIZE else '*fp32'
            attrs[(i,)] = [['tt.divisibility', 16]]
        elif name == 'eps':
            sig[name] = 'fp32'
        else:
            sig[name] = 'i32'
            attrs[(i,)] = [['tt.divisibility', 16]]
    src = ASTSource(fn=kernel, signature=sig, attrs=attrs,
                    constexprs={(kernel.arg_names.index(n),): v for n, v in consts.items()})
    return triton.compile(src, target=target)


def main() -> int:
    for arch in (90, 80):
        for kernel, constexprs, cl_units, nchw_units in KERNELS:
            for layout, units in (('channels_last', cl_units), ('nchw', nchw_units)):
                if arch == 80 and layout == 'nchw':
                    continue
                ptx = compile_kernel(kernel, constexprs, units, GPUTarget('cuda', arch, 32)).asm['ptx']
                print(json.dumps(dict(kernel=kernel.__name__, arch=arch, layout=layout, constexprs=str(constexprs),
                                      ld_v4=ptx.count('ld.global.v4'), st_v4=ptx.count('st.global.v4'))),
                      flush=True)
    for kernel, constexprs, dtype in VARIANTS:
        ptx = compile_kernel(kernel, constexprs, (), GPUTarget('cuda', 90, 32), dtype=dtype).asm['ptx']
        print(json.dumps(dict(kernel=kernel.__name__, arch=90, layout='variant', constexprs=str(constexprs),
                              dtype=dtype, ld_v4=ptx.count('ld.global.v4'), st_v4=ptx.count('st.global.v4'))),
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
