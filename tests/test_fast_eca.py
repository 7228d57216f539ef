"""The fused ECA blocks against a plain reference: same values and gradients, same state dict, less kept memory.

The reference is the official formula written here (mean over H, W -> 1-D conv across channels -> sigmoid -> scale)
inside timm's unfused ``BasicBlock``/``Bottleneck`` and a plain inverted residual.
"""
import copy
import statistics

import pytest
import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.models.eca_mobilenetv2 import EcaInvertedResidual
from eca_timm.layers.eca import EcaLayer
from eca_timm.models.eca_resnet import EcaBasicBlock, EcaBottleneck, EcaResNet
from eca_timm.layers.fused import bn_eca_residual, conv_input_mean
from fused_reference import (SMALL, RefEca, assert_close, assert_same_step, check_batch_norm_variant, flat, max_rel,
                             randomize_bn, ref_inverted_residual, ref_resnet, run, saved_bytes)


@pytest.mark.parametrize('block', [EcaBasicBlock, EcaBottleneck])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_resnet_matches_reference(block, training, channels_last):
    torch.manual_seed(0)
    model = EcaResNet(block=block, drop_path_rate=0.2, **SMALL).double()
    randomize_bn(model)
    ref = ref_resnet(model, block.__bases__[0], drop_path_rate=0.2).double()
    x = torch.randn(3, 3, 32, 32, dtype=torch.double)
    if channels_last:
        model, ref, x = (t.to(memory_format=torch.channels_last) for t in (model, ref, x))
    model.train(training)
    ref.train(training)
    # float64 shows the same math (drop path included, same random draws); the stats match too
    assert_close(run(model, x), run(ref, x), 1e-10)
    ref_buffers = dict(ref.named_buffers())
    for name, buf in model.named_buffers():
        torch.testing.assert_close(buf, ref_buffers[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('block', [EcaBasicBlock, EcaBottleneck])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_resnet_fp32_within_1e5(block, training):
    torch.manual_seed(0)
    model = EcaResNet(block=block, **SMALL).train(training)
    randomize_bn(model)
    ref = ref_resnet(model, block.__bases__[0]).train(training)
    x = torch.randn(2, 3, 64, 64)
    assert_close(run(model, x), run(ref, x), 1e-5)
    with torch.inference_mode():  # the in-place no-grad path
        assert max_rel(model(x), ref(x)) < 1e-5


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


@pytest.mark.parametrize('in_chs,out_chs,stride,exp', [(8, 8, 1, 6.), (8, 16, 2, 6.), (8, 8, 1, 1.)],
                         ids=['skip', 'no-skip', 'no-expansion'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_inverted_residual_matches_reference(in_chs, out_chs, stride, exp, training):
    torch.manual_seed(0)
    blk = EcaInvertedResidual(in_chs, out_chs, stride=stride, exp_ratio=exp, eca_kernel_size=3).double()
    randomize_bn(blk)
    ref = copy.deepcopy(blk)
    blk.train(training)
    ref.train(training)
    x = torch.randn(2, in_chs, 8, 8, dtype=torch.double)
    assert_same_step(blk, blk, ref, lambda x: ref_inverted_residual(ref, x), x)


def test_fused_block_keeps_no_more_than_plain_block():
    """The unfused ECA keeps the BN output of every block; the fused one keeps what the plain ResNet keeps."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    plain = timm.create_model('resnet50', layers=(1, 1, 1, 1), num_classes=5)
    fused = EcaResNet(block=EcaBottleneck, layers=(1, 1, 1, 1), num_classes=5)
    unfused = EcaResNet(block=Bottleneck, layers=(1, 1, 1, 1), num_classes=5)
    plain_bytes, fused_bytes, unfused_bytes = (saved_bytes(m, x) for m in (plain, fused, unfused))
    assert fused_bytes <= plain_bytes * 1.03  # only [B, C] and [C] vectors on top (the memory target)
    assert unfused_bytes > plain_bytes * 1.1


def test_state_dict_keys_match_timm_blocks():
    """Official weights load as before: the fused blocks have exactly the keys of timm's blocks."""
    fused = timm.create_model('eca_resnet18', num_classes=5)
    plain = EcaResNet(block=BasicBlock, layers=(2, 2, 2, 2), num_classes=5, eca_kernel_sizes=(3, 5, 7, 7))
    assert isinstance(fused.layer1[0], EcaBasicBlock)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert 'layer4.1.se.conv.weight' in fused.state_dict()


def test_torchscript_matches_eager():
    model = EcaResNet(block=EcaBottleneck, **SMALL).eval()
    randomize_bn(model)
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(scripted(x), model(x))
    scripted.train()
    model.train()
    # TorchScript runs the plain ops (ECA pools bn3's output, not conv3's input): the same math, fp32 rounding.
    # 64x64 so that layer4's training-mode BatchNorm normalizes over more than 2 values (at 32x32 fp32 itself,
    # the plain reference included, is only good to ~1e-4 there against float64).
    x = torch.randn(2, 3, 64, 64)
    assert_close(run(scripted, x), run(model, x), 1e-5)


@pytest.mark.parametrize('name', ['eca_resnet18', 'eca_mobilenetv2'])
def test_fx_features_match_eager(name):
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    eager = timm.create_model(name, features_only=True).eval()
    torch.manual_seed(0)
    fx = timm.create_model(name, features_only=True, feature_cls='fx').eval()
    with torch.no_grad():
        for a, b in zip(fx(x), eager(x)):
            torch.testing.assert_close(a, b)


def test_compile_has_no_graph_break_and_matches_eager():
    torch.manual_seed(0)
    model = EcaResNet(block=EcaBottleneck, drop_path_rate=0.2, **SMALL).double()
    randomize_bn(model)
    ref = ref_resnet(model, Bottleneck, drop_path_rate=0.2).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)  # traced fwd + bwd graphs, no codegen
    assert_close(run(compiled, x), run(ref, x), 1e-10)


def test_inductor_compiled_block_matches_reference():
    torch.manual_seed(0)
    blk = EcaBottleneck(16, 4)
    blk.se = eca_timm.EcaLayer(16, kernel_size=3)
    randomize_bn(blk)
    ref = copy.deepcopy(blk)
    ref.forward = Bottleneck.forward.__get__(ref)
    ref.se = RefEca(blk.se.conv.weight)
    x = torch.randn(2, 16, 8, 8)
    compiled = torch.compile(blk, fullgraph=True)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, r_out = compiled(x1), ref(x2)
    out.sum().backward()
    r_out.sum().backward()
    assert max_rel(out, r_out) < 1e-5
    assert max_rel(x1.grad, x2.grad) < 1e-5
    assert max_rel(blk.se.conv.weight.grad, ref.se.weight.grad) < 1e-5


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
    out = bn_eca_residual(conv(z1), bn, eca, shortcut, conv=conv, conv_input_mean=z_mean)
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


@pytest.mark.parametrize('bn_kwargs', [dict(affine=False), dict(track_running_stats=False), dict(momentum=None)],
                         ids=['no-affine', 'no-running-stats', 'cumulative-average'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_closed_form_backward_for_batch_norm_variants(bn_kwargs, training):
    """The BatchNorm options that change its forward or backward, float64 against nn.BatchNorm2d's autograd."""
    check_batch_norm_variant(bn_kwargs, training)
