"""Issue 19: folders written by ``convert`` and ``publish`` load in transformers (``AutoModelForImageClassification``,
``AutoModel``, ``AutoImageProcessor``, the image-classification pipeline; TimmWrapper builds the timm model) and give
timm's own outputs. transformers reads the local folders: no network. ``release`` writes its folders with the same
code (test_release.py loads one)."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

import eca_timm  # noqa: F401  (registers the models: TimmWrapper builds them with timm)
from eca_timm.cli import main
from test_hub import _fake_official18, _train_folder


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """The same model on the same input: equal up to float32 rounding (BLAS may take another kernel for
    differently aligned copies of the same weights, batch 1 in particular)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _timm_view(folder):
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    return model, transform


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """A converted official file (1000 ImageNet classes) and a published train.py run (10 classes)."""
    tmp = tmp_path_factory.mktemp('folders')
    main(['convert', str(_fake_official18(tmp)), '--model', 'eca_resnet18', '--out', str(tmp / 'converted')])
    _train_folder(tmp / 'run')
    main(['publish', str(tmp / 'run'), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(tmp / 'published')])
    return {'converted': tmp / 'converted', 'published': tmp / 'published'}


@pytest.mark.parametrize('kind', ['converted', 'published'])
@pytest.mark.slow
def test_folder_loads_in_transformers_with_timms_outputs(folders, kind):
    folder = folders[kind]
    model, transform = _timm_view(folder)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    classifier = AutoModelForImageClassification.from_pretrained(folder).eval()
    backbone = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        _same(classifier(x).logits, model(x))
        _same(backbone(x).pooler_output, model.forward_head(model.forward_features(x), pre_logits=True))

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8))
    pixels = AutoImageProcessor.from_pretrained(folder)(img, return_tensors='pt')['pixel_values']
    assert torch.equal(pixels, transform(img).unsqueeze(0))  # timm's own preprocessing
    top5 = pipeline('image-classification', model=str(folder))(img)
    with torch.no_grad():
        probs = model(pixels).softmax(-1)[0]
    expected = probs.topk(5)
    assert [r['score'] for r in top5] == pytest.approx(expected.values.tolist(), abs=1e-6)
    labels = classifier.config.id2label
    assert [r['label'] for r in top5] == [labels[i] for i in expected.indices.tolist()]
    if kind == 'converted':
        assert labels[0] == 'n01440764'  # the ImageNet-1k synsets config.json carries


def test_one_channel_model_in_transformers_as_its_card_says(tmp_path):
    """The quickstart's kind of model (1-channel): AutoModel* with a tensor and AutoImageProcessor with a grayscale
    image work; the pipeline does not (it converts images to RGB), as the card and docs/weights.md say."""
    run = _train_folder(tmp_path / 'run', name='eca_resnet18_cifar', in_chans=1)
    out = tmp_path / 'repo'
    main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18_cifar.g', '--dry-run', '--out', str(out)])
    card = (out / 'README.md').read_text()
    assert 'This model takes 1-channel images' in card and 'The `image-classification` pipeline does\nnot work' in card
    model, transform = _timm_view(out)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        _same(AutoModelForImageClassification.from_pretrained(out).eval()(x).logits, run['ema'](x))
        _same(AutoModel.from_pretrained(out).eval()(x).pooler_output,
              model.forward_head(model.forward_features(x), pre_logits=True))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8), 'L')
    pixels = AutoImageProcessor.from_pretrained(out)(img, return_tensors='pt')['pixel_values']
    assert torch.equal(pixels, transform(img).unsqueeze(0)) and pixels.shape == (1, 1, 28, 28)
    with pytest.raises(RuntimeError, match='to have 1 channels, but got 3 channels'):
        pipeline('image-classification', model=str(out))(img)
