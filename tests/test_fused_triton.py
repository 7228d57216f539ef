"""The Triton kernels of the fused ECA step against the plain reference: outputs, every gradient and BatchNorm's
running statistics, NCHW and channels_last, train and eval, drop path, with and without a shortcut.

On CUDA they run as compiled kernels; elsewhere in Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest),
which here has float64, float32 and float16 but no bfloat16.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from timm.models.resnet import Bottleneck
from torch import nn

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.layers import fused
from eca_timm.layers.eca import EcaLayer
from eca_timm.models.eca_mobilenetv2 import EcaInvertedResidual
from eca_timm.models.eca_resnet import EcaBasicBlock, EcaBottleneck, EcaResNet
from eca_timm.layers.fused import bn_eca_residual, fused_backend
from fused_reference import (SMALL, RefEca, assert_close, assert_same_step, check_batch_norm_variant, max_rel,
                             randomize_bn, ref_eca, ref_inverted_residual, ref_resnet, run, saved_bytes)

pytestmark = pytest.mark.skipif(
    not fused.triton_available(),
    reason='Triton is not installed (a CPU-only torch): the Triton kernels cannot run; the torch path is tested in '
           'test_fast_eca.py')

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.fixture(autouse=True)
def triton_backend():
    with fused_backend('triton'):
        yield


def _to(*ts, dtype=torch.float64, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [t.to(DEVICE, dtype).to(memory_format=fmt) for t in ts]


@pytest.mark.parametrize('block', [EcaBasicBlock, EcaBottleneck])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_resnet_matches_reference(block, training, channels_last):
    """Whole ECA-ResNets in float64 (drop path, downsample shortcuts, the fused ReLU): the same math to 1e-10."""
    torch.manual_seed(0)
    model = EcaResNet(block=block, drop_path_rate=0.2, **SMALL)
    randomize_bn(model)
    ref = ref_resnet(model, block.__bases__[0], drop_path_rate=0.2)
    model, ref, x = _to(model, ref, torch.randn(3, 3, 32, 32), channels_last=channels_last)
    model.train(training)
    ref.train(training)
    assert_close(run(model, x), run(ref, x), 1e-10)
    ref_buffers = dict(ref.named_buffers())
    for name, buf in model.named_buffers():
        torch.testing.assert_close(buf, ref_buffers[name], rtol=1e-12, atol=1e-12)
    if channels_last:
        assert model.forward_features(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('block', [EcaBasicBlock, EcaBottleneck])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_resnet_fp32_within_1e5(block, training):
    torch.manual_seed(1)  # weights with no ReLU input within float32 rounding of 0 (see test_model_matches_torch_path)
    model = EcaResNet(block=block, **SMALL).train(training)
    randomize_bn(model)
    ref = ref_resnet(model, block.__bases__[0]).train(training)
    model, ref, x = _to(model, ref, torch.randn(2, 3, 64, 64), dtype=torch.float32, channels_last=True)
    assert_close(run(model, x), run(ref, x), 1e-5)
    with torch.inference_mode():
        assert max_rel(model(x), ref(x)) < 1e-5


@pytest.mark.parametrize('in_chs,out_chs,stride,exp', [(8, 8, 1, 6.), (8, 16, 2, 6.), (8, 8, 1, 1.)],
                         ids=['skip', 'no-skip', 'no-expansion'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_inverted_residual_matches_reference(in_chs, out_chs, stride, exp, training, channels_last):
    torch.manual_seed(0)
    blk = EcaInvertedResidual(in_chs, out_chs, stride=stride, exp_ratio=exp, eca_kernel_size=3)
    randomize_bn(blk)
    ref = copy.deepcopy(blk)
    blk, ref, x = _to(blk, ref, torch.randn(2, in_chs, 8, 8), channels_last=channels_last)
    blk.train(training)
    ref.train(training)
    assert_same_step(blk, blk, ref, lambda x: ref_inverted_residual(ref, x), x)
    for a, b in zip(blk.buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('shape,k', [((20, 40, 17, 23), 7), ((70, 70, 1, 1), 3), ((5, 9, 12, 12), 1)],
                         ids=['many-chunks', '1x1', 'k1'])
@pytest.mark.parametrize('relu,with_shortcut', [(True, True), (False, True), (False, False)],
                         ids=['relu-shortcut', 'shortcut', 'plain'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_op_shapes_layouts_and_relu(shape, k, relu, with_shortcut, channels_last):
    """Shapes that take several chunks per plane, several sample tiles and channel blocks (and more samples than a
    per-channel tile), 1x1 planes and k=1;
    the gradient reaching the step in another layout than its input (as after a reshape)."""
    torch.manual_seed(0)
    bn, eca = nn.BatchNorm2d(shape[1]).train(), EcaLayer(shape[1], k)
    randomize_bn(bn)
    r_bn, r_eca = copy.deepcopy(bn), RefEca(eca.conv.weight)
    bn, eca, r_bn, r_eca = _to(bn, eca, r_bn, r_eca)
    c, shortcut = _to(torch.randn(shape) * 3 + 1, torch.randn(shape), channels_last=channels_last)
    c1, c2 = c.clone().requires_grad_(), c.clone().requires_grad_()
    s1, s2 = shortcut.clone().requires_grad_(), shortcut.clone().requires_grad_()
    act = nn.ReLU(inplace=True) if relu else None
    out = bn_eca_residual(c1, bn, eca, s1 if with_shortcut else None, act=act)
    r_out = r_eca(r_bn(c2)) + (s2 if with_shortcut else 0)
    r_out = r_out.relu() if relu else r_out
    grad = torch.randn(shape, dtype=torch.float64, device=DEVICE)  # NCHW whatever the input's layout
    out.backward(grad)
    r_out.backward(grad)
    assert out.stride() == c.stride()
    pairs = [(out, r_out), (c1.grad, c2.grad), (eca.conv.weight.grad, r_eca.weight.grad),
             *zip([p.grad for p in bn.parameters()], [p.grad for p in r_bn.parameters()])]
    if with_shortcut:
        pairs.append((s1.grad, s2.grad))
    for a, b in pairs:
        assert max_rel(a, b) < 1e-10
    for a, b in zip(bn.buffers(), r_bn.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('bn_kwargs', [dict(affine=False), dict(track_running_stats=False), dict(momentum=None)],
                         ids=['no-affine', 'no-running-stats', 'cumulative-average'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_batch_norm_variants(bn_kwargs, training):
    """The BatchNorm options that change its forward or backward, against nn.BatchNorm2d's autograd."""
    check_batch_norm_variant(bn_kwargs, training, place=_to)


