"""The plugin's models behave like timm's own: timm's generic model checks, run over every plugin model."""
import math

import pytest
import timm
import torch
import torchvision
from timm.models import FeatureInfo
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import eca_timm
from eca_timm import RELEASED_KERNEL_SIZES
from eca_timm.models import did_you_mean

MODELS = timm.list_models(module=list(eca_timm.MODEL_MODULES))
STUDY_MODELS = timm.list_models(module=list(eca_timm.STUDY_MODULES))
# timm's model contract, run on every model the plugin registers: the releases and the attention study's models;
# the 101- and 152-layer ResNets (eca_resnet50's blocks, more of them; seconds a check) are marked slow
ALL_MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in ('eca_resnet101', 'eca_resnet152') else n
              for n in MODELS + STUDY_MODELS]
PAPER_MODELS = {
    'eca_resnet18': 'resnet18', 'eca_resnet34': 'resnet34', 'eca_resnet50': 'resnet50',
    'eca_resnet101': 'resnet101', 'eca_resnet152': 'resnet152', 'eca_mobilenetv2': 'mobilenet_v2',
}
SMALL = 64  # input side for the generic checks (the study models: their own CIFAR-10 size, 32)


def _side(name: str) -> int:
    return min(SMALL, timm.get_pretrained_cfg(name).input_size[-1])


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _eca_layers(model: torch.nn.Module):
    return [m for m in model.modules() if isinstance(m, eca_timm.EcaLayer)]


def test_registry():
    assert set(PAPER_MODELS) <= set(MODELS)
    for name in PAPER_MODELS:
        assert timm.is_model(name)
        assert f'{name}.official_in1k' in timm.list_models(name, include_tags=True)


@pytest.mark.parametrize('name', sorted(PAPER_MODELS))
def test_param_count_is_torchvision_plus_kernel_sizes(name):
    model = timm.create_model(name, device='meta')
    reference = getattr(torchvision.models, PAPER_MODELS[name])(weights=None)
    ks = RELEASED_KERNEL_SIZES[name]
    if name == 'eca_mobilenetv2':
        per_stage_blocks = [1, 2, 3, 4, 3, 3, 1]
    else:
        per_stage_blocks = [len(getattr(reference, f'layer{i}')) for i in range(1, 5)]
    assert _n_params(model) == _n_params(reference) + sum(k * n for k, n in zip(ks, per_stage_blocks))
    assert [m.kernel_size for m in _eca_layers(model)] == [k for k, n in zip(ks, per_stage_blocks) for _ in range(n)]


def test_eca_resnet50_exact_param_count():
    assert _n_params(timm.create_model('eca_resnet50', device='meta')) == 25_557_112


def test_mobilenetv2_kernel_rule():
    model = timm.create_model('eca_mobilenetv2', device='meta')
    for blk in model.blocks.modules():
        if isinstance(blk, eca_timm.models.eca_mobilenetv2.EcaInvertedResidual):
            assert blk.eca.kernel_size == (1 if blk.conv_pwl.out_channels < 96 else 3)


@pytest.mark.parametrize('name', ALL_MODELS)
def test_forward_backward_all_params_get_grad(name):
    # timm zero-inits each ResNet block's last BN, which would hide the ECA gradient on the first step
    extra = {} if name == 'eca_mobilenetv2' else {'zero_init_last': False}
    model = timm.create_model(name, num_classes=42, **extra).train()
    out = model(torch.randn(2, 3, _side(name), _side(name)))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'
    assert all(p.grad.abs().sum() > 0 for m in _eca_layers(model) for p in m.parameters())


@pytest.mark.parametrize('name', ALL_MODELS)
def test_default_cfg_consistency(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state_dict
    assert cfg['classifier'] + '.weight' in state_dict
    if name in MODELS:
        assert cfg['paper_ids'] == 'arXiv:1910.03151'
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert tuple(feats.shape[2:]) == tuple(cfg['pool_size'])
        assert feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, '')
        assert tuple(model(x).shape[2:]) == tuple(cfg['pool_size'])
        model = timm.create_model(name).eval()
        model.reset_classifier(7)
        assert model(x).shape == (1, 7)
    m0 = timm.create_model(name, num_classes=0, global_pool='').eval()
    assert tuple(m0(x).shape) == (1, m0.num_features, *cfg['pool_size'])


