"""The shipped train.py recipes and sweep parse against timm's own train.py; bad input fails before training."""
from pathlib import Path

import pytest
import timm
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
    expected |= {f'{ds}/{a}_resnet18.yaml' for ds in ('cifar10', 'cifar100', 'fashion_mnist_study')
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


def test_paper_recipes_follow_the_paper(timm_scripts):
    args = parse_train_args(timm_scripts / 'train.py',
                            ['--config', str(CONFIGS / 'imagenet/eca_resnet50_paper.yaml')]).args
    assert (args.opt, args.momentum, args.weight_decay, args.epochs) == ('momentum', 0.9, 1e-4, 100)
    assert (args.sched, args.decay_epochs, args.decay_rate, args.warmup_epochs) == ('step', 30, 0.1, 0)
    assert args.lr_base * 8 * args.batch_size / args.lr_base_size == pytest.approx(0.1 * 8 * 32 / 256)


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
    with pytest.raises(ValueError, match=r"unknown model 'eca_resnet19'.*close: .*eca_resnet18"):
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


@pytest.mark.parametrize('recipe', sorted(CONFIGS.glob('imagenet/*_paper.yaml')), ids=lambda p: p.stem)
def test_paper_recipes_decay_every_parameter_like_main_py(recipe, timm_scripts):
    """The official main.py decays all parameters (BatchNorm and biases too); timm's default skips them."""
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    args = parse_train_args(timm_scripts / 'train.py', ['--config', str(recipe)]).args
    assert args.opt_kwargs == {'filter_bias_and_bn': False}
    assert 'weight decay on every parameter' in recipe.read_text()
    model = timm.create_model(args.model, num_classes=10, device='meta')
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    decays = [g['weight_decay'] for g in optimizer.param_groups for _ in g['params']]
    assert len(decays) == len(list(model.parameters())) and set(decays) == {args.weight_decay}
