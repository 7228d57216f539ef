"""The fused BatchNorm -> ECA -> residual step against the plain reference, on both of its paths.

The ``backend`` fixture runs each shared check with the torch ops and with the Triton kernels (on CUDA compiled;
elsewhere in Triton's interpreter, ``TRITON_INTERPRET=1`` set by conftest, which has float64, float32 and float16 but
no bfloat16). The reference (``fused_reference.py``) is the official formula inside timm's unfused
``BasicBlock``/``Bottleneck`` and a plain inverted residual. Checked: outputs, every gradient and BatchNorm's running
statistics in float64 to 1e-10 (NCHW and channels_last, train and eval, drop path, with and without a shortcut),
float32 within 1e-5, saved memory, torch.compile; then what only one path has.
"""
import copy
import json
import os
import statistics
import subprocess
import sys

import pytest
import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.layers import fused
from eca_timm.layers.eca import EcaLayer
from eca_timm.layers.fused import bn_eca_residual, conv_input_mean, fused_backend
from eca_timm.models.eca_mobilenetv2 import EcaInvertedResidual
from eca_timm.models.eca_resnet import EcaBasicBlock, EcaBottleneck, EcaResNet
from fused_reference import (SMALL, RefEca, assert_close, assert_same_step, check_batch_norm_variant, flat, max_rel,
                             randomize_bn, ref_eca, ref_inverted_residual, ref_resnet, run, saved_bytes)

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
NO_TRITON = 'Triton is not installed (a CPU-only torch): the Triton kernels cannot run'
needs_triton = pytest.mark.skipif(not fused.triton_available(), reason=NO_TRITON)


@pytest.fixture(params=['torch', 'triton'])
def backend(request):
    """The fused step's path under test: the torch ops, or the Triton kernels."""
    if request.param == 'triton' and not fused.triton_available():
        pytest.skip(NO_TRITON)
    with fused_backend(request.param):
        yield request.param


@pytest.fixture
def triton():
    """The Triton kernels, for the checks of what only that path has."""
    if not fused.triton_available():
        pytest.skip(NO_TRITON)
    with fused_backend('triton'):
        yield