def test_training_batch_of_one_value_per_channel_is_refused_like_batch_norm():
    bn, eca = _to(nn.BatchNorm2d(4).train(), EcaLayer(4, 3))
    with pytest.raises(ValueError, match='Expected more than 1 value per channel when training'):
        bn_eca_residual(torch.randn(1, 4, 1, 1, dtype=torch.float64, device=DEVICE), bn, eca, None)


@pytest.mark.parametrize('dtype', [torch.float16] + ([torch.bfloat16] if DEVICE == 'cuda' else []))
def test_half_precision_no_further_from_exact_than_plain(dtype):
    """fp16 (and bf16 on CUDA) in and out: as close to the float64 result as the plain half-precision step, for the
    output and every gradient (the kernels accumulate in float32 and round once). No ReLU here: half-precision
    rounding flips its mask wherever the sum is within rounding of 0, in either computation."""
    torch.manual_seed(0)
    bn, eca = nn.BatchNorm2d(32).train(), EcaLayer(32, 5)
    randomize_bn(bn)
    c, shortcut, grad = torch.randn(4, 32, 14, 14) * 2 + 0.5, torch.randn(4, 32, 14, 14), torch.randn(4, 32, 14, 14)

    def step(bn, eca, c, shortcut, grad, fused_step):
        c, shortcut = c.clone().requires_grad_(), shortcut.clone().requires_grad_()
        if fused_step:
            out = bn_eca_residual(c, bn, eca, shortcut)
        else:
            out = ref_eca(bn(c), eca.conv.weight.to(c.dtype)) + shortcut
        out.backward(grad)
        return [out, c.grad, shortcut.grad, eca.conv.weight.grad, bn.weight.grad, bn.bias.grad]

    exact = step(*_to(copy.deepcopy(bn), copy.deepcopy(eca), c, shortcut, grad), fused_step=False)
    half_in = [t.to(DEVICE, dtype) for t in (c, shortcut, grad)]
    fast = step(*_to(copy.deepcopy(bn), copy.deepcopy(eca), dtype=torch.float32), *half_in, fused_step=True)
    plain = step(*_to(copy.deepcopy(bn), copy.deepcopy(eca), dtype=torch.float32), *half_in, fused_step=False)
    assert fast[0].dtype == dtype and fast[1].dtype == dtype
    fast_err = [max_rel(a, b) for a, b in zip(fast, exact)]
    plain_err = [max_rel(a, b) for a, b in zip(plain, exact)]
    assert max(fast_err) < 0.01
    for name, f, p in zip(['out', 'd_c', 'd_shortcut', 'd_eca', 'd_weight', 'd_bias'], fast_err, plain_err):
        assert f <= 1.05 * p + 1e-4, (name, f, p)


