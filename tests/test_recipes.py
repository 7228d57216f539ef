"""The shipped train.py recipes and sweep parse against timm's own train.py; bad input fails before training."""
import re
from pathlib import Path
from typing import List

import pytest
import timm
import torch
import yaml

import eca_timm  # noqa: F401
from eca_timm import cli
from eca_timm.train.preflight import check_train_args, parse_train_args
from eca_timm.train.run import resolve_script

CONFIGS = Path(__file__).resolve().parents[1] / 'train_configs'
# sweeps/ holds W&B sweeps, coco/ recipes of `eca-timm detect` (tests/test_detection.py): neither is for train.py
RECIPES = sorted(p for p in CONFIGS.glob('*/*.yaml') if p.parent.name not in ('sweeps', 'coco'))


def test_recipe_set_is_complete():
    names = {str(p.relative_to(CONFIGS)) for p in RECIPES}
    expected = {f'imagenet/eca_resnet{d}_paper.yaml' for d in (18, 34, 50, 101, 152)}
    expected |= {'imagenet/eca_mobilenetv2_paper.yaml', 'imagenet/eca_resnet50_rsb_a2.yaml',
                 'fashion_mnist/eca_resnet18_cifar.yaml'}
    expected |= {f'{ds}/{a}_resnet18.yaml' for ds in ('cifar10', 'cifar100', 'fashion_mnist_study', 'cifar10_rc2020')
                 for a in ('none', 'se', 'cbam', 'eca')}
    assert names == expected


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_recipe_parses_with_train_py(recipe, timm_scripts):
    text = recipe.read_text()
    assert text.startswith('# ') and '# Expected:' in text, 'header comment with provenance and expected accuracy'
    config = yaml.safe_load(text)
    assert config['device_modules'] == ['eca_timm']
    args = check_train_args(timm_scripts / 'train.py', ['--config', str(recipe)])
    for key, value in config.items():  # train.py's own parser took every value
        assert getattr(args, key) == value, key
    assert timm.is_model(args.model)


def _processes(recipe: Path) -> int:
    """The process count of the recipe's own launch line (``./distributed_train.sh N --config ...``)."""
    return int(re.search(r'distributed_train\.sh (\d+) --config', recipe.read_text()).group(1))


def _epoch_lrs(args, world_size: int = 1) -> List[float]:
    """The lr of every epoch train.py would train with: its lr_base rule, then timm's scheduler stepped per epoch."""
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    lr = args.lr or args.lr_base * args.batch_size * world_size / args.lr_base_size  # train.py's linear rule
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler, epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=1)
    lrs = []
    for epoch in range(epochs):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]['lr'])
    return lrs