@pytest.mark.parametrize('name', MODELS)
def test_model_kwargs(name):
    x = torch.randn(2, 1, SMALL, SMALL)
    model = timm.create_model(name, in_chans=1, num_classes=3, global_pool='max', drop_rate=0.5, drop_path_rate=0.1)
    assert model(x).shape == (2, 3)
    assert any(isinstance(m, timm.layers.DropPath) for m in model.modules())
    assert model.drop_rate == 0.5
    assert model.get_classifier().out_features == 3
    assert timm.create_model(name, num_classes=0)(torch.randn(2, 3, SMALL, SMALL)).shape[1] == model.num_features


@pytest.mark.parametrize('name', ALL_MODELS)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 4
    outs = model(torch.randn(2, 3, _side(name), _side(name)))
    assert [o.shape[1] for o in outs] == channels
    assert [o.shape[-1] for o in outs] == [math.ceil(_side(name) / r) for r in reductions]


def test_features_only_out_indices():
    model = timm.create_model('eca_resnet101', features_only=True, out_indices=(1, 2, 3, 4))
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert [o.shape[-1] for o in model(torch.randn(1, 3, SMALL, SMALL))] == [16, 8, 4, 2]


@pytest.mark.parametrize('name', ALL_MODELS)
def test_forward_intermediates_and_grad_checkpointing(name):
    model = timm.create_model(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, 3, _side(name), _side(name))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert [o.shape[1] for o in inter] == info.channels()
        torch.testing.assert_close(final, model.forward_features(x))
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [o.shape[1] for o in only] == info.channels()[-2:]
        ref = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', ALL_MODELS)
def test_group_matcher_covers_all_params(name):
    model = timm.create_model(name, device='meta')
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))


@pytest.mark.parametrize('name', ALL_MODELS)
def test_torchscript(name):
    model = timm.create_model(name, scriptable=True).eval()
    x = torch.randn(1, 3, _side(name), _side(name))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize('name', ALL_MODELS)
def test_fx_feature_extraction(name):
    """timm's contract: fx graphs and eager give bit-equal outputs (the fused blocks are fx leaves), forward and
    backward."""
    model = timm.create_model(name).eval()
    _, eval_nodes = get_graph_node_names(model)
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    x = torch.randn(1, 3, _side(name), _side(name))
    with torch.no_grad():
        assert torch.equal(next(iter(fx_model(x).values())), model(x))
    torch.manual_seed(0)
    fx_feats = timm.create_model(name, features_only=True, feature_cls='fx').eval()
    torch.manual_seed(0)
    hook_feats = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        for a, b in zip(fx_feats(x), hook_feats(x)):
            assert torch.equal(a, b)
    fx_feats.train()
    hook_feats.train()
    x2 = torch.randn(2, 3, _side(name), _side(name))
    for feats in (fx_feats, hook_feats):
        sum(f.float().square().mean() for f in feats(x2)).backward()
    for (n, a), b in zip(fx_feats.named_parameters(), hook_feats.parameters()):
        assert torch.equal(a.grad, b.grad), n