def test_model_matches_torch_path():
    """A registered model end to end (the CIFAR-stem study model, drop path, every block fused): Triton kernels
    against the torch ops in float64. (In float32 a ReLU whose input is within rounding of 0 may fall either way
    in two correct computations, so whole-model float32 gradients are compared where no such flip occurs, in
    test_resnet_fp32_within_1e5.)"""
    torch.manual_seed(0)
    model = timm.create_model('eca_resnet18_cifar', num_classes=10, drop_path_rate=0.1)
    randomize_bn(model)
    ref = copy.deepcopy(model)
    model, ref, x = _to(model, ref, torch.randn(4, 3, 32, 32), channels_last=True)
    fast = run(model, x, seed=3)
    with fused_backend('torch'):
        slow = run(ref, x, seed=3)
    assert_close(fast, slow, 1e-8)  # BatchNorm over 64 values (layer4) amplifies float64 rounding to ~1e-9


def test_keeps_no_more_than_plain_resnet():
    """Saved for backward: what a plain ResNet keeps (the conv output and the block output) plus [B, C] vectors."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    plain = timm.create_model('resnet50', layers=(1, 1, 1, 1), num_classes=5).to(DEVICE)
    ours = EcaResNet(block=EcaBottleneck, layers=(1, 1, 1, 1), num_classes=5).to(DEVICE)
    assert saved_bytes(ours, x) <= saved_bytes(plain, x) * 1.03


def test_compile_keeps_the_ops_whole_and_matches_eager():
    torch.manual_seed(0)
    model = EcaResNet(block=EcaBottleneck, drop_path_rate=0.2, **SMALL)
    randomize_bn(model)
    ref = ref_resnet(model, Bottleneck, drop_path_rate=0.2)
    model, ref, x = _to(model, ref, torch.randn(2, 3, 32, 32), channels_last=True)
    explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    graph = '\n'.join(str(g.graph) for g in explained.graphs)
    assert graph.count('eca_timm.bn_eca_residual') == 4  # one op per block
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    assert_close(run(compiled, x), run(ref, x), 1e-10)


def test_inductor_compiled_block_matches_reference():
    """Inductor (timm's --torchcompile) calls the op as an extern kernel, trusting the fake kernel's strides."""
    torch.manual_seed(0)
    blk = EcaBottleneck(16, 4, drop_path=None)
    blk.se = EcaLayer(16, kernel_size=5)
    randomize_bn(blk)
    ref = copy.deepcopy(blk)
    ref.forward = Bottleneck.forward.__get__(ref)
    ref.se = RefEca(blk.se.conv.weight)
    blk, ref, x = _to(blk, ref, torch.randn(3, 16, 8, 8), channels_last=True)
    compiled = torch.compile(blk, fullgraph=True)
    assert_same_step(blk, compiled, ref, ref, x)


def test_opcheck_fake_kernel_and_autograd_registration():
    """torch.library.opcheck: schema, fake (meta) kernel, autograd registration and AOT dispatch agree with the op."""
    torch.manual_seed(0)
    c, shortcut = _to(torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4), channels_last=True)
    weight, bias, eca_w = _to(torch.rand(6) + 0.5, torch.randn(6), torch.randn(1, 1, 3))
    mask = torch.tensor([0., 2.], dtype=torch.float64, device=DEVICE)
    running = _to(torch.randn(6) * 0.1, torch.rand(6) + 0.5)
    for stats in ([None, None], running):
        args = (c.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), eca_w.requires_grad_(),
                shortcut.requires_grad_(), mask, *stats, 1e-5, True)
        torch.library.opcheck(torch.ops.eca_timm.bn_eca_residual.default, args)


def test_dispatch_rule():
    """'auto' sends CUDA tensors in NCHW or channels_last to the kernels and everything else to the torch ops."""
    t = torch.randn(2, 4, 3, 3)
    with fused_backend('auto'):
        assert not fused._uses_triton(t)  # CPU
    assert fused._uses_triton(t) and fused._uses_triton(t.to(memory_format=torch.channels_last))
    assert not fused._uses_triton(t.permute(0, 1, 3, 2))  # neither layout: torch ops
    assert not fused._uses_triton(t.int())
    with fused_backend('torch'):
        assert not fused._uses_triton(t)
    with pytest.raises(ValueError, match='fused ECA backend must be one of auto, torch, triton'):
        fused.set_fused_backend('cuda')
    with pytest.raises(ValueError, match='must be one of'):
        with fused_backend('gpu'):
            pass


def test_plain_blocks_and_other_layouts_take_the_torch_ops():
    """A permuted (neither NCHW nor channels_last) conv output is computed by the torch ops, same values."""
    torch.manual_seed(0)
    bn, eca = _to(nn.BatchNorm2d(6).eval(), EcaLayer(6, 3))
    randomize_bn(bn)
    c = torch.randn(2, 6, 5, 5, dtype=torch.float64, device=DEVICE).permute(0, 1, 3, 2)
    out = bn_eca_residual(c, bn, eca, None)
    assert max_rel(out, ref_eca(bn(c), eca.conv.weight)) < 1e-12


def test_package_runs_without_triton(tmp_path):
    """A CPU-only torch has no Triton: eca_timm imports, reports it, and trains on the torch ops."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, timm, eca_timm\n"
        "from eca_timm.layers import fused\n"
        "assert not fused.triton_available()\n"
        "try:\n"
        "    fused.set_fused_backend('triton')\n"
        "except RuntimeError as e:\n"
        "    print('REFUSED', e)\n"
        "m = timm.create_model('eca_resnet18', num_classes=3)\n"
        "m(torch.randn(2, 3, 32, 32)).sum().backward()\n"
        "print('TRAINED')\n")
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'REFUSED fused ECA backend triton: Triton kernels are not available here' in proc.stdout
    assert 'TRAINED' in proc.stdout