# The authors' scripts (BangguWu/ECANet): main.py trains the ResNets, light_main.py MobileNetV2, both with the
# README's command `CUDA_VISIBLE_DEVICES=0,1,2,3 python main.py ...`: one DataParallel process over 4 GPUs.
OFFICIAL = {
    'main.py': dict(batch=256, lr=lambda e: 0.1 * 0.1 ** (e // 30), epochs=100, weight_decay=1e-4),
    'light_main.py': dict(batch=96, lr=lambda e: 0.045 * 0.98 ** e, epochs=400, weight_decay=4e-5),
}
OFFICIAL_GPUS = 4


@pytest.mark.parametrize('recipe', sorted(CONFIGS.glob('imagenet/*_paper.yaml')), ids=lambda p: p.stem)
def test_paper_recipes_train_like_the_authors_scripts(recipe, timm_scripts):
    """Schedule, optimizer and BatchNorm batch of the authors' script the header names, 4 GPUs x 64 (or 24) images;
    BatchNorm running statistics those of process 0, as DataParallel keeps replica 0's and main.py never averages."""
    text = recipe.read_text()
    script = 'light_main.py' if 'mobilenetv2' in recipe.name else 'main.py'
    assert f'the authors\' {script}' in text
    official = OFFICIAL[script]
    args = parse_train_args(timm_scripts / 'train.py', ['--config', str(recipe)]).args
    assert _processes(recipe) == OFFICIAL_GPUS and args.batch_size * OFFICIAL_GPUS == official['batch']
    assert (args.opt, args.momentum, args.weight_decay, args.epochs) == (
        'momentum', 0.9, official['weight_decay'], official['epochs'])
    assert _epoch_lrs(args, OFFICIAL_GPUS) == pytest.approx([official['lr'](e) for e in range(official['epochs'])])
    assert args.dist_bn == 'broadcast'


def test_sweep_parameters_are_train_py_flags(timm_scripts):
    sweep = yaml.safe_load((CONFIGS / 'sweeps/cifar10_attention.yaml').read_text())
    command = sweep['command']
    assert command[2:5] == ['-m', 'eca_timm.run', '${program}'] and sweep['program'] == 'train.py'
    params = sweep['parameters']
    sampled = {k: (v['values'][-1] if 'values' in v else v['min']) for k, v in params.items()}
    fixed = [c for c in command[5:] if not c.startswith('${')]
    argv = [c.replace('train_configs/', f'{CONFIGS}/') for c in fixed] + [f'--{k}={v}' for k, v in sampled.items()]
    args = check_train_args(timm_scripts / 'train.py', argv)
    assert (args.model, args.opt, args.lr, args.batch_size) == (
        'eca_resnet18_cifar', 'adamw', params['lr']['min'], 256)
    assert args.log_wandb and args.epochs == 50


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_unknown_recipe_key_fails(tmp_path, timm_scripts):
    bad = _write(tmp_path / 'bad.yaml', {'device_modules': ['eca_timm'], 'model': 'eca_resnet18', 'batch_sz': 8})
    with pytest.raises(ValueError, match=r"unknown train.py argument\(s\) 'batch_sz' \(did you mean 'batch_size'\?\)"):
        check_train_args(timm_scripts / 'train.py', ['--config', str(bad)])


def test_unknown_model_fails(tmp_path, timm_scripts):
    bad = _write(tmp_path / 'bad.yaml', {'device_modules': ['eca_timm'], 'model': 'eca_resnet19'})
    with pytest.raises(ValueError, match=r"unknown model 'eca_resnet19'.*did you mean .*'eca_resnet18'"):
        check_train_args(timm_scripts / 'train.py', ['--config', str(bad)])


def test_dataset_without_splits_fails(tmp_path, timm_scripts):
    (tmp_path / 'data' / 'cat').mkdir(parents=True)  # classes directly under the root: no train/validation
    (tmp_path / 'data' / 'train' / 'cat').mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has no 'validation' split folder"):
        check_train_args(timm_scripts / 'train.py', ['--model', 'eca_resnet18', '--data-dir', str(tmp_path / 'data')])
    with pytest.raises(FileNotFoundError, match='does not exist'):
        check_train_args(timm_scripts / 'train.py', ['--model', 'eca_resnet18', '--data-dir', str(tmp_path / 'nope')])


def test_missing_script_fails(tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_SCRIPTS', str(tmp_path))
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"timm script 'train.py' not found .*TIMM_SCRIPTS"):
        resolve_script('train.py')


def test_cli_reports_bad_recipe_before_training(tmp_path, timm_scripts, capsys):
    bad = _write(tmp_path / 'bad.yaml', {'device_modules': ['eca_timm'], 'model': 'eca_resnet18', 'lr_sched': 'x'})
    out = tmp_path / 'out'
    rc = cli.console(['run', '--scripts-dir', str(timm_scripts), 'train.py', '--config', str(bad),
                   '--output', str(out)])
    assert rc == 2
    assert "eca-timm run: error: recipe" in capsys.readouterr().err
    assert not out.exists()


def _weight_decays(args) -> List[float]:
    """The weight decay train.py's optimizer gives each parameter of the recipe's model."""
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    model = timm.create_model(args.model, num_classes=10, device='meta')
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    decays = [g['weight_decay'] for g in optimizer.param_groups for _ in g['params']]
    assert len(decays) == len(list(model.parameters()))
    return decays


@pytest.mark.parametrize('recipe', sorted(CONFIGS.glob('imagenet/*_paper.yaml')), ids=lambda p: p.stem)
def test_paper_recipes_decay_every_parameter_like_main_py(recipe, timm_scripts):
    """The official main.py decays all parameters (BatchNorm and biases too); timm's default skips them."""
    args = parse_train_args(timm_scripts / 'train.py', ['--config', str(recipe)]).args
    assert args.opt_kwargs == {'filter_bias_and_bn': False}
    assert 'weight decay on every parameter' in recipe.read_text()
    assert set(_weight_decays(args)) == {args.weight_decay}


RC2020 = sorted(CONFIGS.glob('cifar10_rc2020/*.yaml'))
DEFAULT_STUDY = sorted(CONFIGS.glob('cifar10/*.yaml')) + sorted(CONFIGS.glob('cifar100/*.yaml'))


def _torch_multistep_lrs(epochs: int) -> List[float]:
    """train_cifar.py's schedule: torch's MultiStepLR([100, 150]) on SGD lr 0.1, stepped after every epoch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[100, 150])
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize('recipe', RC2020, ids=lambda p: p.stem)
def test_rc2020_preset_trains_like_train_cifar_py(recipe, timm_scripts):
    """digantamisra98/Reproducibilty-Challenge-ECANET train_cifar.py: SGD 0.1 momentum 0.9, weight decay 5e-4 on
    every parameter, batch 128, flip, ImageNet mean/std, MultiStepLR [100, 150]; its notebook and figure: 50 epochs."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    args = parse_train_args(timm_scripts / 'train.py', ['--config', str(recipe)]).args
    assert args.model == f'{recipe.stem.split("_")[0]}_resnet18_rc2020'.replace('none_', '')
    assert (args.dataset, args.num_classes, args.input_size) == ('torch/cifar10', 10, [3, 32, 32])
    assert args.batch_size == 128
    assert (args.opt, args.lr, args.momentum, args.weight_decay) == ('momentum', 0.1, 0.9, 5e-4)
    assert set(_weight_decays(args)) == {5e-4}
    assert (tuple(args.mean), tuple(args.std)) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert (args.hflip, args.smoothing, args.color_jitter, args.mixup, args.reprob) == (0.5, 0, 0, 0, 0)
    assert not args.amp  # fp32, as train_cifar.py
    assert args.epochs == 50 and _epoch_lrs(args) == pytest.approx(_torch_multistep_lrs(50)) == [0.1] * 50
    full = parse_train_args(timm_scripts / 'train.py', ['--config', str(recipe), '--epochs', '200']).args
    assert _epoch_lrs(full) == pytest.approx(_torch_multistep_lrs(200))  # and train_cifar.py's two decays
    assert 'eca-timm study train_configs/cifar10_rc2020/ --seeds 5' in recipe.read_text()


def _stage_blocks(model) -> list:
    return [getattr(model, f'layer{i}')[0] for i in range(1, 5)]


def _study_facts(suffix: str) -> dict:
    """What the study's models are, read off the models (suffix _cifar: the default preset, _rc2020: the report's)."""
    def model(name):
        torch.manual_seed(0)
        return timm.create_model(name + suffix)
    cbam = _stage_blocks(model('cbam_resnet18'))[0].se
    spatial = cbam.spatial.conv
    return dict(
        eca=','.join(map(str, model('eca_resnet18').eca_kernel_sizes)),
        se=','.join(str(b.se.fc1.out_channels) for b in _stage_blocks(model('se_resnet18'))),
        cbam_spatial=f'{spatial.conv.kernel_size[0]}x{spatial.conv.kernel_size[1]}',
        cbam_spatial_bias=spatial.conv.bias is not None, cbam_bn_momentum=spatial.bn.momentum,
        cbam_mlp_bias=cbam.channel.fc1.bias is not None,
        zero_init_last=bool((_stage_blocks(model('resnet18'))[0].bn2.weight == 0).all()),
        stem=model('resnet18').conv1.kernel_size[0],
    )


def test_default_preset_headers_list_every_difference_from_rc2020(timm_scripts):
    """Each default-preset header lists how it differs from train_configs/cifar10_rc2020/; every listed fact is
    read off the models and optimizers here, so a header cannot claim what the code does not do."""
    ours, theirs = _study_facts('_cifar'), _study_facts('_rc2020')
    assert (ours['eca'], theirs['eca']) == ('3,5,7,7', '3,5,5,5')
    assert (ours['se'], theirs['se']) == ('8,8,16,32', '4,8,16,32')
    assert (ours['cbam_spatial'], ours['cbam_spatial_bias'], ours['cbam_bn_momentum'], ours['cbam_mlp_bias']) == (
        '7x7', False, 0.1, False)
    assert (theirs['cbam_spatial'], theirs['cbam_spatial_bias'], theirs['cbam_bn_momentum'],
            theirs['cbam_mlp_bias']) == ('3x3', True, 0.01, True)
    assert (ours['zero_init_last'], theirs['zero_init_last'], ours['stem'], theirs['stem']) == (True, False, 3, 7)
    rc2020 = parse_train_args(timm_scripts / 'train.py', ['--config', str(RC2020[0])]).args
    for recipe in DEFAULT_STUDY:
        args = parse_train_args(timm_scripts / 'train.py', ['--config', str(recipe)]).args
        assert len(set(_weight_decays(args))) == 2  # timm's default: no decay on BatchNorm and biases
        assert args.mean != rc2020.mean and (args.sched, args.epochs) == ('cosine', 200)
        assert args.train_crop_mode == rc2020.train_crop_mode  # the same stand-in for RandomCrop(32, 4)
        text = ' '.join(line.lstrip('# ') for line in recipe.read_text().splitlines() if line.startswith('#'))
        for claim in ('train_configs/cifar10_rc2020/', 'CIFAR stem', '7x7/2 conv + max-pool', '200 epochs, cosine',
                      '50 epochs at a constant lr 0.1', f'ECA k {ours["eca"]}', f'adaptive {theirs["eca"]}',
                      f'SE hidden widths {ours["se"]}', f'vs Echo\'s {theirs["se"]}',
                      'CBAM: 7x7 spatial conv without bias, BatchNorm momentum 0.1, bias-free MLP',
                      '3x3 conv with bias, momentum 0.01, biased MLP', 'mean/std vs ImageNet\'s',
                      'weight decay skips BatchNorm and biases', 'decays every parameter',
                      'last BN of each block zero-initialised', 'RandomCrop(32, 4)'):
            assert claim in text, f'{recipe.relative_to(CONFIGS)}: {claim!r}'
