"""`eca-timm models`: the table a user sees, checked against independently known numbers."""
import contextlib
import io
import json

import pytest

from eca_timm.cli import main

# Parameter counts: torchvision's ResNet / MobileNetV2 1.0 plus the ECA conv weights (sum of kernel sizes).
EXPECTED_PARAMS = {
    'eca_resnet18': 11_689_512 + 44,
    'eca_resnet34': 21_797_672 + 72,
    'eca_resnet50': 25_557_032 + 80,
    'eca_resnet101': 44_549_160 + 157,
    'eca_resnet152': 60_192_808 + 234,
    'eca_mobilenetv2': 3_504_872 + 31,
}
# torchvision's published GFLOPS (multiply-adds) at 224: ECA adds well under 0.01 GMACs.
TORCHVISION_GMACS = {'eca_resnet18': 1.81, 'eca_resnet34': 3.66, 'eca_resnet50': 4.09, 'eca_resnet101': 7.80,
                     'eca_resnet152': 11.51, 'eca_mobilenetv2': 0.30}


@pytest.fixture(scope='module')
def rows():
    """``eca-timm models --json``, run once for the module's checks (it counts the FLOPs of every model)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(['models', '--json']) == 0
    return {r['model']: r for r in json.loads(out.getvalue())}


def test_models_json(rows):
    assert set(EXPECTED_PARAMS) <= set(rows)
    for name, params in EXPECTED_PARAMS.items():
        row = rows[name]
        assert row['params'] == params
        assert row['gmacs'] == pytest.approx(TORCHVISION_GMACS[name], abs=0.01)
        assert row['gflops'] == pytest.approx(2 * row['gmacs'])
        assert 'official_in1k' in row['pretrained_tags']
    assert rows['eca_resnet50']['eca_kernel_sizes'] == [3, 5, 5, 7]


@pytest.mark.slow
def test_models_table(capsys):
    assert main(['models']) == 0
    out = capsys.readouterr().out
    assert '| eca_resnet50 | 25,557,112 | 8.18 | 4.09 | 3,5,5,7 |' in out
    assert out.rstrip().endswith('| 32x32 | study model (CIFAR-10) |')  # the study models follow the releases


def test_models_lists_the_study_models(rows):
    """The study models of both presets, marked: ResNet-18 with a 3x3 stem and 10 classes has 11,173,962 parameters
    (the usual CIFAR ResNet-18) and 0.56 GMACs at 32x32; ECA adds its kernel sizes, 2 x (3+5+7+7). The report's
    ImageNet-stem ResNet-18 is torchvision's with 10 classes (11,181,642) and its adaptive ECA k = 3,5,5,5 (gamma 2,
    b 1 on 64..512 channels); its stride-4 stem leaves 0.037 GMACs at 32x32."""
    study = {n: r for n, r in rows.items() if r['kind'] == 'study'}
    assert sorted(study) == sorted(f'{a}resnet18_{preset}' for a in ('', 'se_', 'cbam_', 'eca_')
                                   for preset in ('cifar', 'rc2020'))
    assert all(rows[n]['kind'] == 'release' for n in EXPECTED_PARAMS)
    assert study['resnet18_cifar']['params'] == 11_173_962 and study['resnet18_cifar']['eca_kernel_sizes'] is None
    assert study['eca_resnet18_cifar']['params'] == 11_173_962 + 44
    assert study['eca_resnet18_cifar']['eca_kernel_sizes'] == [3, 5, 7, 7]
    assert study['resnet18_cifar']['img_size'] == 32
    assert study['resnet18_cifar']['gmacs'] == pytest.approx(0.56, abs=0.01)
    assert study['resnet18_rc2020']['params'] == 11_181_642 and study['resnet18_rc2020']['img_size'] == 32
    assert study['eca_resnet18_rc2020']['params'] == 11_181_642 + 2 * (3 + 5 + 5 + 5)
    assert study['eca_resnet18_rc2020']['eca_kernel_sizes'] == [3, 5, 5, 5]
    assert study['resnet18_rc2020']['gmacs'] == pytest.approx(0.037, abs=0.001)


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(['nope'])
    assert e.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
