"""Hub side: manifest -> registry cfgs, ``eca-timm publish`` folders and cards, offline round trip through the real
huggingface_hub cache, and uploads / downloads through huggingface_hub's own HfApi to its HTTP boundary."""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

import eca_timm
from eca_timm.models import _pretrained
from eca_timm.weights import manifest as manifest_mod
from eca_timm.cli import main
from fake_hub import TOKEN, committed, fake_hub, same_files  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent

# Released top-1 / top-5 (REFERENCE.md), typed out independently of hub/manifest.json.
RELEASED_METRICS = {
    'eca_resnet18': (70.92, 89.93), 'eca_resnet34': (74.21, 91.83), 'eca_resnet50': (77.42, 93.62),
    'eca_resnet101': (78.65, 94.34), 'eca_resnet152': (78.92, 94.55), 'eca_mobilenetv2': (72.56, 90.81),
}


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith('---\n')
    return yaml.safe_load(text.split('---\n')[1])


def _randomized(name: str, seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs)
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n.endswith('running_var'):
                b.uniform_(0.5, 1.5)
            elif n.endswith('running_mean'):
                b.uniform_(-0.2, 0.2)
    return model.eval()


def _train_folder(path: Path, name: str = 'eca_resnet18', num_classes: int = 10, in_chans: int = 3) -> dict:
    """A timm train.py output folder: model_best.pth.tar (with EMA), args.yaml, summary.csv."""
    path.mkdir(parents=True)
    kw = dict(num_classes=num_classes, in_chans=in_chans)
    model, ema = _randomized(name, 1, **kw), _randomized(name, 2, **kw)
    input_size = None if in_chans == 3 else [in_chans, 28, 28]  # train.py: in_chans=None, taken from input_size
    mean_std = None if in_chans == 3 else [0.5] * in_chans
    args = dict(model=name, num_classes=num_classes, dataset='torch/cifar10', data_dir='/data/cifar10', epochs=3,
                batch_size=128, opt='sgd', lr=0.1, momentum=0.9, weight_decay=5e-4, sched='cosine', smoothing=0.1,
                model_ema=True, eval_metric='top1', img_size=None, input_size=input_size, crop_pct=None, mean=mean_std,
                std=mean_std, interpolation='', model_kwargs={}, in_chans=None)
    torch.save({'epoch': 1, 'arch': name, 'state_dict': model.state_dict(), 'state_dict_ema': ema.state_dict(),
                'optimizer': {}, 'args': argparse.Namespace(**args), 'metric': 61.5, 'version': 2},
               path / 'model_best.pth.tar')
    (path / 'args.yaml').write_text(yaml.safe_dump(args))
    rows = [(0, 2.1, 1.9, 40.25, 88.5, 0.1), (1, 1.5, 1.2, 61.5, 95.75, 0.05), (2, 1.3, 1.3, 60.0, 96.0, 0.0)]
    with open(path / 'summary.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr'])
        w.writerows(rows)
    return {'model': model, 'ema': ema, 'best': rows[1]}


def test_manifest_generates_registry_cfgs(monkeypatch):
    """Unpublished tags stay registered (data config, released metrics) but timm does not advertise weights for
    them; a published tag (or one under $ECA_TIMM_HUB_ORG, an organisation that published it) gets its repo."""
    monkeypatch.delenv(_pretrained.HUB_ORG_ENV, raising=False)
    manifest = _pretrained.load_manifest()
    for name, (top1, top5) in RELEASED_METRICS.items():
        tag = f'{name}.official_in1k'
        cfg = timm.get_pretrained_cfg(tag)
        entry = manifest['weights'][tag]
        assert entry['published'] is False and cfg.hf_hub_id is None
        assert (entry['metrics']['top1'], entry['metrics']['top5']) == (top1, top5)
        assert f'top-1 {top1:.2f}, top-5 {top5:.2f}' in cfg.description
        assert tag in timm.list_models(name, include_tags=True)
        assert tag not in timm.list_pretrained(f'{name}*') and not timm.is_model_pretrained(name)
        assert _pretrained.pretrained_cfgs([name])[tag].get('hf_hub_id') is None
    monkeypatch.setenv(_pretrained.HUB_ORG_ENV, 'my-org')
    cfg = _pretrained.pretrained_cfgs(['eca_resnet50'])['eca_resnet50.official_in1k']
    assert cfg['hf_hub_id'] == 'my-org/eca_resnet50.official_in1k'