def test_flat_layouts_of_the_kernels():
    """The kernels index [B, C, H, W] by (sample, channel, pixel) strides: NCHW and channels_last flatten, a
    transposed H, W does not (and is copied by the launcher)."""
    from eca_timm.layers._triton_launch import _flat_strides
    t = torch.empty(2, 3, 4, 5)
    assert _flat_strides(t) == (60, 20, 1)
    assert _flat_strides(t.to(memory_format=torch.channels_last)) == (60, 1, 3)
    assert _flat_strides(t.transpose(2, 3)) is None
    assert _flat_strides(torch.empty(2, 3, 1, 1).expand(2, 3, 4, 5)) == (3, 1, 0)


def test_kernels_compile_for_nvidia_gpus_with_wide_loads():
    """Every kernel compiles to cubin for sm_90 (H100/H200) and sm_80 (A100) with bf16 activations, no GPU needed,
    and the full-size passes read and write with 128-bit accesses in both layouts (tests/triton_aot.py)."""
    from triton_aot import KERNELS, VARIANTS
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    script = os.path.join(os.path.dirname(__file__), 'triton_aot.py')
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r['kernel'] for r in rows} == {k.__name__ for k, *_ in KERNELS} and {r['arch'] for r in rows} == {80, 90}
    assert sum(r['layout'] == 'variant' for r in rows) == len(VARIANTS)
    for r in (r for r in rows if r['layout'] != 'variant'):
        if r['kernel'] in ('_plane_stats_kernel', '_affine_kernel', '_grad_sums_kernel'):
            assert r['ld_v4'] >= 2, r
        if r['kernel'] in ('_affine_kernel', '_grad_sums_kernel'):
            assert r['st_v4'] >= 2, r
