"""ECA-ResNet detectors: builders, the COCO train/eval/predict command on a generated dataset, bad input."""
import argparse
import csv
import json
import os

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from torchvision.ops.misc import FrozenBatchNorm2d

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')  # pycocotools+numpy 2
pytest.importorskip('pycocotools', reason="detection needs pycocotools: pip install 'eca-timm[detection]'")
from pycocotools import mask as mask_util  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from eca_timm.cli import main  # noqa: E402
from eca_timm.detection import (  # noqa: E402
    eca_resnet_fpn_backbone, fasterrcnn_eca_resnet18_fpn, fasterrcnn_eca_resnet50_fpn, fasterrcnn_eca_resnet101_fpn,
    maskrcnn_eca_resnet50_fpn, retinanet_eca_resnet50_fpn)
from eca_timm.detection import command, models  # noqa: E402
from eca_timm.detection.data import load_coco_detection  # noqa: E402
from eca_timm.detection.predict import label_color  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = [dict(id=1, name='rectangle'), dict(id=2, name='circle')]
# Small detector settings for CPU: images resized to 64-96 px, few sampled proposals.
SMALL = dict(min_size=64, max_size=96, box_batch_size_per_image=16, rpn_pre_nms_top_n_train=200,
             rpn_post_nms_top_n_train=100)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Detection on tiny images is dominated by per-op overhead: one thread ran ~8x faster on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _targets(n: int, size: int, masks: bool):
    targets = []
    for i in range(n):
        x0, y0 = 10 + 5 * i, 20
        t = dict(boxes=torch.tensor([[x0, y0, x0 + 40., y0 + 50.]]), labels=torch.tensor([1 + i % 2]))
        if masks:
            t['masks'] = torch.zeros(1, size, size, dtype=torch.uint8)
            t['masks'][0, y0:y0 + 50, x0:x0 + 40] = 1
        targets.append(t)
    return targets


