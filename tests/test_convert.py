"""Official ECA-Net checkpoints (independent re-implementation in official_eca.py) and plain ResNet weights load
into the registered models: ``eca-timm convert``, timm's pretrained ``file``, ``checkpoint_path``, refusals."""
import json
import logging
import os

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.models import _pretrained
from eca_timm.weights import convert as convert_mod
from eca_timm.cli import main
from eca_timm.models import CheckpointMismatchError
from official_eca import OfficialEcaMobileNetV2, official_resnet, randomize_, save_official

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

# Kernel sizes per stage of the released files (REFERENCE.md), typed out independently of the package.
RELEASED = {18: (3, 5, 7, 7), 34: (3, 3, 5, 7), 50: (3, 5, 5, 7)}


@torch.no_grad()
def _max_diff(model: torch.nn.Module, reference: torch.nn.Module) -> float:
    return (model.eval()(X) - reference.eval()(X)).abs().max().item()


@pytest.fixture(scope='module')
def official18(tmp_path_factory):
    ref = randomize_(official_resnet(18, RELEASED[18]))
    path = tmp_path_factory.mktemp('official') / 'eca_resnet18_k3577.pth.tar'
    save_official(ref, path)
    return ref, path


@pytest.mark.parametrize('depth', [18, 50])
def test_convert_official_resnet(tmp_path, depth):
    ref = randomize_(official_resnet(depth, RELEASED[depth]), seed=depth)
    src = tmp_path / f'eca_resnet{depth}.pth.tar'
    save_official(ref, src)
    out = tmp_path / 'hub' / f'eca_resnet{depth}.official_in1k'
    assert main(['convert', str(src), '--model', f'eca_resnet{depth}', '--out', str(out)]) == 0

    assert sorted(p.name for p in (out.parent).iterdir()) == [out.name]  # no temp folders left
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == f'eca_resnet{depth}'
    assert config['model_args']['eca_kernel_sizes'] == list(RELEASED[depth])
    assert len(config['label_names']) == 1000
    weights = load_file(out / 'model.safetensors')
    assert torch.equal(weights['layer4.1.se.conv.weight'], ref.layer4[1].eca.conv.weight)
    assert _max_diff(timm.create_model(f'local-dir:{out}', pretrained=True), ref) < 1e-5


def test_convert_official_mobilenetv2(tmp_path):
    ref = randomize_(OfficialEcaMobileNetV2(), seed=3)
    src = tmp_path / 'eca_mobilenetv2_k13.pth.tar'
    save_official(ref, src, arch='eca_mobilenet_v2')
    out = tmp_path / 'eca_mobilenetv2.official_in1k'
    assert main(['convert', str(src), '--model', 'eca_mobilenetv2', '--out', str(out)]) == 0
    model = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert _max_diff(model, ref) < 1e-5
    assert sum(m.conv.weight.numel() for m in model.modules() if isinstance(m, eca_timm.EcaLayer)) == 31


def test_official_file_through_timm_loaders(official18, tmp_path):
    """pretrained_cfg file= (train.py --pretrained-path) maps an official file through the checkpoint filter;
    checkpoint_path (train.py --initial-checkpoint) is torch's plain load_state_dict: the model's own keys only."""
    ref, path = official18
    model = timm.create_model('eca_resnet18', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert _max_diff(model, ref) < 1e-5
    # train.py --pretrained-path with another num_classes: timm re-initialises the head, the rest is loaded
    model = timm.create_model('eca_resnet18', pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=-1))
    assert model.fc.out_features == 10
    assert torch.equal(model.layer3[1].se.conv.weight, ref.layer3[1].eca.conv.weight)
    # load_state_dict renames nothing: the official keys are refused, and the converted weights load
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "layer1\.0\.eca\.conv\.weight"'):
        timm.create_model('eca_resnet18', checkpoint_path=str(path))
    out = tmp_path / 'converted'
    assert main(['convert', str(path), '--model', 'eca_resnet18', '--out', str(out)]) == 0
    assert _max_diff(timm.create_model('eca_resnet18', checkpoint_path=str(out / 'model.safetensors')), ref) < 1e-5


def test_wrong_depth_refused(official18, tmp_path):
    _, path = official18
    out = tmp_path / 'out'
    with pytest.raises(CheckpointMismatchError, match=r"eca_resnet18_k3577\.pth\.tar is a checkpoint of eca_resnet18, "
                                                      r"not of eca_resnet34: it fits timm\.create_model\("
                                                      r"'eca_resnet18'\) exactly; pass --model eca_resnet18"):
        main(['convert', str(path), '--model', 'eca_resnet34', '--out', str(out)])
    assert list(tmp_path.iterdir()) == []