def test_unpublished_weights_error_names_the_release_file():
    with pytest.raises(RuntimeError, match=r"eca_resnet50\.official_in1k: these weights are not published .* "
                                           r"pretrained_cfg_overlay=dict\(file='eca_resnet50_k3557\.pth\.tar'\)"):
        timm.create_model('eca_resnet50', pretrained=True)


def test_publish_train_folder_dry_run(tmp_path):
    run = _train_folder(tmp_path / 'train' / '20261125-eca_resnet18')
    out = tmp_path / 'eca_resnet18.c10'
    assert main(['publish', str(tmp_path / 'train' / '20261125-eca_resnet18'), '--repo-id', 'me/eca_resnet18.c10',
                 '--dry-run', '--out', str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors',
                                                     'train_hparams.yaml']
    assert yaml.safe_load((out / 'train_hparams.yaml').read_text())['lr'] == 0.1  # args.yaml, as timm uploads it
    weights = load_file(out / 'model.safetensors')
    ema = run['ema'].state_dict()
    assert weights.keys() == ema.keys() and all(torch.equal(weights[k], ema[k]) for k in ema)  # EMA preferred
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'eca_resnet18' and config['num_classes'] == 10
    assert config['pretrained_cfg']['tag'] == 'c10'
    assert 'hf_hub_id' not in config['pretrained_cfg'] and 'notes' not in config['pretrained_cfg']
    assert 'num_classes' not in config['model_args']  # transformers passes its own (issue 19); timm: the top level
    assert config['eca_timm']['source']['file'] == 'model_best.pth.tar'

    meta = _front_matter(out / 'README.md')
    assert meta['library_name'] == 'timm' and meta['license'] == 'mit' and meta['datasets'] == ['cifar10']
    results = meta['model-index'][0]['results'][0]
    assert meta['model-index'][0]['name'] == 'eca_resnet18.c10'
    epoch, _, _, top1, top5, _ = run['best']
    assert [m['value'] for m in results['metrics']] == [top1, top5]
    assert results['dataset']['split'] == 'test'  # torchvision's CIFAR-10: train.py evaluates on its test set
    card = (out / 'README.md').read_text()
    # summary.csv counts epochs from 0; args.yaml says 3 epochs: the best is the 2nd
    assert f"after epoch {epoch + 1} of 3 (summary.csv's epoch {epoch}, counted from 0" in card
    # a dry run is not on the Hub: its card loads the folder itself
    assert f"timm.create_model('local-dir:{out}'" in card and "create_model('hf-hub:" not in card
    assert f"pipeline('image-classification', model='{out}')" in card
    assert '## Intended use and limitations' in card
    assert 'import eca_timm' in card and '- lr: `0.1`' in card and '3, 5, 7, 7' in card and ".convert('RGB')" in card
    assert '- **Model Stats:**' in card and '### Feature Map Extraction' in card and '### Image Embeddings' in card
    assert '@inproceedings{wang2020eca' in card and '@misc{rw2019timm' in card

    # --no-ema publishes state_dict; an existing --out needs --force
    with pytest.raises(FileExistsError, match='--force'):
        main(['publish', str(tmp_path / 'train' / '20261125-eca_resnet18'), '--repo-id', 'me/x', '--dry-run',
              '--out', str(out), '--no-ema'])
    main(['publish', str(tmp_path / 'train' / '20261125-eca_resnet18'), '--repo-id', 'me/x', '--dry-run',
          '--out', str(out), '--no-ema', '--force'])
    weights = load_file(out / 'model.safetensors')
    assert torch.equal(weights['fc.weight'], run['model'].fc.weight)
    # summary.csv evaluated the EMA weights: the card of the non-EMA weights claims no results
    assert 'model-index' not in _front_matter(out / 'README.md')
    assert 'summary.csv evaluates the EMA weights, these are the non-EMA weights' in (out / 'README.md').read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eca_resnet18.c10', 'train']  # no temp folders left


@pytest.mark.parametrize('name, kernel_line', [('resnet18_cifar', 'none (a study baseline)'),
                                                 ('eca_resnet18_cifar', '3, 5, 7, 7')])
def test_publish_study_model_and_reload(tmp_path, name, kernel_line):
    """The attention study's models (no ECA for the baselines) publish and reload with local-dir:."""
    run = _train_folder(tmp_path / 'run', name=name, in_chans=1)
    out = tmp_path / 'repo'
    assert main(['publish', str(tmp_path / 'run'), '--repo-id', f'me/{name}.c10', '--dry-run', '--out', str(out)]) == 0
    assert kernel_line in (out / 'README.md').read_text()
    assert ".convert('L')" in (out / 'README.md').read_text()  # a grayscale model's usage example
    reloaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)  # grayscale: train.py took in_chans from input_size, as args.yaml records
    with torch.no_grad():
        assert torch.equal(reloaded(x), run['ema'](x))