def make_shapes_dataset(root, n_images: int = 16, seed: int = 0):
    """COCO-format dataset of bright rectangles (class 1) and discs (class 2) on dark images, exact RLE masks."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        h, w = (int(v) for v in rng.integers(64, 97, size=2))
        img = np.full((h, w, 3), rng.integers(20, 60), np.uint8)
        yy, xx = np.mgrid[:h, :w]
        taken = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 3))):
            for _ in range(20):  # place without overlap
                label, s = int(rng.integers(1, 3)), int(rng.integers(18, 33))
                x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                if label == 1:
                    m = (xx >= x0) & (xx < x0 + s) & (yy >= y0) & (yy < y0 + int(s * 0.7))
                else:
                    m = (xx - x0 - s / 2 + .5) ** 2 + (yy - y0 - s / 2 + .5) ** 2 <= (s / 2) ** 2
                if not (m & taken).any():
                    break
            taken |= m
            img[m] = rng.integers(150, 256, size=3)
            ys, xs = np.nonzero(m)
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append(dict(
                id=len(anns) + 1, image_id=i + 1, category_id=label, iscrowd=0, area=int(m.sum()),
                bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                segmentation=dict(size=[h, w], counts=rle['counts'].decode())))
        Image.fromarray(img).save(os.path.join(root, 'images', f'{i:03d}.png'))
        images.append(dict(id=i + 1, file_name=f'{i:03d}.png', height=h, width=w))
    ann_file = os.path.join(root, 'instances.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=CATEGORIES), f)
    return os.path.join(root, 'images'), ann_file


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes_dataset(str(tmp_path_factory.mktemp('shapes')))


# ---------------------------------------------------------------- builders

@pytest.mark.parametrize('builder,masks', [(maskrcnn_eca_resnet50_fpn, True), (fasterrcnn_eca_resnet50_fpn, False),
                                           (retinanet_eca_resnet50_fpn, False)])
@pytest.mark.slow
def test_builder_forward_backward(builder, masks):
    torch.manual_seed(0)
    kwargs = dict(SMALL) if builder is not retinanet_eca_resnet50_fpn else dict(min_size=128, max_size=128)
    model = builder(num_classes=3, **kwargs)
    images = [torch.rand(3, 128, 128), torch.rand(3, 112, 128)]
    losses = model(images, _targets(2, 128, masks))
    expected = {'classification', 'bbox_regression'} if builder is retinanet_eca_resnet50_fpn else {
        'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'} | ({'loss_mask'} if masks else set())
    assert set(losses) == expected
    sum(losses.values()).backward()
    # random init: all backbone layers train (torchvision's rule), every parameter gets a gradient
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad
    assert all(p.requires_grad for p in model.backbone.body.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and {'boxes', 'labels', 'scores'} <= set(out[0])
    assert ('masks' in out[0]) == masks
    if masks and len(out[0]['boxes']):
        assert out[0]['masks'].shape[-2:] == (128, 128)  # pasted back at the input size


def test_fpn_features_and_strides():
    backbone = eca_resnet_fpn_backbone('eca_resnet50')
    assert backbone.body['layer1'][0].se.conv.kernel_size == (3,)  # the ECA backbone, released kernel sizes
    assert backbone.body['layer4'][0].se.conv.kernel_size == (7,)
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        out = backbone(x)
    assert list(out) == ['0', '1', '2', '3', 'pool']
    for (name, feat), stride in zip(out.items(), (4, 8, 16, 32, 64)):
        assert feat.shape == (1, 256, 128 // stride, 192 // stride), name
    assert [m.in_channels for m in backbone.fpn.inner_blocks.modules() if isinstance(m, torch.nn.Conv2d)] == \
        [256, 512, 1024, 2048]

    retina = retinanet_eca_resnet50_fpn(num_classes=3).backbone  # P3-P7, P6 from C5
    with torch.no_grad():
        out = retina(torch.rand(1, 3, 256, 256))
    assert [(k, v.shape[-1]) for k, v in out.items()] == [('0', 32), ('1', 16), ('2', 8), ('p6', 4), ('p7', 2)]
    assert retina.fpn.extra_blocks.p6.in_channels == 2048

    deep = fasterrcnn_eca_resnet101_fpn(num_classes=3).backbone.body
    assert [len(deep[f'layer{i}']) for i in range(1, 5)] == [3, 4, 23, 3]


@pytest.fixture(scope='module')
def eca_resnet50_file(tmp_path_factory):
    """An ImageNet-style eca_resnet50 classifier (random weights, trained statistics) saved as safetensors."""
    torch.manual_seed(0)
    classifier = timm.create_model('eca_resnet50')
    for m in classifier.modules():  # non-trivial BN statistics, to see them land unchanged
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = str(tmp_path_factory.mktemp('weights') / 'eca_resnet50.safetensors')
    save_file(classifier.state_dict(), path)
    return path, classifier.state_dict()


@pytest.mark.slow
def test_pretrained_backbone_weights_land_unchanged_and_frozen_layers(eca_resnet50_file):
    path, reference = eca_resnet50_file
    model = maskrcnn_eca_resnet50_fpn(num_classes=3, weights_backbone=path, trainable_backbone_layers=2, **SMALL)
    body = model.backbone.body.state_dict()
    assert set(body) == {k for k in reference if not k.startswith('fc.') and 'num_batches_tracked' not in k}
    for k, v in body.items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0, msg=k)
    assert isinstance(model.backbone.body['layer1'][0].bn1, FrozenBatchNorm2d)  # torchvision's convention

    model(([torch.rand(3, 96, 96)] * 2), _targets(2, 96, True))['loss_mask'].backward()
    trainable = {n.split('.')[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {'layer3', 'layer4'}
    for name, p in model.backbone.body.named_parameters():
        assert (p.grad is not None) == name.startswith(('layer3.', 'layer4.')), name
    assert all(p.grad is not None for p in model.backbone.fpn.parameters())

    none = maskrcnn_eca_resnet50_fpn(num_classes=3, weights_backbone=path, trainable_backbone_layers=0)
    assert not any(p.requires_grad for p in none.backbone.body.parameters())


def test_official_eca_checkpoint_as_backbone_weights(tmp_path):
    """A released ECA-Net file (official keys, module. prefix, wrapper dict) loads into the detection backbone."""
    from official_eca import official_resnet, randomize_, save_official
    official = randomize_(official_resnet(18, (3, 5, 7, 7)))
    path = tmp_path / 'eca_resnet18_k3577.pth.tar'
    save_official(official, path)
    body = models.create_detection_model(
        'fasterrcnn_eca_resnet18_fpn', num_classes=3, weights_backbone=str(path)).backbone.body.state_dict()
    reference = official.state_dict()
    assert body['layer4.1.se.conv.weight'].shape == (1, 1, 7)
    for k, v in body.items():
        torch.testing.assert_close(v, reference[k.replace('.se.', '.eca.')], rtol=0, atol=0, msg=k)

    # a timm train.py checkpoint (its args are an argparse.Namespace), EMA weights preferred as timm's loader does
    trained = timm.create_model('eca_resnet18', num_classes=10)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in trained.state_dict().items()}
    path = tmp_path / 'model_best.pth.tar'
    torch.save(dict(epoch=3, arch='eca_resnet18', state_dict=trained.state_dict(), state_dict_ema=ema,
                    args=argparse.Namespace(model='eca_resnet18', lr=0.1), version=2), path)
    body = models.create_detection_model(
        'fasterrcnn_eca_resnet18_fpn', num_classes=3, weights_backbone=str(path)).backbone.body.state_dict()
    for k, v in body.items():
        torch.testing.assert_close(v, ema[k], rtol=0, atol=0, msg=k)


def test_converted_folder_as_backbone_weights(tmp_path):
    """A folder written by `eca-timm convert` (model.safetensors + config.json) is backbone weights too."""
    from official_eca import official_resnet, randomize_, save_official
    from eca_timm.weights.convert import convert
    official = randomize_(official_resnet(18, (3, 5, 7, 7)), seed=1)
    src = tmp_path / 'eca_resnet18_k3577.pth.tar'
    save_official(official, src)
    folder = convert(str(src), 'eca_resnet18', str(tmp_path / 'eca_resnet18'))
    body = fasterrcnn_eca_resnet18_fpn(num_classes=3, weights_backbone=str(folder)).backbone.body.state_dict()
    reference = official.state_dict()
    for k, v in body.items():
        torch.testing.assert_close(v, reference[k.replace('.se.', '.eca.')], rtol=0, atol=0, msg=k)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        fasterrcnn_eca_resnet18_fpn(weights_backbone=str(empty))
    assert str(e.value) == (
        f"Backbone weights folder {str(empty)!r} holds no model.safetensors or pytorch_model.bin: pass a folder "
        f"written by `eca-timm convert`, or a checkpoint file of eca_resnet18")


@pytest.mark.slow
def test_the_documented_backbone_weights_work(tmp_path, monkeypatch):
    """docs/detection.md's Python example, run as written: the release file, and the folder convert writes from it."""
    from official_eca import official_resnet, randomize_, save_official
    from eca_timm import detection
    from eca_timm.weights.convert import convert
    official = randomize_(official_resnet(50, (3, 5, 5, 7)))
    monkeypatch.chdir(tmp_path)
    save_official(official, 'eca_resnet50_k3557.pth.tar')
    convert('eca_resnet50_k3557.pth.tar', 'eca_resnet50', 'hub/eca_resnet50')
    built = []
    monkeypatch.setattr(detection, 'maskrcnn_eca_resnet50_fpn', lambda **kw: built.append(
        (kw, maskrcnn_eca_resnet50_fpn(**kw))))
    with open(os.path.join(ROOT, 'docs', 'detection.md'), encoding='utf-8') as f:
        example = f.read().split('```python\n', 1)[1].split('```', 1)[0]
    exec(example, {})
    assert [kw['weights_backbone'] for kw, _ in built] == ['eca_resnet50_k3557.pth.tar', 'hub/eca_resnet50']
    reference = official.state_dict()
    for _, model in built:
        for k, v in model.backbone.body.state_dict().items():
            torch.testing.assert_close(v, reference[k.replace('.se.', '.eca.')], rtol=0, atol=0, msg=k)
    assert built[1][1].transform.min_size == (512,)


