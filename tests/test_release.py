"""``eca-timm release DIR``: the maintainer's one step, a dry run unless --push (uploads up to the HfApi boundary)."""
import json

import pytest

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.cli import main
from eca_timm.models import _pretrained
from eca_timm.weights.convert import file_sha256
from test_hub import _FakeApi, checkout_hub  # noqa: F401  (a fixture)


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
    assert sorted(p.name for p in (tmp_path / 'hub' / 'eca_resnet18.official_in1k').iterdir()) == [
        'README.md', 'config.json', 'model.safetensors']
    assert (checkout_hub / 'manifest.json').read_text() == before


def test_release_push_uploads_and_records(release_dir, tmp_path, checkout_hub, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, 'HfApi', _FakeApi)
    monkeypatch.setattr(_FakeApi, 'calls', [])
    monkeypatch.setattr(_FakeApi, 'files', ['.gitattributes'])
    monkeypatch.delenv(_pretrained.HUB_ORG_ENV, raising=False)
    assert main(['release', str(release_dir), '--out', str(tmp_path / 'hub'), '--push']) == 0
    uploads = [c for c in _FakeApi.calls if c[0] == 'upload_folder']
    assert [c[1] for c in uploads] == ['eca-timm/eca_resnet18.official_in1k']
    entry = json.loads((checkout_hub / 'manifest.json').read_text())['weights']['eca_resnet18.official_in1k']
    assert entry['published'] is True
    assert entry['source']['sha256'] == file_sha256(str(release_dir / 'eca_resnet18_k3577.pth.tar'))
    cfg = _pretrained.pretrained_cfgs(['eca_resnet18'])['eca_resnet18.official_in1k']
    assert cfg['hf_hub_id'] == 'eca-timm/eca_resnet18.official_in1k'  # timm now advertises the published tag
    _pretrained.load_manifest.cache_clear()


def test_release_needs_release_files(tmp_path, checkout_hub):
    with pytest.raises(FileNotFoundError, match=r'holds none of the release files the manifest lists: '
                                                r'eca_mobilenetv2_k13\.pth\.tar, eca_resnet101_k3357\.pth\.tar'):
        main(['release', str(tmp_path), '--out', str(tmp_path / 'hub')])