def test_publish_resumed_run_summary(tmp_path):
    """A resumed train.py run repeats summary.csv's header and the epoch it was killed in: the last row counts."""
    run = tmp_path / 'run'
    _train_folder(run)
    with open(run / 'summary.csv', 'a', newline='') as f:
        w = csv.writer(f)
        w.writerow(['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr'])
        w.writerow([1, 1.4, 1.1, 62.5, 96.25, 0.05])  # epoch 1 redone after the resume
    out = tmp_path / 'repo'
    assert main(['publish', str(run), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(out)]) == 0
    metrics = _front_matter(out / 'README.md')['model-index'][0]['results'][0]['metrics']
    assert [m['value'] for m in metrics] == [62.5, 96.25]
    assert "after epoch 2 of 3 (summary.csv's epoch 1," in (out / 'README.md').read_text()


def _fake_official18(tmp_path: Path) -> Path:
    from official_eca import official_resnet, randomize_, save_official
    src = tmp_path / 'eca_resnet18_k3577.pth.tar'
    save_official(randomize_(official_resnet(18, (3, 5, 7, 7))), src)
    return src


def _record_sha(monkeypatch, sha256: str) -> None:
    """The manifest as if it recorded ``sha256`` for eca_resnet18.official_in1k (as ``release --push`` does)."""
    from eca_timm.weights import convert as convert_mod
    entry = dict(_pretrained.manifest_entry('eca_resnet18.official_in1k'))
    entry['source'] = dict(entry['source'], sha256=sha256)
    lookup = lambda tag: entry if tag == 'eca_resnet18.official_in1k' else None  # noqa: E731
    for module in (convert_mod, manifest_mod):
        monkeypatch.setattr(module, 'manifest_entry', lookup)