def test_backbone_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"Backbone weights file .*missing\.pth.* not found"):
        maskrcnn_eca_resnet50_fpn(weights_backbone=str(tmp_path / 'missing.pth'))
    with pytest.raises(ValueError, match=r'range \[0,5\], got 6'):
        fasterrcnn_eca_resnet50_fpn(weights_backbone=str(tmp_path), trainable_backbone_layers=6)
    notes = tmp_path / 'notes.txt'
    notes.write_text('eval notes')
    with pytest.raises(ValueError) as e:
        fasterrcnn_eca_resnet18_fpn(weights_backbone=str(notes))
    assert str(e.value).startswith(f"Backbone weights file {str(notes)!r} is not a readable checkpoint (")
    assert str(e.value).endswith("): pass a .pth / .pth.tar / .safetensors file of eca_resnet18 (e.g. the release "
                                 "file eca_resnet18_k3577.pth.tar), or a folder written by `eca-timm convert`")

    # True while the official_in1k tags are unpublished: one line saying what to pass instead
    message = ("eca_resnet50: timm's ImageNet weights of it (eca_resnet50.official_in1k) are not on the Hugging Face "
               "Hub yet: pass the official release file instead, weights_backbone='eca_resnet50_k3557.pth.tar' "
               "(from https://github.com/BangguWu/ECANet; --weights-backbone on the command line), or a folder "
               "written by `eca-timm convert` from it, or None for random initialisation")
    with pytest.raises(ValueError) as e:
        maskrcnn_eca_resnet50_fpn(weights_backbone=True)
    assert str(e.value) == message
    with pytest.raises(ValueError) as e:  # the command says it before reading any data (no such file here)
        main(['detect', 'train', '--model', 'retinanet_eca_resnet50_fpn', '--weights-backbone', 'true',
              '--train-images', str(tmp_path), '--train-ann', str(tmp_path / 'nope.json'), '--device', 'cpu',
              '--output', str(tmp_path / 'out')])
    assert str(e.value) == message
    assert not (tmp_path / 'out').exists()
    monkeypatch.setattr(models.timm.models, 'get_pretrained_cfg', lambda name: timm.models.PretrainedCfg())
    with pytest.raises(ValueError, match=r'^eca_resnet50: no ImageNet weights are registered for it: pass weights_b'):
        maskrcnn_eca_resnet50_fpn(weights_backbone=True)
    with pytest.raises(ValueError, match=r"Unknown detection model 'maskrcnn_resnet50_fpn'; choose one of: mask"):
        models.create_detection_model('maskrcnn_resnet50_fpn')