def test_wrong_kernel_sizes_refused(tmp_path):
    src = tmp_path / 'k3357.pth.tar'
    save_official(randomize_(official_resnet(18, (3, 3, 5, 7))), src)
    with pytest.raises(CheckpointMismatchError, match=r"layer 'layer2\.0\.se\.conv'.*\[1, 1, 3\] in the checkpoint, "
                                                      r"\[1, 1, 5\] in the model.*fits timm\.create_model\("
                                                      r"'eca_resnet18', eca_kernel_sizes=\(3, 3, 5, 7\)\)"):
        main(['convert', str(src), '--model', 'eca_resnet18', '--out', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()
    # the fix the message names works
    model = timm.create_model('eca_resnet18', pretrained=True, eca_kernel_sizes=(3, 3, 5, 7),
                              pretrained_cfg_overlay=dict(file=str(src)))
    assert model.eca_kernel_sizes == (3, 3, 5, 7)


def test_mobilenetv2_kernel_rule_mismatch_refused(tmp_path):
    """A MobileNetV2 trained with k=1 up to 96 channels (the official code's `c <= 96`) names its sizes."""
    src = tmp_path / 'mbv2.pth.tar'
    save_official(randomize_(OfficialEcaMobileNetV2(small_k_below=97)), src)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.4\.0\.eca.*eca_kernel_sizes=\(1, 1, 1, 1, 1, 3, 3\)"):
        timm.create_model('eca_mobilenetv2', pretrained=True, pretrained_cfg_overlay=dict(file=str(src)))


def test_plain_torchvision_resnet_keeps_eca_init(tmp_path, caplog):
    tv = randomize_(torchvision.models.resnet18())
    src = tmp_path / 'resnet18.pth'
    torch.save(tv.state_dict(), src)
    torch.manual_seed(0)
    init = timm.create_model('eca_resnet18').state_dict()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger='eca_timm.models._state_dict'):
        model = timm.create_model('eca_resnet18', pretrained=True, pretrained_cfg_overlay=dict(file=str(src)))
    loaded = model.state_dict()
    eca = [k for k in loaded if '.se.' in k]
    assert len(eca) == 8
    for k, v in tv.state_dict().items():
        assert torch.equal(loaded[k], v), k
    for k in eca:
        assert torch.equal(loaded[k], init[k]), k
    lines = [r.getMessage() for r in caplog.records if 'keep their initialisation' in r.getMessage()]
    assert len(lines) == 1 and all(k in lines[0] for k in eca)
    # convert writes complete ECA weights only
    with pytest.raises(CheckpointMismatchError, match=r'no ECA weights \(a plain ResNet'):
        main(['convert', str(src), '--model', 'eca_resnet18', '--out', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_other_architecture_refused(tmp_path):
    src = tmp_path / 'resnet50.pth'
    torch.save(torchvision.models.resnet50().state_dict(), src)
    with pytest.raises(CheckpointMismatchError, match=r"layer 'layer1\.0\.conv1'.*\[64, 64, 1, 1\] in the checkpoint, "
                                                      r"\[64, 64, 3, 3\] in the model.*\(eca_resnet50\).*"
                                                      r"fits timm\.create_model\('eca_resnet50'\)"):
        timm.create_model('eca_resnet18', pretrained=True, pretrained_cfg_overlay=dict(file=str(src)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_convert_refuses_overwrite_and_checks_sha256(official18, tmp_path, monkeypatch):
    ref, path = official18
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('x')
    with pytest.raises(FileExistsError, match='--force'):
        main(['convert', str(path), '--model', 'eca_resnet18', '--out', str(out)])
    assert (out / 'keep.txt').exists()
    entry = dict(_pretrained.manifest_entry('eca_resnet18.official_in1k'))
    entry['source'] = dict(entry['source'], sha256='0' * 64)
    monkeypatch.setattr(convert_mod, 'manifest_entry', lambda tag: entry)
    with pytest.raises(CheckpointMismatchError, match='sha256 .* differs from 0{64}'):
        main(['convert', str(path), '--model', 'eca_resnet18', '--out', str(out), '--force'])
    assert (out / 'keep.txt').exists()
    monkeypatch.undo()
    main(['convert', str(path), '--model', 'eca_resnet18', '--out', str(out), '--force'])
    # --force replaces the files convert writes, and nothing else: keep.txt stays
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'keep.txt', 'model.safetensors']
    assert (out / 'keep.txt').read_text() == 'x'
    assert all(oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask()) for p in out.iterdir())  # readable
    assert [p.name for p in tmp_path.iterdir()] == ['out']