def _to(*ts, dtype=torch.float64, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [t.to(DEVICE, dtype).to(memory_format=fmt) for t in ts]


# ---- both paths ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('block', [EcaBasicBlock, EcaBottleneck])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_resnet_matches_reference(backend, block, training, channels_last):
    """Whole ECA-ResNets in float64 (drop path, downsample shortcuts, the fused ReLU): the same math to 1e-10, the
    same running statistics, and the input's layout kept."""
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
def test_resnet_fp32_as_accurate_as_plain(backend, block, training):
    """float32: the output within 1e-5 of the plain float32 model's, and the output and every gradient no further
    from the float64 result than twice the plain float32 computation's error, plus 5e-6. (Float32 itself is up to
    7e-5 off on the small gradients, a BatchNorm bias's or a 3-tap ECA weight's sums: two correct float32
    computations differ there by more than 1e-5, whichever the seed.)"""
    torch.manual_seed(4)
    model = EcaResNet(block=block, **SMALL).train(training)
    randomize_bn(model)
    ref = ref_resnet(model, block.__bases__[0]).train(training)
    x = torch.randn(2, 3, 64, 64)
    exact = flat(run(*_to(copy.deepcopy(ref), x, channels_last=True)))
    model, ref, x = _to(model, ref, x, dtype=torch.float32, channels_last=True)
    fast, plain = flat(run(model, x)), flat(run(ref, x))
    assert max_rel(fast[0], plain[0]) < 1e-5
    for f, p, e in zip(fast, plain, exact):
        assert max_rel(f, e) <= 2 * max_rel(p, e) + 5e-6
    with torch.inference_mode():  # the no-grad path (in place on the torch ops)
        assert max_rel(model(x), ref(x)) < 1e-5


@pytest.mark.parametrize('in_chs,out_chs,stride,exp', [(8, 8, 1, 6.), (8, 16, 2, 6.), (8, 8, 1, 1.)],
                         ids=['skip', 'no-skip', 'no-expansion'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_inverted_residual_matches_reference(backend, in_chs, out_chs, stride, exp, training, channels_last):
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


@pytest.mark.parametrize('bn_kwargs', [dict(affine=False), dict(track_running_stats=False), dict(momentum=None)],
                         ids=['no-affine', 'no-running-stats', 'cumulative-average'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_closed_form_backward_for_batch_norm_variants(backend, bn_kwargs, training):
    """The BatchNorm options that change its forward or backward, float64 against nn.BatchNorm2d's autograd."""
    check_batch_norm_variant(bn_kwargs, training, place=_to)


@pytest.mark.slow
def test_keeps_no_more_than_plain_resnet(backend):
    """Saved for backward: what a plain ResNet keeps plus [B, C] and [C] vectors (the unfused ECA keeps every
    block's BatchNorm output on top)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    plain = timm.create_model('resnet50', layers=(1, 1, 1, 1), num_classes=5).to(DEVICE)
    fused_model = EcaResNet(block=EcaBottleneck, layers=(1, 1, 1, 1), num_classes=5).to(DEVICE)
    unfused = EcaResNet(block=Bottleneck, layers=(1, 1, 1, 1), num_classes=5).to(DEVICE)
    plain_bytes = saved_bytes(plain, x)
    assert saved_bytes(fused_model, x) <= plain_bytes * 1.03
    assert saved_bytes(unfused, x) > plain_bytes * 1.1


@pytest.mark.slow
def test_compile_has_no_graph_break_and_matches_eager(backend):
    """torch.compile traces the step whole (the torch ops' autograd function, or one Triton op per block)."""
    torch.manual_seed(0)
    model = EcaResNet(block=EcaBottleneck, drop_path_rate=0.2, **SMALL)
    randomize_bn(model)
    ref = ref_resnet(model, Bottleneck, drop_path_rate=0.2)
    model, ref, x = _to(model, ref, torch.randn(2, 3, 32, 32), channels_last=True)
    explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    graph = '\n'.join(str(g.graph) for g in explained.graphs)
    assert graph.count('eca_timm.bn_eca_residual') == (4 if backend == 'triton' else 0)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)  # traced fwd + bwd graphs, no codegen
    assert_close(run(compiled, x), run(ref, x), 1e-10)


@pytest.mark.slow
def test_inductor_compiled_block_matches_reference(backend):
    """Inductor (timm's --torchcompile) generates code around the step (the Triton op as an extern kernel,
    trusting the fake kernel's strides)."""
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


# ---- the torch ops -------------------------------------------------------------------------------------------------

def test_resnet_bf16_autocast_matches_reference():
    torch.manual_seed(0)
    model = EcaResNet(block=EcaBottleneck, **SMALL).eval()  # running stats: no tiny-batch statistics to amplify
    randomize_bn(model)
    ref = ref_resnet(model, Bottleneck).eval()
    x = torch.randn(2, 3, 32, 32)
    exact = run(copy.deepcopy(ref), x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fast, slow = run(model, x), run(ref, x)
    assert fast[0].dtype == torch.bfloat16
    # as close to the fp32 result as the plain bf16 computation is (rounding differs per tensor, so compare the
    # spread over the output and all gradients, not tensor by tensor)
    fast_err = [max_rel(a, b) for a, b in zip(flat(fast), flat(exact))]
    slow_err = [max_rel(a, b) for a, b in zip(flat(slow), flat(exact))]
    assert fast_err[0] < 0.02  # the output
    assert max(fast_err) <= 1.5 * max(slow_err)
    assert statistics.median(fast_err) <= 1.5 * statistics.median(slow_err)


def test_state_dict_keys_match_timm_blocks():
    """Official weights load as before: the fused blocks have exactly the keys of timm's blocks."""
    fused_model = timm.create_model('eca_resnet18', num_classes=5)
    plain = EcaResNet(block=BasicBlock, layers=(2, 2, 2, 2), num_classes=5, eca_kernel_sizes=(3, 5, 7, 7))
    assert isinstance(fused_model.layer1[0], EcaBasicBlock)
    assert list(fused_model.state_dict()) == list(plain.state_dict())
    assert 'layer4.1.se.conv.weight' in fused_model.state_dict()


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_pooling_through_pointwise_conv_matches_reference(training, channels_last):
    """ECA's mean taken from the conv input (batch stats or running stats) equals the mean of ``bn(conv(z))``,
    values and gradients, float64."""
    torch.manual_seed(0)
    conv, bn, eca = nn.Conv2d(6, 24, 1, bias=False).double(), nn.BatchNorm2d(24).double(), EcaLayer(24, 5).double()
    randomize_bn(bn)
    r_conv, r_bn, r_eca = copy.deepcopy(conv), copy.deepcopy(bn), RefEca(eca.conv.weight)
    for m in (bn, r_bn):
        m.train(training)
    z, shortcut = torch.randn(3, 6, 8, 8, dtype=torch.double), torch.randn(3, 24, 8, 8, dtype=torch.double)
    if channels_last:
        z, shortcut = z.to(memory_format=torch.channels_last), shortcut.to(memory_format=torch.channels_last)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    z_mean = conv_input_mean(conv, bn, z1)
    assert z_mean is not None and not z_mean.requires_grad
    out = bn_eca_residual(conv(z1), bn, eca, shortcut, conv=conv, input_mean=z_mean)
    r_out = shortcut + r_eca(r_bn(r_conv(z2)))
    out.backward(r_out.detach())
    r_out.backward(r_out.detach())
    assert max_rel(out, r_out) < 1e-10
    assert max_rel(z1.grad, z2.grad) < 1e-10
    for p, r_p in zip([*conv.parameters(), *bn.parameters(), eca.conv.weight], [*r_conv.parameters(),
                                                                                 *r_bn.parameters(), r_eca.weight]):
        assert max_rel(p.grad, r_p.grad) < 1e-10
    torch.testing.assert_close(bn.running_mean, r_bn.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var, r_bn.running_var, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('conv,shape,why', [
    (nn.Conv2d(8, 32, 3, padding=1, bias=False), (2, 8, 8, 8), '3x3 conv: edges do not commute with the mean'),
    (nn.Conv2d(8, 32, 1, stride=2, bias=False), (2, 8, 8, 8), 'strided conv'),
    (nn.Conv2d(8, 32, 1, bias=True), (2, 8, 8, 8), 'conv bias'),
    (nn.Conv2d(8, 32, 1, groups=2, bias=False), (2, 8, 8, 8), 'grouped conv'),
    (nn.Conv2d(512, 2048, 1, bias=False), (8, 512, 7, 7), 'B*H*W < 16*Cin: the matmul costs more than the pass'),
    (nn.Conv2d(256, 1024, 1, bias=False), (8, 256, 14, 14), 'B*H*W < 16*Cin: the matmul costs more than the pass'),
])
def test_pooling_through_conv_only_where_exact_and_cheaper(conv, shape, why):
    assert conv_input_mean(conv, nn.BatchNorm2d(32), torch.randn(shape)) is None, why


def test_pooling_through_conv_used_in_resnet50_early_stages():
    bn = nn.BatchNorm2d(256)
    assert conv_input_mean(nn.Conv2d(64, 256, 1, bias=False), bn, torch.randn(8, 64, 56, 56)) is not None
    other_bn = timm.layers.BatchNormAct2d(256, apply_act=False)
    assert conv_input_mean(nn.Conv2d(64, 256, 1, bias=False), other_bn, torch.randn(1, 64, 56, 56)) is not None
    gn = nn.GroupNorm(8, 256)  # not affine per channel with fixed stats: pool the output instead
    assert conv_input_mean(nn.Conv2d(64, 256, 1, bias=False), gn, torch.randn(8, 64, 56, 56)) is None


# ---- the Triton kernels --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape,k', [((20, 40, 17, 23), 7), ((70, 70, 1, 1), 3), ((5, 9, 12, 12), 1)],
                         ids=['many-chunks', '1x1', 'k1'])
@pytest.mark.parametrize('relu,with_shortcut', [(True, True), (False, True), (False, False)],
                         ids=['relu-shortcut', 'shortcut', 'plain'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.slow
def test_op_shapes_layouts_and_relu(triton, shape, k, relu, with_shortcut, channels_last):
    """Shapes that take several chunks per plane, several sample tiles and channel blocks (and more samples than a
    per-channel tile), 1x1 planes and k=1; the gradient reaching the step in another layout than its input (as
    after a reshape)."""
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


def test_training_batch_of_one_value_per_channel_is_refused_like_batch_norm(triton):
    bn, eca = _to(nn.BatchNorm2d(4).train(), EcaLayer(4, 3))
    with pytest.raises(ValueError, match='Expected more than 1 value per channel when training'):
        bn_eca_residual(torch.randn(1, 4, 1, 1, dtype=torch.float64, device=DEVICE), bn, eca, None)


@pytest.mark.parametrize('dtype', [torch.float16] + ([torch.bfloat16] if DEVICE == 'cuda' else []))
def test_half_precision_no_further_from_exact_than_plain(triton, dtype):
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


@pytest.mark.slow
def test_model_matches_torch_path(triton):
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


def test_opcheck_fake_kernel_and_autograd_registration(triton):
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


def test_flat_layouts_of_the_kernels(triton):
    """The kernels index [B, C, H, W] by (sample, channel, pixel) strides: NCHW and channels_last flatten, a
    transposed H, W does not (and is copied by the launcher)."""
    from eca_timm.layers._triton_launch import _flat_strides
    t = torch.empty(2, 3, 4, 5)
    assert _flat_strides(t) == (60, 20, 1)
    assert _flat_strides(t.to(memory_format=torch.channels_last)) == (60, 1, 3)
    assert _flat_strides(t.transpose(2, 3)) is None
    assert _flat_strides(torch.empty(2, 3, 1, 1).expand(2, 3, 4, 5)) == (3, 1, 0)


@needs_triton
@pytest.mark.slow
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


# ---- which path runs -----------------------------------------------------------------------------------------------

@needs_triton
def test_dispatch_rule():
    """'auto' sends CUDA tensors in NCHW or channels_last to the kernels and everything else to the torch ops; a
    norm layer other than a plain BatchNorm, or a shortcut of another shape, takes the plain ops or the torch ops."""
    t, bn = torch.randn(2, 4, 3, 3), nn.BatchNorm2d(4)
    with fused_backend('auto'):
        assert fused.step_path(t, bn) == 'torch'  # a CPU tensor
    with fused_backend('triton'):
        assert fused.step_path(t, bn) == 'triton'
        assert fused.step_path(t.to(memory_format=torch.channels_last), bn) == 'triton'
        assert fused.step_path(t.permute(0, 1, 3, 2), bn) == 'torch'  # neither layout
        assert fused.step_path(t.int(), bn) == 'torch'
        assert fused.step_path(t, bn, shortcut=torch.randn(2, 4, 1, 1)) == 'torch'  # a broadcast shortcut
        assert fused.step_path(t, nn.GroupNorm(2, 4)) == 'plain'
        assert fused.step_path(t, timm.layers.BatchNormAct2d(4)) == 'plain'  # with its ReLU
    with fused_backend('torch'):
        assert fused.step_path(t, bn) == 'torch'
    with pytest.raises(ValueError, match='fused ECA backend must be one of auto, torch, triton'):
        fused.set_fused_backend('cuda')
    with pytest.raises(ValueError, match='must be one of'):
        with fused_backend('gpu'):
            pass


def test_other_layouts_and_norm_layers_give_the_same_values(backend):
    """A permuted (neither NCHW nor channels_last) conv output, and a GroupNorm, leave the fused paths: same values."""
    torch.manual_seed(0)
    bn, eca, gn = _to(nn.BatchNorm2d(6).eval(), EcaLayer(6, 3), nn.GroupNorm(2, 6))
    randomize_bn(bn)
    c = torch.randn(2, 6, 5, 5, dtype=torch.float64, device=DEVICE).permute(0, 1, 3, 2)
    shortcut = torch.randn_like(c)
    assert max_rel(bn_eca_residual(c, bn, eca, None), ref_eca(bn(c), eca.conv.weight)) < 1e-12
    assert max_rel(bn_eca_residual(c, gn, eca, shortcut), shortcut + ref_eca(gn(c), eca.conv.weight)) < 1e-12


@pytest.mark.slow
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