# ---------------------------------------------------------------- recipe

def test_1x_recipe_schedule():
    path = os.path.join(ROOT, 'train_configs', 'coco', 'maskrcnn_eca_resnet50_fpn_1x.yaml')
    parser = _parser()
    args = command._resolve(parser.parse_args(['detect', 'train', '--config', path, '--batch-size', '4']))
    assert (args.model, args.epochs, args.lr_steps, args.batch_size) == ('maskrcnn_eca_resnet50_fpn', 12, [8, 11], 4)
    assert (args.momentum, args.weight_decay, args.weights_backbone) == (0.9, 1e-4, 'pretrained')
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=args.lr * 8 / args.lr_base_batch)  # total batch 8 -> lr 0.01
    scheduler = command._lr_scheduler(optimizer, args, iters_per_epoch=1000)
    lrs = []
    for _ in range(12 * 1000):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-5) and lrs[250] == pytest.approx(0.01 * (0.001 + 0.999 * 0.5))
    assert lrs[500] == pytest.approx(0.01) and lrs[7999] == pytest.approx(0.01)
    assert lrs[8000] == pytest.approx(0.001) and lrs[10999] == pytest.approx(0.001)
    assert lrs[11000] == pytest.approx(0.0001) and lrs[-1] == pytest.approx(0.0001)


def test_recipe_unknown_key(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(dict(epochs=3, learning_rate=0.1)))
    with pytest.raises(ValueError, match=r"Unknown keys in .*bad\.yaml.*: learning_rate\. Known keys: "):
        command._resolve(_parser().parse_args(['detect', 'train', '--config', str(bad)]))


def _parser():
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    return parser


# ---------------------------------------------------------------- train / eval / predict end to end