def test_released_metrics_only_for_the_file_whose_sha256_is_recorded(tmp_path, monkeypatch):
    """Issue 21.1: the manifest's top-1/top-5 go on a card (and into its model-index) only for the file whose sha256
    it records; a file named like the release file gets them in words, as the release's numbers, not its own."""
    from eca_timm.weights.checkpoint import file_sha256
    src = _fake_official18(tmp_path)
    converted, out = tmp_path / 'converted', tmp_path / 'repo'
    main(['convert', str(src), '--model', 'eca_resnet18', '--out', str(converted)])
    for folder in (converted, None):
        if folder is None:  # publishing the converted folder says the same
            main(['publish', str(converted), '--repo-id', 'me/eca_resnet18.official_in1k', '--dry-run', '--out',
                  str(out)])
            folder = out
        meta, card = _front_matter(folder / 'README.md'), (folder / 'README.md').read_text()
        assert 'model-index' not in meta and 'datasets' not in meta, folder
        results = card.split('## Results')[1]
        assert "The official release reports top-1 70.92, top-5 89.93 on imagenet-1k for " \
               "`eca_resnet18_k3577.pth.tar`" in results
        assert "These are the release's numbers, not this file's: no sha256 is recorded yet" in results
        assert 'description' not in json.loads((folder / 'config.json').read_text())['pretrained_cfg']
    before, after = load_file(converted / 'model.safetensors'), load_file(out / 'model.safetensors')
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    config = json.loads((out / 'config.json').read_text())
    assert config['pretrained_cfg']['tag'] == 'official_in1k' and 'label_names' not in config['pretrained_cfg']
    assert config['label_names'] == json.loads((converted / 'config.json').read_text())['label_names']
    assert len(config['label_names']) == 1000
    assert config['eca_timm']['source'] == {'file': src.name, 'sha256': file_sha256(str(src))}  # its own source

    # the manifest records another file's sha256: this folder is still not the released file
    _record_sha(monkeypatch, '1' * 64)
    main(['publish', str(converted), '--repo-id', 'me/eca_resnet18.official_in1k', '--dry-run', '--out', str(out),
          '--force'])
    assert 'model-index' not in _front_matter(out / 'README.md')
    assert "its sha256 differs from the 1111" in (out / 'README.md').read_text()

    # it records this file's: the conversion, and the publish of that folder, carry the released numbers
    _record_sha(monkeypatch, file_sha256(str(src)))
    main(['publish', str(converted), '--repo-id', 'me/eca_resnet18.official_in1k', '--dry-run', '--out', str(out),
          '--force'])
    main(['convert', str(src), '--model', 'eca_resnet18', '--out', str(converted), '--force'])
    for folder in (converted, out):
        meta = _front_matter(folder / 'README.md')
        results = meta['model-index'][0]['results'][0]
        assert [m['value'] for m in results['metrics']] == list(RELEASED_METRICS['eca_resnet18']), folder
        assert results['dataset'] == {'name': 'imagenet-1k', 'type': 'imagenet-1k', 'split': 'validation'}
        assert meta['datasets'] == ['imagenet-1k']
        assert "release's numbers" not in (folder / 'README.md').read_text()


def test_run_under_a_released_tag_keeps_its_own_metrics_and_dataset(tmp_path):
    """Issue 12.3: a 10-class CIFAR run published as me/eca_resnet18.official_in1k claims its own numbers, not
    ImageNet's 70.92; a bare checkpoint (no summary.csv) claims none."""
    run = _train_folder(tmp_path / 'run')
    out = tmp_path / 'repo'
    main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.official_in1k', '--dry-run', '--out',
          str(out)])
    meta = _front_matter(out / 'README.md')
    assert meta['datasets'] == ['cifar10']
    assert [m['value'] for m in meta['model-index'][0]['results'][0]['metrics']] == [run['best'][3], run['best'][4]]
    main(['publish', str(tmp_path / 'run' / 'model_best.pth.tar'), '--repo-id', 'me/eca_resnet18.official_in1k',
          '--dry-run', '--out', str(tmp_path / 'bare')])
    meta = _front_matter(tmp_path / 'bare' / 'README.md')
    assert 'model-index' not in meta and 'datasets' not in meta
    assert '70.92' not in (tmp_path / 'bare' / 'README.md').read_text()


