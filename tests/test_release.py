"""``eca-timm release DIR``: the maintainer's one step, a dry run unless --push (uploads through huggingface_hub's
HfApi to its HTTP boundary)."""
import json

import pytest

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.cli import main
from eca_timm.models import _pretrained
from eca_timm.weights.checkpoint import file_sha256
from fake_hub import committed, fake_hub, same_files  # noqa: F401  (a fixture)
from test_hub import _front_matter, checkout_hub  # noqa: F401  (a fixture)


@pytest.fixture
def release_dir(tmp_path):
    from official_eca import official_resnet, randomize_, save_official
    d = tmp_path / 'release'
    d.mkdir()
    save_official(randomize_(official_resnet(18, (3, 5, 7, 7))), d / 'eca_resnet18_k3577.pth.tar')
    (d / 'notes.txt').write_text('not a release file')
    return d


def test_release_dry_run_converts_and_changes_nothing(release_dir, tmp_path, checkout_hub, capsys):
    before = (checkout_hub / 'manifest.json').read_text()
    assert main(['release', str(release_dir), '--out', str(tmp_path / 'hub')]) == 0
    out = capsys.readouterr().out
    sha = file_sha256(str(release_dir / 'eca_resnet18_k3577.pth.tar'))
    assert f'eca_resnet18.official_in1k: eca_resnet18_k3577.pth.tar sha256 {sha} verified' in out
    assert 'dry run: --push uploads 1 folder(s)' in out
    folder = tmp_path / 'hub' / 'eca_resnet18.official_in1k'
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert (checkout_hub / 'manifest.json').read_text() == before
    # transformers loads the folder release writes (issue 19), with timm's logits
    import timm
    import torch
    from transformers import AutoModelForImageClassification
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForImageClassification.from_pretrained(folder).eval()(x).logits,
                                   timm.create_model(f'local-dir:{folder}', pretrained=True).eval()(x),
                                   rtol=0, atol=1e-5)


def test_release_push_uploads_the_dry_runs_folders_and_records(release_dir, tmp_path, checkout_hub, fake_hub,
                                                                monkeypatch, capsys):
    """Issue 20.26: --push after a dry run uploads the folders the dry run verified (no --force needed), and records
    each file's sha256 as it goes; the cards carry the released numbers because release records that very file."""
    monkeypatch.delenv(_pretrained.HUB_ORG_ENV, raising=False)
    out = tmp_path / 'hub'
    assert main(['release', str(release_dir), '--out', str(out)]) == 0
    folder = out / 'eca_resnet18.official_in1k'
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert [m['value'] for m in _front_matter(folder / 'README.md')['model-index'][0]['results'][0]['metrics']] == \
        [70.92, 89.93]
    assert main(['release', str(release_dir), '--out', str(out), '--push']) == 0
    assert 'kept (as an earlier run wrote it)' in capsys.readouterr().out
    assert [c[0] for c in fake_hub.commits] == ['eca-timm/eca_resnet18.official_in1k']
    assert committed(fake_hub, 'eca-timm/eca_resnet18.official_in1k') == before and same_files(folder, before)
    entry = json.loads((checkout_hub / 'manifest.json').read_text())['weights']['eca_resnet18.official_in1k']
    assert entry['published'] is True
    assert entry['source']['sha256'] == file_sha256(str(release_dir / 'eca_resnet18_k3577.pth.tar'))
    cfg = _pretrained.pretrained_cfgs(['eca_resnet18'])['eca_resnet18.official_in1k']
    assert cfg['hf_hub_id'] == 'eca-timm/eca_resnet18.official_in1k'  # timm now advertises the published tag
    # a rerun skips what is published; a folder edited since is refused, not uploaded
    assert main(['release', str(release_dir), '--out', str(out), '--push']) == 0
    assert 'already published from this file' in capsys.readouterr().out and len(fake_hub.commits) == 1
    (folder / 'README.md').write_text('edited')
    with pytest.raises(FileExistsError, match=r'eca_resnet18\.official_in1k exists and differs from what release '
                                              r'writes for eca_resnet18_k3577\.pth\.tar \(in README\.md\): pass --force'):
        main(['release', str(release_dir), '--out', str(out)])
    _pretrained.load_manifest.cache_clear()


def test_release_needs_release_files(tmp_path, checkout_hub):
    with pytest.raises(FileNotFoundError, match=r'holds none of the release files the manifest lists: '
                                                r'eca_mobilenetv2_k13\.pth\.tar, eca_resnet101_k3357\.pth\.tar'):
        main(['release', str(tmp_path), '--out', str(tmp_path / 'hub')])