def _read_summary(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_eval_predict_on_shapes(shapes, tmp_path):
    images, ann = shapes
    out = str(tmp_path / 'output' / 'shapes')  # the run folder: --output/--experiment
    small = ['--model', 'maskrcnn_eca_resnet18_fpn', '--min-size', '64', '--max-size', '96', '--model-kwargs',
             'fpn_channels=32', 'box_batch_size_per_image=16', 'rpn_batch_size_per_image=64',
             'rpn_pre_nms_top_n_train=200', 'rpn_post_nms_top_n_train=100',
             "backbone_kwargs={'channels': (16, 32, 64, 128)}"]
    common = ['--train-images', images, '--train-ann', ann, '--val-images', images, '--val-ann', ann,
              '--batch-size', '2', '--lr', '0.01', '--lr-base-batch', '2', '--warmup-iters', '20', '--lr-steps', '15',
              '--workers', '0', '--eval-interval', '0', '--device', 'cpu', '--output', str(tmp_path / 'output'),
              '--experiment', 'shapes']
    # 20 epochs x 8 iterations = 160 steps. lr 0.01: from random init 0.02 sat at the edge of divergence (loss
    # spikes, then NaN, depending on the thread count and on float32 rounding of any op)
    assert main(['detect', 'train', *small, *common, '--epochs', '20']) == 0

    summary = _read_summary(os.path.join(out, 'summary.csv'))
    assert [int(r['epoch']) for r in summary] == list(range(20))
    first, last = float(summary[0]['train_loss']), float(summary[-1]['train_loss'])
    assert last < 0.6 * first, (first, last)
    ckpt = torch.load(os.path.join(out, 'last.pth'), weights_only=True)
    assert ckpt['epoch'] == 20 and ckpt['categories'] == CATEGORIES
    # measured (seed 42, 1 thread, torch 2.14 CPU): box AP 0.741, mask AP 0.813 on the training images; floors below
    assert ckpt['metrics']['bbox_ap'] > 0.3 and ckpt['metrics']['segm_ap'] > 0.3, ckpt['metrics']
    assert float(summary[-1]['eval_bbox_ap']) == pytest.approx(ckpt['metrics']['bbox_ap'])
    assert summary[0]['eval_bbox_ap'] == ''  # evaluated at the last epoch only

    # the checkpoint evaluates to the same AP from the eval command
    metrics_file = str(tmp_path / 'metrics.json')
    assert main(['detect', 'eval', '--checkpoint', os.path.join(out, 'last.pth'), '--val-images', images,
                 '--val-ann', ann, '--workers', '0', '--device', 'cpu', '--metrics-file', metrics_file]) == 0
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert metrics['bbox_ap'] == pytest.approx(ckpt['metrics']['bbox_ap'])
    assert metrics['segm_ap'] == pytest.approx(ckpt['metrics']['segm_ap'])

    # a dataset with more classes than the checkpoint was trained for
    with open(ann) as f:
        more = json.load(f)
    more['categories'] = CATEGORIES + [dict(id=7, name='triangle')]
    more_ann = tmp_path / 'more_classes.json'
    more_ann.write_text(json.dumps(more))
    with pytest.raises(ValueError, match=r'more_classes\.json has category ids up to 7 but the model has num_cl'):
        main(['detect', 'eval', '--checkpoint', os.path.join(out, 'last.pth'), '--val-images', images,
              '--val-ann', str(more_ann), '--device', 'cpu'])

    # resume: one more epoch continues the schedule, in the same run folder
    assert main(['detect', 'train', *small, *common, '--epochs', '21', '--resume', os.path.join(out, 'last.pth')]) == 0
    summary = _read_summary(os.path.join(out, 'summary.csv'))
    assert [int(r['epoch']) for r in summary] == list(range(21))
    assert float(summary[-1]['lr']) == pytest.approx(0.001)  # still after the lr step at epoch 15
    assert torch.load(os.path.join(out, 'last.pth'), weights_only=True)['epoch'] == 21

    # drawn predictions: box edges carry the label colour
    vis = str(tmp_path / 'vis')
    picks = [os.path.join(images, '000.png'), os.path.join(images, '001.png')]
    assert main(['detect', 'predict', *picks, '--checkpoint', os.path.join(out, 'last.pth'),
                 '--output-dir', vis, '--device', 'cpu']) == 0
    with open(os.path.join(vis, 'predictions.json')) as f:
        predictions = json.load(f)
    assert [(p['image'], p['output']) for p in predictions['predictions']] == [(picks[0], '000.png'),
                                                                               (picks[1], '001.png')]
    assert predictions['failed'] == [] and predictions['score_threshold'] == 0.5
    n_boxes = 0
    for pred in predictions['predictions']:
        drawn = np.asarray(Image.open(os.path.join(vis, pred['output'])).convert('RGB'))
        original = np.asarray(Image.open(pred['image']).convert('RGB'))
        assert drawn.shape == original.shape and not np.array_equal(drawn, original)
        for det in pred['detections']:
            x0, y0, x1, y1 = (int(v) for v in det['box'])
            ym = (y0 + y1) // 2
            color = label_color(det['label'])
            assert tuple(drawn[ym, x0]) == color and tuple(drawn[ym, x1]) == color, det
            assert det['category'] in {'rectangle', 'circle'} and det['score'] >= 0.5
            n_boxes += 1
    assert n_boxes >= 2


# ---------------------------------------------------------------- bad input

def test_malformed_annotation_files(shapes, tmp_path):
    images, ann = shapes
    broken = tmp_path / 'broken.json'
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match=r'broken\.json.* is not valid JSON'):
        load_coco_detection(images, str(broken), train=True, masks=True)
    with open(ann) as f:
        good = json.load(f)
    no_categories = tmp_path / 'no_categories.json'
    no_categories.write_text(json.dumps({k: v for k, v in good.items() if k != 'categories'}))
    with pytest.raises(ValueError, match=r"lacks categories: an instances file needs 'images', 'annotations'"):
        load_coco_detection(images, str(no_categories), train=True, masks=True)
    bad_category = tmp_path / 'bad_category.json'
    bad_category.write_text(json.dumps(dict(good, annotations=[dict(good['annotations'][0], category_id=9)])))
    with pytest.raises(ValueError, match=r'annotation 1 has category id 9 not in .categories.'):
        load_coco_detection(images, str(bad_category), train=False, masks=False)
    no_bbox = tmp_path / 'no_bbox.json'
    no_bbox.write_text(json.dumps(dict(good, annotations=[{k: v for k, v in good['annotations'][0].items()
                                                           if k != 'bbox'}])))
    with pytest.raises(ValueError, match=r'annotation 1 lacks bbox'):
        load_coco_detection(images, str(no_bbox), train=False, masks=False)
    no_masks = tmp_path / 'no_masks.json'
    no_masks.write_text(json.dumps(dict(good, annotations=[{k: v for k, v in a.items() if k != 'segmentation'}
                                                           for a in good['annotations']])))
    assert len(load_coco_detection(images, str(no_masks), train=True, masks=False)) == 16  # boxes are enough
    with pytest.raises(ValueError, match=r'annotation 1 lacks segmentation \(Mask R-CNN trains on masks: add'):
        load_coco_detection(images, str(no_masks), train=True, masks=True)
    with pytest.raises(FileNotFoundError, match=r'COCO annotation file .*nothing\.json.* not found'):
        load_coco_detection(images, str(tmp_path / 'nothing.json'), train=True, masks=True)