@pytest.mark.parametrize('name', ALL_MODELS)
def test_features_only_reloads_its_own_state_dict(name):
    model = timm.create_model(name, features_only=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize('name', ['eca_resnet50', 'eca_mobilenetv2'])
def test_channels_last_and_bf16_autocast(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model_cl(x.contiguous(memory_format=torch.channels_last)), ref,
                                   rtol=1e-4, atol=1e-4)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert torch.nn.functional.cosine_similarity(out.float(), ref).min() > 0.99


@pytest.mark.slow
def test_torch_compile_no_graph_breaks():
    model = timm.create_model('eca_resnet18').eval()
    x = torch.randn(1, 3, 32, 32)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize('name', ['eca_resnet18', 'eca_mobilenetv2'])
def test_kernel_size_overrides(name):
    stages = len(RELEASED_KERNEL_SIZES[name])
    ks = tuple([9] * stages)
    assert timm.create_model(name, eca_kernel_sizes=ks, device='meta').eca_kernel_sizes == ks
    assert timm.create_model(name, eca_kernel_sizes=5, device='meta').eca_kernel_sizes == (5,) * stages
    adaptive = timm.create_model(name, eca_kernel_sizes='adaptive', device='meta')
    assert all(m.kernel_size == eca_timm.adaptive_kernel_size(m_chs)
               for m, m_chs in zip(_eca_layers(adaptive), _eca_out_channels(adaptive)))


def _eca_out_channels(model):
    """Channels each ECA layer sees, read from the preceding BN (independent of the kernel-size code)."""
    chs = []
    for mod in model.modules():
        if isinstance(mod, (timm.models.resnet.BasicBlock, timm.models.resnet.Bottleneck)):
            chs.append((mod.bn3 if hasattr(mod, 'bn3') else mod.bn2).num_features)
        elif isinstance(mod, eca_timm.models.eca_mobilenetv2.EcaInvertedResidual):
            chs.append(mod.bn3.num_features)
    return chs


def test_blocks_build_their_stage_eca():
    """timm's create_attn builds each block's ECA (block_args attn_layer): each stage its own size, also for other
    stage widths."""
    model = timm.create_model('eca_resnet18', channels=(32, 48, 96, 160), eca_kernel_sizes=(3, 5, 7, 9), device='meta')
    for stage, (chs, k) in enumerate(zip((32, 48, 96, 160), (3, 5, 7, 9)), start=1):
        for blk in getattr(model, f'layer{stage}'):
            assert isinstance(blk.se, eca_timm.EcaLayer) and blk.se.kernel_size == k and blk.bn2.num_features == chs
    assert model.eca_kernel_sizes == (3, 5, 7, 9)
    with pytest.raises(ValueError, match=r'stages of the same width \(64 channels\) need the same ECA kernel size'):
        timm.create_model('eca_resnet18', channels=(64, 64, 128, 256), eca_kernel_sizes=(3, 5, 7, 7), device='meta')
    with pytest.raises(ValueError, match=r"block_args attn_layer='se': an ECA-ResNet's block attention is ECA"):
        timm.create_model('eca_resnet18', block_args=dict(attn_layer='se'), device='meta')


@pytest.mark.parametrize('name', ['eca_resnet50', 'eca_mobilenetv2'])
def test_eca_keeps_torchs_conv1d_init(name):
    """ECA convs keep PyTorch's Conv1d init, U(-1/sqrt(k), 1/sqrt(k)) as in the official code: timm's model init
    (kaiming normal / efficientnet_init_weights) only touches 2-d convs, norms and linear layers."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    scaled = torch.cat([m.conv.weight.flatten() * math.sqrt(m.kernel_size) for m in _eca_layers(model)])
    assert scaled.abs().max() <= 1
    assert 0.45 < scaled.std().item() < 0.70  # uniform on [-1, 1]: 0.577; kaiming normal fan_out would be >= 1.4
    if name != 'eca_mobilenetv2':
        assert all(blk.bn3.weight.abs().sum() == 0 for blk in model.layer1)  # timm's zero_init_last


def test_mobilenetv2_is_a_whole_efficientnet():
    """EfficientNet.__init__ ran: every attribute timm's own MobileNetV2 has, and timm's methods that read the
    blocks work (prune_intermediate_layers(extra_blocks=True) asks each block for its feature_info)."""
    ours = timm.create_model('eca_mobilenetv2', device='meta')
    theirs = timm.create_model('mobilenetv2_100', device='meta')
    assert set(vars(theirs)) - set(vars(ours)) == set()
    assert set(theirs._modules) == set(ours._modules)
    assert ours.feature_info == [dict(f) for f in theirs.feature_info]
    model = timm.create_model('eca_mobilenetv2').eval()
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        _, inter = model.forward_intermediates(x, extra_blocks=True)
        assert [o.shape[1] for o in inter] == [32, 16, 24, 32, 64, 96, 160, 320]
        assert model.prune_intermediate_layers(indices=3, extra_blocks=True) == [5, 6, 7]
        assert model(x).shape == (1, 320, 2, 2)  # the head is pruned: unpooled features


def test_adaptive_resnet50_sizes():
    # stage channels 256, 512, 1024, 2048 -> 5, 5, 5, 7
    assert timm.create_model('eca_resnet50', eca_kernel_sizes='adaptive', device='meta').eca_kernel_sizes == (5, 5, 5, 7)


@pytest.mark.parametrize('bad, match', [
    (4, 'positive odd int'),
    (0, 'positive odd int'),
    (-1, 'positive odd int'),
    ((3, 5, 4, 7), 'positive odd int'),
    ((3, 5, 5), 'needs 4 values, one per stage, got 3'),
    ((3, 5, 5, 7, 9), 'needs 4 values, one per stage, got 5'),
    ('big', "or 'adaptive'"),
])
def test_bad_kernel_sizes(bad, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('eca_resnet50', eca_kernel_sizes=bad)


def test_bad_mobilenet_kernel_sizes():
    with pytest.raises(ValueError, match='needs 7 values, one per stage, got 4'):
        timm.create_model('eca_mobilenetv2', eca_kernel_sizes=(3, 3, 3, 3))


@pytest.mark.parametrize('name', ['eca_resnet50', 'eca_mobilenetv2'])
def test_unknown_kwarg(name):
    """Refused before any work (pretrained=True would look for weights first), naming the close accepted one."""
    with pytest.raises(TypeError, match=rf"{name}: unknown keyword argument 'eca_kernel' \(did you mean "
                                        rf"'eca_kernel_sizes'\?\)\. Model arguments it accepts: .*drop_path_rate"):
        timm.create_model(name, pretrained=True, eca_kernel=3)


def test_unknown_kwargs_list_only_what_the_model_takes():
    with pytest.raises(TypeError, match=r"unknown keyword arguments 'se_layer' \(did you mean "
                                          r"'act_layer'\?\), 'bogus'\. ") as e:
        timm.create_model('eca_mobilenetv2', se_layer='se', bogus=1)
    accepted = str(e.value).split('accepts: ')[1].split(', ')
    assert 'stem_size' in accepted and 'bn_eps' in accepted and 'features_only' in accepted
    assert 'se_layer' not in accepted and 'round_chs_fn' not in accepted  # EfficientNet's, not EcaMobileNetV2's


def test_did_you_mean():
    """The one close-matches hint (models, detectors, train.py recipes): closest first, else a prefix match."""
    assert did_you_mean('eca_resnet19', timm.list_models(), n=3) == \
        " (did you mean 'eca_resnet18', 'eca_resnet152' or 'eca_resnet101'?)"
    assert did_you_mean('fpn', ['fpn_channels', 'num_classes']) == " (did you mean 'fpn_channels'?)"
    assert did_you_mean('zzz', ['fpn_channels']) == ''


def test_type_error_inside_the_model_is_not_blamed_on_create_model():
    """A nested argument's TypeError is the block's own, not "eca_resnet18: unknown keyword argument"."""
    with pytest.raises(TypeError, match=r"^BasicBlock\.__init__\(\) got an unexpected keyword argument 'bogus'"):
        timm.create_model('eca_resnet18', block_args=dict(bogus=1), device='meta')


@pytest.mark.parametrize('name', ALL_MODELS)
@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=-1), r'num_classes must be an int >= 0, got -1; pass 0 for no classifier'),
    (dict(num_classes=2.5), r'num_classes must be an int >= 0, got 2\.5'),
    (dict(in_chans=0), r'in_chans must be an int >= 1, got 0; pass the number of input channels'),
    (dict(in_chans=True), r'in_chans must be an int >= 1, got True'),
    (dict(out_indices=(1, 2)), r'out_indices only work with features_only=True; pass features_only=True too'),
    (dict(features_only=True, out_indices=(1, 1)), r'out_indices=\(1, 1\) repeats a level or is out of order'),
    (dict(features_only=True, out_indices=(3, 1)), r'out_indices=\(3, 1\) repeats a level or is out of order'),
    (dict(features_only=True, out_indices=(4, -1)), r'out_indices=\(4, -1\) repeats a level or is out of order '
                                                    r'\(levels \[4, 4\]\)'),
    (dict(features_only=True, out_indices=(7,)), r'out_indices=\(7,\) is out of range \(the model has 5 feature '
                                                 r'levels\); pass feature levels 0 to 4 \(or -5 to -1\)'),
    (dict(features_only=True, out_indices=6), r'out_indices=6 is out of range.*an int n from 1 to 5'),
    (dict(features_only=True, out_indices='1'), r"out_indices must be an int or a tuple of ints, got '1'"),
    (dict(features_only=True, out_indices=()), r'out_indices must be an int or a tuple of ints, got \(\)'),
])
def test_bad_model_args_refused_before_weights_load(name, kwargs, match, tmp_path):
    """timm would take these silently (a deduplicated or reordered feature list, no classifier for -1) or fail
    late (in_chans=0 at forward): refused with a ValueError before any weights are read (the file does not exist)."""
    missing = dict(file=str(tmp_path / 'no-such-file.pth'))
    with pytest.raises(ValueError, match=rf'^{name}: {match}'):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=missing, device='meta', **kwargs)


@pytest.mark.parametrize('kwargs, expected', [
    (dict(out_indices=(0, 4)), [64, 512]), (dict(out_indices=(-2, -1)), [256, 512]), (dict(out_indices=2), [256, 512]),
    (dict(out_indices=[1, 3]), [64, 256]), (dict(num_classes=0), None), (dict(in_chans=1), None),
])
def test_good_model_args_still_build(kwargs, expected):
    model = timm.create_model('eca_resnet18', features_only=expected is not None, device='meta', **kwargs)
    if expected is not None:
        assert model.feature_info.channels() == expected


@pytest.mark.parametrize('arg, expected', [
    ('eca_kernel_sizes=(3,3,5,7)', (3, 3, 5, 7)),
    ('eca_kernel_sizes=adaptive', (5, 5, 5, 7)),
    ('eca_kernel_sizes=3', (3, 3, 3, 3)),
])
def test_kernel_sizes_from_train_py_model_kwargs(arg, expected):
    """train.py parses --model-kwargs with timm.utils.ParseKwargs and forwards them to create_model."""
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=timm.utils.ParseKwargs)
    kwargs = parser.parse_args(['--model-kwargs', arg]).model_kwargs
    assert timm.create_model('eca_resnet50', device='meta', **kwargs).eca_kernel_sizes == expected


@pytest.mark.slow
def test_no_plugin_name_shadows_a_timm_model(tmp_path):
    """timm's registry before the plugin is imported shares no name with the plugin's models and study models."""
    import json
    import subprocess
    import sys
    code = ('import json, timm\nbefore = set(timm.list_models())\nimport eca_timm\n'
            'ours = timm.list_models(module=list(eca_timm.MODEL_MODULES + eca_timm.STUDY_MODULES))\n'
            'print(json.dumps({"before": sorted(before), "ours": ours}))\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = json.loads(proc.stdout.splitlines()[-1])
    assert len(names['ours']) == 14
    assert set(names['ours']).isdisjoint(names['before'])


@pytest.mark.parametrize('name,plain', [('eca_resnet18', 'resnet18'), ('eca_resnet50', 'resnet50')])
def test_parameter_order_is_that_of_earlier_releases(name, plain):
    """Optimizer states index parameters by position: each block's ECA conv comes last in the block, as in 0.1, so
    train.py --resume of an earlier run still fits."""
    expected, block = [], None
    for key, _ in timm.create_model(plain).named_parameters():
        here = '.'.join(key.split('.')[:2]) if key.startswith('layer') else None
        if block is not None and here != block:
            expected.append(f'{block}.se.conv.weight')
        expected.append(key)
        block = here
    assert [k for k, _ in timm.create_model(name).named_parameters()] == expected