def test_publish_needs_out_for_dry_run_and_model_for_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match='--dry-run writes the repo folder to --out DIR'):
        main(['publish', str(tmp_path), '--repo-id', 'me/x', '--dry-run'])
    ckpt = tmp_path / 'official.pth.tar'
    torch.save({'arch': 'se_resnet50', 'state_dict': timm.create_model('eca_resnet18').state_dict()}, ckpt)
    with pytest.raises(ValueError, match=r"cannot tell the model: the checkpoint's arch 'se_resnet50' is not a "
                                         r"registered ECA model \(did you mean 'eca_resnet50'.*\); .*; pass --model"):
        main(['publish', str(ckpt), '--repo-id', 'me/x', '--dry-run', '--out', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


@pytest.fixture
def checkout_hub(tmp_path, monkeypatch):
    """A copy of hub/ standing in for the source checkout's, so --record cannot touch the real manifest."""
    checkout = tmp_path / 'checkout-hub'
    shutil.copytree(ROOT / 'hub', checkout)
    monkeypatch.setattr(manifest_mod, '_checkout_hub', lambda: checkout)
    monkeypatch.setattr(_pretrained, 'hub_data', lambda: checkout)
    _pretrained.load_manifest.cache_clear()
    yield checkout
    _pretrained.load_manifest.cache_clear()


@pytest.mark.slow
def test_publish_uploads_through_huggingface_hub(tmp_path, fake_hub, checkout_hub):
    """What reaches the Hub's HTTP API through huggingface_hub's own HfApi: the private repo, the branch, one
    commit with the card, config, weights and args; a repo that has a card and weights is left alone unless
    --force."""
    from safetensors.torch import load as load_bytes
    run = _train_folder(tmp_path / 'run')
    argv = ['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.c10', '--private', '--revision', 'v1',
            '--commit-message', 'first weights']
    assert main(argv) == 0
    repo = fake_hub.repos['me/eca_resnet18.c10']
    assert repo['private'] is True and set(repo['branches']) == {'main', 'v1'}
    assert [c[:3] for c in fake_hub.commits] == [('me/eca_resnet18.c10', 'v1', 'first weights')]
    files = committed(fake_hub, 'me/eca_resnet18.c10')
    assert sorted(files) == ['README.md', 'config.json', 'model.safetensors', 'train_hparams.yaml']
    weights, ema = load_bytes(files['model.safetensors']), run['ema'].state_dict()
    assert weights.keys() == ema.keys() and all(torch.equal(weights[k], ema[k]) for k in ema)
    card = files['README.md'].decode()
    assert "timm.create_model('hf-hub:me/eca_resnet18.c10'" in card and 'local-dir:' not in card
    assert set(fake_hub.authorizations) - {None} == {f'Bearer {TOKEN}'}  # the token reached the API, nothing else

    # the repo now has a card and weights: refused without --force, nothing uploaded
    with pytest.raises(FileExistsError, match=r'me/eca_resnet18\.c10@v1 already has README\.md, config\.json, '
                                              r'model\.safetensors; pass --force'):
        main(argv)
    assert len(fake_hub.commits) == 1
    # --force uploads; --record lists the weights as a pretrained tag in (a copy of) the checkout's manifest
    assert main(argv + ['--force', '--record']) == 0
    assert len(fake_hub.commits) == 2
    entry = json.loads((checkout_hub / 'manifest.json').read_text())['weights']['eca_resnet18.c10']
    assert entry['repo'] == 'me/eca_resnet18.c10' and entry['dataset'] == 'cifar10'
    assert (entry['metrics']['top1'], entry['metrics']['top5']) == (61.5, 95.75)
    cfg = _pretrained.pretrained_cfgs(['eca_resnet18'])['eca_resnet18.c10']
    assert cfg['hf_hub_id'] == 'me/eca_resnet18.c10' and 'top-1 61.50, top-5 95.75' in cfg['description']
    _pretrained.load_manifest.cache_clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkout-hub', 'run']

    # a published folder (--out) is the very folder that was uploaded
    main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/other', '--out', str(tmp_path / 'kept')])
    assert same_files(tmp_path / 'kept', committed(fake_hub, 'me/other'))


def _lay_into_hf_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """huggingface_hub's cache layout: models--ORG--NAME/refs/main -> snapshots/<commit>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = '0123456789abcdef0123456789abcdef01234567'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)
    shutil.copytree(folder, repo / 'snapshots' / commit)


OFFLINE_CHECK = textwrap.dedent('''
    import sys, torch, timm, eca_timm
    src, local_dir, x_path = sys.argv[1:4]
    x = torch.load(x_path)
    source = timm.create_model('eca_resnet50', checkpoint_path=src).eval()
    models = {
        'pretrained=True': timm.create_model('eca_resnet50', pretrained=True),
        'hf-hub': timm.create_model('hf-hub:my-org/eca_resnet50.official_in1k', pretrained=True),
        'local-dir': timm.create_model('local-dir:' + local_dir, pretrained=True),
    }
    assert models['pretrained=True'].pretrained_cfg['hf_hub_id'] == 'my-org/eca_resnet50.official_in1k'
    with torch.no_grad():
        ref = source(x)
        for name, model in models.items():
            assert torch.equal(model.eval()(x), ref), name
    for name in ('eca_resnet18', 'eca_mobilenetv2'):  # not in the cache / a corrupt file
        try:
            timm.create_model(name, pretrained=True)
        except RuntimeError as e:
            print('ERROR', name, e)
    print('IDENTICAL', len(models))
''')


@pytest.mark.slow
def test_offline_round_trip_through_hub_cache(tmp_path):
    source = _randomized('eca_resnet50', 5)
    src = tmp_path / 'eca_resnet50.pth.tar'
    torch.save({'epoch': 0, 'arch': 'eca_resnet50', 'state_dict': source.state_dict()}, src)
    out = tmp_path / 'eca_resnet50.official_in1k'
    main(['publish', str(src), '--repo-id', 'my-org/eca_resnet50.official_in1k', '--dry-run', '--out', str(out)])
    meta = _front_matter(out / 'README.md')  # random weights, not the released file: no released metrics
    assert 'model-index' not in meta
    cache = tmp_path / 'hf-cache'
    _lay_into_hf_cache(out, cache, 'my-org/eca_resnet50.official_in1k')
    corrupt = cache / 'models--my-org--eca_mobilenetv2.official_in1k' / 'snapshots' / ('0' * 40)
    corrupt.mkdir(parents=True)
    (corrupt / 'model.safetensors').write_bytes(b'not a safetensors file')
    (corrupt.parent.parent / 'refs').mkdir()
    (corrupt.parent.parent / 'refs' / 'main').write_text('0' * 40)
    x = tmp_path / 'x.pt'
    torch.save(torch.randn(2, 3, 64, 64), x)
    (tmp_path / 'check.py').write_text(OFFLINE_CHECK)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), ECA_TIMM_HUB_ORG='my-org')
    env.pop('HF_HOME', None)
    r = subprocess.run([sys.executable, str(tmp_path / 'check.py'), str(src), str(out), str(x)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'IDENTICAL 3' in r.stdout
    errors = dict(line.split(' ', 2)[1:] for line in r.stdout.splitlines() if line.startswith('ERROR'))
    assert "Hugging Face Hub repo 'my-org/eca_resnet18.official_in1k': the Hub cannot be reached (offline?)" in \
        errors['eca_resnet18']
    assert 'eca-timm convert eca_resnet18_k3577.pth.tar --model eca_resnet18' in errors['eca_resnet18']
    assert "pretrained_cfg_overlay=dict(file='eca_resnet18_k3577.pth.tar')" in errors['eca_resnet18']
    assert "'my-org/eca_mobilenetv2.official_in1k'" in errors['eca_mobilenetv2']
    assert 'unreadable (corrupt?): delete models--my-org--eca_mobilenetv2.official_in1k from the Hub cache' in \
        errors['eca_mobilenetv2']


def test_corrupt_file_error_names_it(tmp_path):
    bad = tmp_path / 'eca_resnet18.pth.tar'
    bad.write_bytes(b'\x00' * 100)
    with pytest.raises(RuntimeError, match=r"eca_resnet18\.official_in1k: could not load pretrained weights from "
                                           r"file '.*eca_resnet18\.pth\.tar'"):
        timm.create_model('eca_resnet18', pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))


def test_unpublished_repo_error_says_so(fake_hub):
    """The Hub answers (through huggingface_hub) that the repo does not exist: the error says it is not published."""
    with pytest.raises(RuntimeError, match=r"eca_mobilenetv2\.official_in1k: no usable pretrained weights from Hugging "
                                           r"Face Hub repo 'some-org/eca_mobilenetv2\.official_in1k': the repo or its "
                                           r"weights are not on the Hub \(not published yet.*eca-timm convert "
                                           r"eca_mobilenetv2_k13\.pth\.tar --model eca_mobilenetv2 --out DIR"):
        # a tag published under an organisation (ECA_TIMM_HUB_ORG) whose repo is missing
        timm.create_model('eca_mobilenetv2', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id='some-org/eca_mobilenetv2.official_in1k'))


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))


def test_pretrained_downloads_wherever_huggingface_hub_reaches_the_hub(tmp_path, fake_hub, empty_hub_cache):
    """Issue 20.34: the reachability check asks through huggingface_hub's own HTTP client (a proxy or custom client
    it is configured with): weights it can download are downloaded, not refused by a raw TCP probe."""
    from safetensors.torch import save
    source = _randomized('eca_resnet18', 3)
    fake_hub.add_repo('some-org/eca_resnet18.x', {'model.safetensors': save(source.state_dict())})
    model = timm.create_model('eca_resnet18', pretrained=True,
                              pretrained_cfg_overlay=dict(hf_hub_id='some-org/eca_resnet18.x')).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    assert ('HEAD', '/some-org/eca_resnet18.x/resolve/main/model.safetensors') in fake_hub.requests


def test_offline_pretrained_fails_fast_without_huggingface_hubs_retries(empty_hub_cache):
    """Hub weights not in the local cache and huggingface_hub cannot reach the Hub: the error at once (one request,
    no retries), naming HF_HUB_OFFLINE=1."""
    import time
    import httpx2
    from fake_hub import serve
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import default_client_factory
    asked = []

    def unreachable(request):
        asked.append(request.url.path)
        raise httpx2.ConnectError('[Errno -3] Temporary failure in name resolution', request=request)
    serve(unreachable)
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"the Hugging Face Hub \(https://huggingface\.co\) cannot be reached "
                                               r"\(offline\?\) and repo 'some-org/eca_resnet18\.x' is not in the local "
                                               r"Hub cache \(ConnectError: .*Set HF_HUB_OFFLINE=1"):
            timm.create_model('eca_resnet18', pretrained=True,
                              pretrained_cfg_overlay=dict(hf_hub_id='some-org/eca_resnet18.x'))
        assert time.monotonic() - start < 5 and asked == ['/some-org/eca_resnet18.x/resolve/main/model.safetensors']
    finally:
        set_client_factory(default_client_factory)


def test_card_front_matter_recipe_and_tags_follow_the_run(tmp_path):
    """huggingface_hub's ModelCardData front matter; only the arguments that took effect; baselines are not
    tagged eca-net; base_model when training started from pretrained weights; --license."""
    run = tmp_path / 'run'
    _train_folder(run, name='resnet18_cifar')
    args = yaml.safe_load((run / 'args.yaml').read_text())
    args.update(lr_base=0.1, decay_epochs=90, decay_rate=0.1, model_ema=False, model_ema_decay=0.9998,
                pretrained=True)
    (run / 'args.yaml').write_text(yaml.safe_dump(args))
    out = tmp_path / 'repo'
    main(['publish', str(run), '--repo-id', 'me/resnet18_cifar.c10', '--dry-run', '--out', str(out),
          '--license', 'apache-2.0'])
    meta = _front_matter(out / 'README.md')
    assert meta['license'] == 'apache-2.0' and 'eca-net' not in meta['tags'] and 'timm' in meta['tags']
    assert 'base_model' not in meta  # resnet18_cifar has no pretrained weights to start from
    card = (out / 'README.md').read_text()
    recipe = card.split('## Training recipe')[1].split('##')[0]
    assert '- lr: `0.1`' in recipe and '- sched: `cosine`' in recipe
    for gone in ('lr_base', 'decay_epochs', 'decay_rate', 'model_ema_decay'):
        assert gone not in recipe, gone
    assert 'a baseline of the eca-timm attention study (no ECA)' in card



def test_card_names_the_base_model_a_run_started_from(tmp_path, monkeypatch):
    """train.py --pretrained starts from the model's default pretrained tag: the card's base_model is its repo, once
    published (every official tag is unpublished today, so none is named)."""
    import dataclasses
    run = tmp_path / 'run'
    _train_folder(run)
    args = yaml.safe_load((run / 'args.yaml').read_text())
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(args, pretrained=True)))
    out = tmp_path / 'repo'
    main(['publish', str(run), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(out)])
    assert timm.models.get_pretrained_cfg('eca_resnet18').hf_hub_id is None and \
        'base_model' not in _front_matter(out / 'README.md')
    real = timm.models.get_pretrained_cfg
    published = lambda name: dataclasses.replace(real(name), hf_hub_id=f'my-org/{name}.official_in1k')  # noqa: E731
    monkeypatch.setattr(timm.models, 'get_pretrained_cfg', published)
    main(['publish', str(run), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(out), '--force'])
    assert _front_matter(out / 'README.md')['base_model'] == 'my-org/eca_resnet18.official_in1k'
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(args, pretrained=False)))  # trained from scratch
    main(['publish', str(run), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(out), '--force'])
    assert 'base_model' not in _front_matter(out / 'README.md')


def test_quickstart_card_says_what_the_data_and_the_weights_are(tmp_path):
    """Issue 21.2: the quickstart's card (its publish arguments, a folder dataset on disk): dataset, split (the
    test file: Fashion-MNIST has no validation split), subset and counts, a demo, usage that loads the folder,
    epochs as the recipe counts them."""
    from eca_timm.train.datasets import write_image_folder
    from eca_timm.train.quickstart import FASHION_MNIST_HUB_ID, card_args
    data, counts = write_image_folder(tmp_path / 'data', train_per_class=2, val_per_class=1)
    run = tmp_path / 'train'
    _train_folder(run, name='eca_resnet18_cifar', in_chans=1)
    args = yaml.safe_load((run / 'args.yaml').read_text())
    args.update(dataset='', data_dir=str(data), epochs=3)
    (run / 'args.yaml').write_text(yaml.safe_dump(args))
    hub = tmp_path / 'hub'
    assert main(['publish', str(run), '--repo-id', 'local/eca_resnet18_cifar.fashion_mnist_quickstart',
                 *card_args(3, counts), '--dry-run', '--out', str(hub)]) == 0
    meta, card = _front_matter(hub / 'README.md'), (hub / 'README.md').read_text()
    assert meta['datasets'] == [FASHION_MNIST_HUB_ID]
    assert meta['model-index'][0]['results'][0]['dataset'] == {
        'name': FASHION_MNIST_HUB_ID, 'type': FASHION_MNIST_HUB_ID, 'split': 'test'}
    assert f'- **Data:** {FASHION_MNIST_HUB_ID} (a folder dataset: 20 training images (train/), 10 evaluation ' \
           f'images (validation/))' in card
    use = card.split('## Intended use and limitations\n')[1].split('\n')[0]
    assert use.startswith("A demo of eca-timm's workflow (`eca-timm quickstart`), not a Fashion-MNIST model to use: "
                          "3 epochs on a subset of Fashion-MNIST shipped with eca-timm, 20 training images")
    assert '10 evaluation images (from its test file; Fashion-MNIST has no validation split)' in use
    assert f"timm.create_model('local-dir:{hub}', pretrained=True)" in card and 'hf-hub:local/' not in card
    assert "after epoch 2 of 3 (summary.csv's epoch 1, counted from 0" in card
    assert f'| {FASHION_MNIST_HUB_ID} (test) | 61.50 | 95.75 |' in card
    assert json.loads((hub / 'config.json').read_text())['label_names'] == sorted(
        p.name for p in (data / 'train').iterdir())