def test_missing_images(shapes, tmp_path):
    images, ann = shapes
    partial = tmp_path / 'images'
    partial.mkdir()
    for name in sorted(os.listdir(images))[2:]:
        os.link(os.path.join(images, name), partial / name)
    with pytest.raises(FileNotFoundError, match=r'2 of 16 images listed in .* are missing from .*, e\.g\. 000\.png'):
        load_coco_detection(str(partial), ann, train=True, masks=True)
    with pytest.raises(FileNotFoundError, match=r'Images not found: .*nope\.png'):
        main(['detect', 'predict', str(tmp_path / 'nope.png'), '--checkpoint', ann, '--output-dir', str(tmp_path)])
    with pytest.raises(ValueError, match=r'instances\.json.* is not a readable PyTorch checkpoint .*detect train'):
        main(['detect', 'predict', os.path.join(images, '000.png'), '--checkpoint', ann, '--output-dir',
              str(tmp_path / 'vis')])


def test_class_count_mismatch(shapes, tmp_path):
    images, ann = shapes
    with pytest.raises(ValueError, match=r'category ids up to 2 but the model has num_classes=2 .*use num_classes=3'):
        main(['detect', 'train', '--model', 'fasterrcnn_eca_resnet18_fpn', '--train-images', images, '--train-ann', ann,
              '--num-classes', '2', '--device', 'cpu', '--output', str(tmp_path / 'output')])
    assert not (tmp_path / 'output').exists()  # failed before writing anything
