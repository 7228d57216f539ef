"""`eca-timm detect` keeps earlier results and refuses bad input before writing anything (issue 12, items 1 4 5 7 9).

Run folders per training run, category id 0, detector keyword typos, malformed annotations, and predict's output
names and unreadable images. Every command runs on a tiny detector and 4 generated images (a few seconds each).
"""
import argparse
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')  # pycocotools+numpy 2
pytest.importorskip('pycocotools', reason="detection needs pycocotools: pip install 'eca-timm[detection]'")

from test_detection import CATEGORIES, make_shapes_dataset  # noqa: E402

from eca_timm.detection import (  # noqa: E402
    command, create_detection_model, fasterrcnn_eca_resnet18_fpn, maskrcnn_eca_resnet18_fpn, models,
    retinanet_eca_resnet50_fpn)
from eca_timm.detection.data import load_coco_detection  # noqa: E402

TINY_KWARGS = dict(fpn_channels=16, box_batch_size_per_image=16, rpn_pre_nms_top_n_train=50,
                   rpn_post_nms_top_n_train=20, backbone_kwargs={'channels': (8, 16, 32, 64)})
TINY = ['--model', 'fasterrcnn_eca_resnet18_fpn', '--min-size', '64', '--max-size', '96', '--model-kwargs',
        *(f'{k}={v!r}' for k, v in TINY_KWARGS.items()),
        '--batch-size', '2', '--workers', '0', '--device', 'cpu', '--warmup-iters', '0', '--log-interval', '100']
RUN_NAME = re.compile(r'^\d{8}-\d{6}-fasterrcnn_eca_resnet18_fpn-64(-\d+)?$')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes_dataset(str(tmp_path_factory.mktemp('shapes4')), n_images=4)


def _run(argv):
    """The `detect` subcommand as the CLI runs it (its exit status), exceptions left to the caller."""
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(['detect', *argv])
    return args.func(args)


def _train(shapes, *argv):
    images, ann = shapes
    return _run(['train', *TINY, '--train-images', images, '--train-ann', ann, *argv])


def _write_ann(tmp_path, ann, name='instances.json', **changes):
    with open(ann) as f:
        dataset = json.load(f)
    dataset.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(dataset))
    return str(path)


def _summary_lines(run):
    with open(os.path.join(run, 'summary.csv')) as f:
        return f.read().splitlines()


# ---------------------------------------------------------------- 1. a run folder per training run

def test_each_run_gets_a_new_folder_named_like_timm(shapes, tmp_path):
    out = tmp_path / 'output'
    assert _train(shapes, '--output', str(out), '--epochs', '1') == 0
    first = sorted(os.listdir(out))
    assert len(first) == 1 and RUN_NAME.match(first[0]), first
    run1 = out / first[0]
    assert sorted(os.listdir(run1)) == ['args.yaml', 'last.pth', 'summary.csv']
    ckpt1 = (run1 / 'last.pth').read_bytes()

    assert _train(shapes, '--output', str(out), '--epochs', '1') == 0  # same second, same name: a suffix
    runs = sorted(os.listdir(out))
    assert len(runs) == 2 and all(RUN_NAME.match(r) for r in runs), runs
    assert (run1 / 'last.pth').read_bytes() == ckpt1  # the first run is untouched
    for run in runs:
        lines = _summary_lines(out / run)
        assert lines[0].startswith('epoch,train_loss') and len(lines) == 2
        assert torch.load(out / run / 'last.pth', weights_only=True)['epoch'] == 1


def test_existing_experiment_folder_is_refused_without_resume(shapes, tmp_path):
    out = tmp_path / 'output'
    assert _train(shapes, '--output', str(out), '--experiment', 'exp', '--epochs', '1') == 0
    before = {name: (out / 'exp' / name).read_bytes() for name in os.listdir(out / 'exp')}
    with pytest.raises(FileExistsError) as e:
        _train(shapes, '--output', str(out), '--experiment', 'exp', '--epochs', '1')
    run = os.path.join(str(out), 'exp')
    assert str(e.value) == (
        f"Run folder {run!r} already holds an earlier run (args.yaml, last.pth, summary.csv): continue it with "
        f"--resume {os.path.join(run, 'last.pth')}, or start a new run with another --experiment name (or none "
        f"for a new dated folder)")
    assert {name: (out / 'exp' / name).read_bytes() for name in os.listdir(out / 'exp')} == before

    notes = out / 'notes'
    notes.mkdir()
    (notes / 'todo.txt').write_text('not a run')
    with pytest.raises(FileExistsError) as e:
        _train(shapes, '--output', str(out), '--experiment', 'notes', '--epochs', '1')
    assert str(e.value) == (f"Run folder {str(notes)!r} is not empty (todo.txt): choose another --experiment name "
                            f"(or none for a new dated folder), or empty it")
    assert os.listdir(notes) == ['todo.txt']

    empty = out / 'empty'
    empty.mkdir()
    assert _train(shapes, '--output', str(out), '--experiment', 'empty', '--epochs', '1') == 0  # empty: used
    assert (empty / 'last.pth').is_file()


def test_resume_continues_in_the_run_folder_with_one_header(shapes, tmp_path):
    out = tmp_path / 'output'
    assert _train(shapes, '--output', str(out), '--experiment', 'exp', '--epochs', '1') == 0
    run = out / 'exp'
    args1 = (run / 'args.yaml').read_text()
    # --output elsewhere and no --experiment: the resumed run's folder is used all the same
    assert _train(shapes, '--output', str(tmp_path / 'elsewhere'), '--epochs', '2',
                  '--resume', str(run / 'last.pth')) == 0
    assert not (tmp_path / 'elsewhere').exists()
    lines = _summary_lines(run)
    assert len(lines) == 3 and lines[0].startswith('epoch,') and [line[:2] for line in lines[1:]] == ['0,', '1,']
    assert torch.load(run / 'last.pth', weights_only=True)['epoch'] == 2
    assert (run / 'args.yaml').read_text() == args1  # the run's first arguments are kept
    assert 'epochs: 2' in (run / 'args-resume-1.yaml').read_text()  # and each resume's beside them

    # validation data the run did not have: its rows would not match the summary's columns
    images, ann = shapes
    with pytest.raises(ValueError) as e:
        _train(shapes, '--epochs', '3', '--resume', str(run / 'last.pth'), '--val-images', images, '--val-ann', ann)
    assert str(e.value) == (
        f"{str(run / 'summary.csv')!r} has no evaluation columns, but this resume has validation data: leave out "
        f"--val-images and --val-ann as the run did, so that its rows match")
    assert len(_summary_lines(run)) == 3 and not (run / 'args-resume-2.yaml').exists()

    with pytest.raises(FileNotFoundError) as e:
        _train(shapes, '--resume', str(out / 'nope' / 'last.pth'))
    assert str(e.value) == (f"Checkpoint {str(out / 'nope' / 'last.pth')!r} not found: --resume takes the last.pth "
                            f"of a run folder")

    # --experiment naming another folder than the resumed one
    with pytest.raises(ValueError) as e:
        _train(shapes, '--output', str(out), '--experiment', 'other', '--epochs', '3',
               '--resume', str(run / 'last.pth'))
    assert str(e.value) == (
        f"--resume {str(run / 'last.pth')!r} continues the run in its folder {str(run)!r}, but --experiment "
        f"names {str(out / 'other')!r}: leave out --experiment (and --output) to resume")
    assert not (out / 'other').exists()


# ---------------------------------------------------------------- 4. category id 0

def test_category_id_zero_is_refused(shapes, tmp_path):
    images, ann = shapes
    with open(ann) as f:
        anns = json.load(f)['annotations']
    zero = _write_ann(tmp_path, ann, 'zero.json', categories=[dict(id=0, name='rectangle'), CATEGORIES[1]],
                      annotations=[dict(a, category_id=(a['category_id'] - 1) * 2) for a in anns])  # 1 -> 0
    message = (f"COCO annotation file {zero!r}: category 'rectangle' has id 0, the detectors' background label: "
               f"category ids must be >= 1. Renumber it (e.g. to 3, above the highest id) in 'categories' and in "
               f"its annotations' category_id")
    with pytest.raises(ValueError) as e:
        load_coco_detection(images, zero, train=True, masks=False)
    assert str(e.value) == message
    with pytest.raises(ValueError) as e:  # the command stops before its run folder exists
        _run(['train', *TINY, '--train-images', images, '--train-ann', zero, '--output', str(tmp_path / 'out')])
    assert str(e.value) == message
    assert not (tmp_path / 'out').exists()

    text = _write_ann(tmp_path, ann, 'text_id.json', categories=[dict(id='1', name='rectangle'), CATEGORIES[1]])
    with pytest.raises(ValueError, match=r"category 'rectangle' has id '1', not an int: category ids must be "):
        load_coco_detection(images, text, train=True, masks=False)
    negative = _write_ann(tmp_path, ann, 'negative.json', categories=[CATEGORIES[0], dict(id=-2, name='circle')])
    with pytest.raises(ValueError, match=r"category 'circle' has id -2, a negative number: category ids must be >= 1\. "
                                         r"Renumber it \(e\.g\. to 2, above"):
        load_coco_detection(images, negative, train=True, masks=False)
    none = _write_ann(tmp_path, ann, 'none.json', categories=[])
    with pytest.raises(ValueError) as e:
        load_coco_detection(images, none, train=True, masks=False)
    assert str(e.value) == (f"COCO annotation file {none!r} lists no categories: add one per class to 'categories' "
                            f"(ids from 1 up)")


# ---------------------------------------------------------------- 5. detector keyword typos

def test_detector_kwarg_typos_are_refused():
    with pytest.raises(TypeError) as e:
        maskrcnn_eca_resnet18_fpn(num_classes=3, box_batch_size_per_imag=16)
    message = str(e.value)
    assert message.startswith(
        "maskrcnn_eca_resnet18_fpn: unknown keyword argument 'box_batch_size_per_imag' (did you mean "
        "'box_batch_size_per_image'?). Model arguments it accepts: ")
    accepted = message.split('accepts: ')[1].split(', ')
    assert accepted == models.detector_kwargs('maskrcnn_eca_resnet18_fpn')
    # the builder's own, the detector class's, its base's, and the transform's that torchvision passes **kwargs to
    assert {'num_classes', 'weights_backbone', 'fpn_channels', 'backbone_kwargs', 'min_size', 'mask_head',
            'box_batch_size_per_image', 'size_divisible', 'fixed_size'} <= set(accepted)
    assert not {'backbone', 'rpn', 'roi_heads', 'transform', 'kwargs', 'self'} & set(accepted)
    assert 'mask_head' not in models.detector_kwargs('fasterrcnn_eca_resnet18_fpn')

    with pytest.raises(TypeError, match=r"retinanet_eca_resnet50_fpn: unknown keyword arguments 'topk' \(did you "
                                        r"mean 'topk_candidates'\?\), 'sizedivisible' \(did you mean 'size_divis"):
        retinanet_eca_resnet50_fpn(topk=5, sizedivisible=64)
    with pytest.raises(TypeError, match=r"^fasterrcnn_eca_resnet18_fpn: unknown keyword argument 'zzz'\. Model a"):
        create_detection_model('fasterrcnn_eca_resnet18_fpn', zzz=1)
    # what torchvision passes on still arrives
    model = fasterrcnn_eca_resnet18_fpn(num_classes=3, size_divisible=64, box_batch_size_per_image=16, **{
        k: v for k, v in TINY_KWARGS.items() if k != 'box_batch_size_per_image'})
    assert model.transform.size_divisible == 64
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 16


def test_model_kwargs_typo_is_a_one_line_command_error(shapes, tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(ValueError) as e:
        _train(shapes, '--model-kwargs', 'box_batch_size_per_imag=16', '--output', str(out))
    assert str(e.value).startswith(
        "--model-kwargs: fasterrcnn_eca_resnet18_fpn: unknown keyword argument 'box_batch_size_per_imag' (did you "
        "mean 'box_batch_size_per_image'?). Model arguments it accepts: backbone_kwargs, ")
    with pytest.raises(ValueError, match=r"^--model-kwargs: eca_resnet18: unknown keyword argument 'chanels' "
                                         r"\(did you mean 'channels'\?\)\. "):
        _train(shapes, '--model-kwargs', "backbone_kwargs={'chanels': (8, 16, 32, 64)}", '--output', str(out))
    with pytest.raises(ValueError) as e:
        _train(shapes, '--model-kwargs', 'min_size=32', '--output', str(out))
    assert str(e.value) == '--model-kwargs: give min_size as --min-size (its own option)'
    assert not out.exists()


def test_old_checkpoint_with_an_ignored_kwarg_still_loads(tmp_path, caplog):
    """Checkpoints saved before the check may hold a typo that torchvision ignored: it is dropped with a warning."""
    model = create_detection_model('fasterrcnn_eca_resnet18_fpn', num_classes=3, **TINY_KWARGS)
    path = tmp_path / 'old.pth'
    torch.save(dict(model=model.state_dict(), categories=CATEGORIES, model_config=dict(
        name='fasterrcnn_eca_resnet18_fpn', num_classes=3, frozen_bn=False,
        kwargs=dict(min_size=64, box_batch_size_per_imag=8, **TINY_KWARGS))), path)
    loaded, _ = command.load_detector(str(path), torch.device('cpu'))
    assert loaded.roi_heads.fg_bg_sampler.batch_size_per_image == 16
    assert "ignores box_batch_size_per_imag, which torchvision ignored when it was trained" in caplog.text


# ---------------------------------------------------------------- 7. malformed annotations, before any output

BAD_ANNOTATIONS = [
    (dict(bbox='10,20,30,40'), "has bbox '10,20,30,40': a box is [x, y, width, height], 4 numbers"),
    (dict(bbox=['10', '20', '30', '40']), "has bbox ['10', '20', '30', '40']: a box is [x, y, width, height], 4 n"),
    (dict(bbox=[10, 20, 30]), "has bbox [10, 20, 30]: a box is [x, y, width, height], 4 numbers"),
    (dict(bbox=[10, 20, float('nan'), 40]), "has bbox [10, 20, nan, 40]: a box is [x, y, width, height], 4 numb"),
    (dict(bbox=[10, 20, True, 40]), "has bbox [10, 20, True, 40]: a box is [x, y, width, height], 4 numbers"),
    (dict(bbox=[50, 20, -30, 40]), "has bbox [50, 20, -30, 40] with a negative width or height: a box is [x, y, "
                                   "width, height] (not [x1, y1, x2, y2])"),
    (dict(segmentation='polygon'), "has segmentation 'polygon': it must be polygons (a list of [x1, y1, x2, y2, "
                                   "...] lists) or RLE (a dict with counts and size)"),
    (dict(segmentation=[]), "has segmentation []: it must be polygons (a list of"),
    (dict(segmentation=[10, 20, 30, 20, 30, 40]), "has segmentation [10, 20, 30, 20, 30, 40]: it must be polygons "
                                                  "(a list of [x1, y1, x2, y2, ...] lists)"),
    (dict(segmentation=[['10', '20', '30', '20', '30', '40']]), "has polygon 1 ['10', '20', '30', '20', '30', '40']"
                                                                ": a polygon is a list of numbers"),
    (dict(segmentation=[[10, 20, 30, 20]]), "has polygon 1 [10, 20, 30, 20]: a polygon needs at least 3 points "
                                            "(6 numbers)"),
    (dict(segmentation=dict(counts='abc')), "has RLE segmentation {'counts': 'abc'}: RLE is a dict with counts (a "
                                            "string or a list of ints) and size ([height, width])"),
    (dict(segmentation=dict(counts=[4096], size=[64, 64])), "has RLE of size [64, 64] but image 1 is "),
    (dict(segmentation=dict(counts=[4000, 90], size=[92, 85])), "has RLE counts adding up to 4090, not height x "
                                                                "width = 7820"),
    (dict(iscrowd='0'), "has iscrowd '0': it must be 0 or 1"),
    (dict(image_id=[1]), "refers to image id [1] not in 'images'"),
]


@pytest.mark.parametrize('change,problem', BAD_ANNOTATIONS, ids=[p.split(':')[0] for _, p in BAD_ANNOTATIONS])
def test_bad_annotation_types_are_refused_when_loading(shapes, tmp_path, change, problem):
    images, ann = shapes
    with open(ann) as f:
        anns = json.load(f)['annotations']
    bad = _write_ann(tmp_path, ann, annotations=[dict(anns[0], **change)] + anns[1:])
    with pytest.raises(ValueError) as e:
        load_coco_detection(images, bad, train=True, masks=True)
    assert str(e.value).startswith(f'COCO annotation file {bad!r}: annotation 1 {problem}'), str(e.value)


def test_every_problem_is_counted_and_the_first_named(shapes, tmp_path):
    images, ann = shapes
    with open(ann) as f:
        anns = json.load(f)['annotations']
    bad = _write_ann(tmp_path, ann, annotations=anns[:1] + [dict(a, bbox='x') for a in anns[1:4]] + anns[4:])
    with pytest.raises(ValueError, match=r"annotation 2 has bbox 'x': .* \(3 annotations have problems; this is "
                                         r"the first\)$"):
        load_coco_detection(images, bad, train=False, masks=False)


def test_a_string_bbox_stops_training_before_any_output(shapes, tmp_path):
    images, ann = shapes
    with open(ann) as f:
        anns = json.load(f)['annotations']
    bad = _write_ann(tmp_path, ann, annotations=anns[:2] + [dict(anns[2], bbox=['1', '2', '3', '4'])] + anns[3:])
    with pytest.raises(ValueError, match=r"annotation 3 has bbox \['1', '2', '3', '4'\]: a box is \[x, y, width"):
        _run(['train', *TINY, '--train-images', images, '--train-ann', bad, '--output', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_evaluation_data_is_checked_for_what_coco_ap_reads(shapes, tmp_path):
    """Box AP reads each ground truth's area; Mask R-CNN's mask AP its segmentation: checked before training."""
    images, ann = shapes
    with open(ann) as f:
        anns = json.load(f)['annotations']
    no_area = _write_ann(tmp_path, ann, 'no_area.json', annotations=[
        {k: v for k, v in a.items() if k != 'area'} for a in anns])
    assert len(load_coco_detection(images, no_area, train=True, masks=True)) == 4  # training does not read area
    with pytest.raises(ValueError, match=r"no_area\.json.*: annotation 1 lacks area \(COCO AP reads it: the objec"):
        load_coco_detection(images, no_area, train=False, masks=False)

    no_masks = _write_ann(tmp_path, ann, 'no_masks.json', annotations=[
        {k: v for k, v in a.items() if k != 'segmentation'} for a in anns])
    with pytest.raises(ValueError, match=r"no_masks\.json.*: annotation 1 lacks segmentation \(Mask R-CNN's mask AP "
                                         r"reads it: add"):
        _run(['train', *TINY, '--model', 'maskrcnn_eca_resnet18_fpn', '--train-images', images, '--train-ann', ann,
              '--val-images', images, '--val-ann', no_masks, '--output', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- 9. predict keeps every output

@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_detection_model('fasterrcnn_eca_resnet18_fpn', num_classes=3, box_score_thresh=0.0,
                                   **TINY_KWARGS)
    path = tmp_path_factory.mktemp('ckpt') / 'last.pth'
    torch.save(dict(model=model.state_dict(), categories=CATEGORIES, model_config=dict(
        name='fasterrcnn_eca_resnet18_fpn', num_classes=3, frozen_bn=False,
        kwargs=dict(min_size=64, max_size=96, box_score_thresh=0.0, **TINY_KWARGS))), path)
    return str(path)


def _image(path, size, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return str(path)


def _predict(checkpoint, out, *images):
    return _run(['predict', *images, '--checkpoint', checkpoint, '--output-dir', str(out), '--device', 'cpu',
                 '--score-threshold', '0'])


def test_same_file_names_from_different_folders_keep_their_own_outputs(checkpoint, tmp_path):
    a = _image(tmp_path / 'in' / 'a' / 'img.png', (64, 48), 40)
    b = _image(tmp_path / 'in' / 'b' / 'img.png', (80, 72), 90)
    c = _image(tmp_path / 'in' / 'b' / 'img.jpg', (56, 64), 140)  # same stem as b's img.png
    out = tmp_path / 'vis'
    assert _predict(checkpoint, out, a, b, c) == 0
    with open(out / 'predictions.json') as f:
        result = json.load(f)
    assert [(p['image'], p['output']) for p in result['predictions']] == [
        (a, os.path.join('a', 'img.png')), (b, os.path.join('b', 'img.png')), (c, os.path.join('b', 'img-1.png'))]
    assert result['failed'] == []
    for p in result['predictions']:  # each drawing is of its own image
        with Image.open(p['image']) as src, Image.open(out / p['output']) as drawn:
            assert drawn.size == src.size
        assert all(set(d) == {'box', 'label', 'category', 'score'} for d in p['detections'])
    assert sorted(os.listdir(out)) == ['a', 'b', 'predictions.json']

    # one folder: names as before, directly in the output folder
    out1 = tmp_path / 'vis1'
    assert _predict(checkpoint, out1, a) == 0
    assert sorted(os.listdir(out1)) == ['img.png', 'predictions.json']


def test_unreadable_image_is_skipped_and_listed(checkpoint, tmp_path, caplog):
    good = _image(tmp_path / 'in' / 'good.png', (64, 64), 60)
    broken = tmp_path / 'in' / 'broken.png'
    broken.write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    later = _image(tmp_path / 'in' / 'later.png', (48, 64), 120)
    out = tmp_path / 'vis'
    assert _predict(checkpoint, out, good, str(broken), later) == 1  # exit status 1: not every image was drawn
    with open(out / 'predictions.json') as f:
        result = json.load(f)
    assert [p['output'] for p in result['predictions']] == ['good.png', 'later.png']
    assert [f['image'] for f in result['failed']] == [str(broken)]
    assert result['failed'][0]['error'].startswith('cannot read it as an image (UnidentifiedImageError')
    assert sorted(os.listdir(out)) == ['good.png', 'later.png', 'predictions.json']  # no temporary left
    assert f'Skipped {broken}: cannot read it as an image' in caplog.text
    assert f"1 of 3 images could not be read (listed under 'failed' in {out / 'predictions.json'})" in caplog.text


def test_output_names_are_distinct_and_keep_the_folders():
    from eca_timm.detection.predict import output_names
    names = output_names(['x/a/img.png', 'x/b/img.png', 'x/b/img.jpg', 'x/b/IMG.png', 'x/b/img-1.png'])
    assert names == [os.path.join(*n.split('/')) for n in (
        'a/img.png', 'b/img.png', 'b/img-1.png', 'b/IMG-2.png', 'b/img-1-1.png')]  # distinct ignoring case too
    assert output_names(['photo.jpg']) == ['photo.png']


# ================================================================ issue 20: nothing lost, no silent wrong result

# ---------------------------------------------------------------- 1. predict never writes over what the user had

def _contents(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), 'rb').read()
            for d, _, files in os.walk(folder) for f in files}


def test_predict_never_writes_over_an_input_or_a_file_it_did_not_draw(checkpoint, tmp_path):
    photos = tmp_path / 'photos'
    a, a_jpg, b = (_image(photos / name, (64, 48), 40 + 30 * i) for i, name in enumerate(('a.png', 'a.jpg', 'b.png')))
    before = _contents(photos)
    with pytest.raises(FileExistsError) as e:  # their drawings a.png, a-1.png, b.png: two are inputs
        _predict(checkpoint, photos, a, a_jpg, b)
    assert str(e.value) == (
        f"--output-dir {str(photos)!r} holds the input images {a!r}, {b!r}: their drawings would replace them. "
        f"Pass a folder of its own for the drawings, e.g. --output-dir {str(photos / 'detections')!r}")
    assert _contents(photos) == before  # refused before any work: nothing written, nothing replaced

    vis = tmp_path / 'vis'
    _image(vis / 'a.png', (32, 32), 7)  # the user's own file, where a drawing would go
    (vis / 'predictions.json').write_text('my notes')
    mine = _contents(vis)
    with pytest.raises(FileExistsError) as e:
        _predict(checkpoint, vis, a, b)
    assert str(e.value) == (
        f"--output-dir {str(vis)!r} already holds {str(vis / 'a.png')!r}, {str(vis / 'predictions.json')!r}, which "
        f"`detect predict` did not write: pass another --output-dir, or move them")
    assert _contents(vis) == mine

    # an earlier run's drawings are recognised (by their PNG's Software field) and redrawn, whatever it listed
    again = tmp_path / 'again'
    for images in ((a, b), (a,), (a, b)):
        assert _predict(checkpoint, again, *images) == 0
    assert sorted(os.listdir(again)) == ['a.png', 'b.png', 'predictions.json']
    with Image.open(again / 'a.png') as drawn:
        assert drawn.info['Software'] == 'eca-timm detect predict'
    with pytest.raises(FileExistsError, match=r"holds the input images '.*again/a\.png': their drawings would"):
        _predict(checkpoint, again, str(again / 'a.png'))  # a drawing given as an input is an input


# ---------------------------------------------------------------- 31. predict takes a folder

def test_predict_takes_a_folder_of_images(checkpoint, tmp_path):
    photos = tmp_path / 'photos'
    a = _image(photos / 'a.png', (64, 48), 40)
    b = _image(photos / 'sub' / 'b.jpg', (56, 64), 90)
    _image(photos / '.hidden.png', (32, 32), 10)  # hidden files (a killed write's temporaries) are not images
    (photos / 'notes.txt').write_text('not an image')
    out = photos / 'vis'  # inside the folder: its drawings are never taken as inputs
    for _ in range(2):
        assert _predict(checkpoint, out, str(photos)) == 0
        with open(out / 'predictions.json') as f:
            result = json.load(f)
        assert [(p['image'], p['output']) for p in result['predictions']] == [
            (a, 'a.png'), (b, os.path.join('sub', 'b.png'))]
    c = _image(tmp_path / 'c.png', (48, 48), 120)  # folders and files together
    assert _predict(checkpoint, tmp_path / 'vis2', str(photos / 'sub'), c) == 0

    empty = tmp_path / 'empty'
    (empty / 'sub').mkdir(parents=True)
    (empty / 'sub' / 'notes.txt').write_text('x')
    with pytest.raises(FileNotFoundError) as e:
        _predict(checkpoint, tmp_path / 'vis3', str(empty))
    assert str(e.value) == (f"Folder {str(empty)!r} holds no images (.png, .jpg, .jpeg, in it or its subfolders): "
                            f"pass image files or a folder of them")
    assert not (tmp_path / 'vis3').exists()


# ---------------------------------------------------------------- 5. 16-bit images

def _png16(path, values):
    """A real 16-bit greyscale PNG, written by PIL (mode I;16)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode == 'I;16'
    return str(path)


def test_16_bit_images_are_scaled_to_8_bit_in_training_and_predict(shapes, checkpoint, tmp_path):
    from eca_timm.detection.data import read_rgb
    values = np.arange(48 * 64).reshape(48, 64) * 21  # 0 .. 64491
    path = _png16(tmp_path / 'deep.png', values)
    with Image.open(path) as img:
        assert (np.asarray(img.convert('RGB')) == 255).mean() > 0.99  # PIL's convert saturates: the fault
    rgb = np.asarray(read_rgb(path))
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat((values >> 8)[..., None], 3, axis=2))  # the high byte

    images, ann = shapes  # the training data as 16-bit copies: the loader gives the 8-bit image back
    deep = tmp_path / 'deep_images'
    for name in sorted(os.listdir(images)):
        with Image.open(os.path.join(images, name)) as img:
            grey = np.asarray(img.convert('L')).astype(np.uint16)
        _png16(deep / name, grey * 257)
    dataset = load_coco_detection(str(deep), ann, train=False, masks=False)
    image, _ = dataset[0]
    with Image.open(os.path.join(images, '000.png')) as img:
        expected = np.asarray(img.convert('L'))
    np.testing.assert_array_equal((image * 255).round().byte().numpy(), np.broadcast_to(expected, image.shape))

    out = tmp_path / 'vis'
    assert _run(['predict', path, '--checkpoint', checkpoint, '--output-dir', str(out), '--device', 'cpu',
                 '--score-threshold', '1']) == 0  # nothing drawn: the output is the image as the model saw it
    with Image.open(out / 'deep.png') as drawn:
        np.testing.assert_array_equal(np.asarray(drawn.convert('RGB')), rgb)


# ---------------------------------------------------------------- 10. boxes without area inside their image

def test_boxes_outside_their_image_are_counted_in_a_warning(shapes, tmp_path, caplog):
    images, ann = shapes
    with open(ann) as f:
        dataset = json.load(f)
    sizes = {img['id']: (img['width'], img['height']) for img in dataset['images']}
    anns = dataset['annotations']
    width, height = sizes[anns[0]['image_id']]
    x, y, w, h = anns[0]['bbox']
    changed = [dict(anns[0], bbox=[x, y, 0, h]),  # zero width
               dict(anns[1], bbox=[sizes[anns[1]['image_id']][0] + 5, 2, 10, 10]),  # right of the image
               dict(anns[2], bbox=[-6, 3, 20, 12])]  # reaches past the left edge
    bad = _write_ann(tmp_path, ann, annotations=changed + anns[3:])
    total = len(anns)
    load_coco_detection(images, bad, train=True, masks=False)
    assert (f"COCO annotation file {bad!r}: 2 of {total} boxes have no area inside their image (zero width or "
            f"height, or outside the image; the first is annotation 1): training leaves them out; 1 reaches past "
            f"its image's edge: training clips it to the image") in caplog.text
    caplog.clear()
    evaluation = load_coco_detection(images, bad, train=False, masks=False)
    assert (f"COCO annotation file {bad!r}: 2 of {total} boxes have no area inside their image (zero width or "
            f"height, or outside the image; the first is annotation 1): COCO AP counts them as objects that no "
            f"detection can match") in caplog.text
    assert len(evaluation) == 4
    caplog.clear()
    load_coco_detection(images, ann, train=True, masks=False)
    assert 'boxes have no area' not in caplog.text and 'clips' not in caplog.text

    clipped = _write_ann(tmp_path, ann, 'clipped.json', annotations=[changed[2]] + anns[3:])
    train = load_coco_detection(images, clipped, train=True, masks=False)
    image_id = anns[2]['image_id']  # torchvision's SanitizeBoundingBoxes used to drop it (a coordinate below 0)
    boxes = train[train.ids.index(image_id)][1]['boxes']
    assert len(boxes) == sum(a['image_id'] == image_id for a in [changed[2]] + anns[3:])
    assert 14 in [(b[2] - b[0]).item() for b in boxes]  # -6 .. 14 clipped to 0 .. 14 (flipped or not)


# ---------------------------------------------------------------- 11. predict's score threshold

@pytest.mark.parametrize('value', ['5', '-0.1', 'nan'])
def test_score_threshold_outside_0_1_is_refused(checkpoint, tmp_path, value):
    image = _image(tmp_path / 'in' / 'a.png', (48, 48), 40)
    with pytest.raises(ValueError) as e:
        _run(['predict', image, '--checkpoint', checkpoint, '--output-dir', str(tmp_path / 'vis'),
              '--score-threshold', value])
    assert str(e.value) == (f"--score-threshold must be in [0, 1] (detection scores are probabilities), got "
                            f"{float(value)}")
    assert not (tmp_path / 'vis').exists()


# ---------------------------------------------------------------- 21. --model-kwargs: KEY=VALUE, types and ranges

def test_model_kwargs_need_key_equals_value(shapes, tmp_path, capsys):
    for item in ('noequals', '=5'):
        with pytest.raises(SystemExit) as e:
            _train(shapes, '--model-kwargs', 'fpn_channels=16', item, '--output', str(tmp_path / 'out'))
        assert e.value.code == 2
        assert (f"argument --model-kwargs: expected KEY=VALUE items (e.g. fpn_channels=64), got {item!r}"
                in capsys.readouterr().err)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('item,error,message', [
    ('fpn_channels=-8', ValueError, "fpn_channels must be an int >= 1, got -8"),
    ('fpn_channels=abc', TypeError, "fpn_channels must be an int >= 1, got 'abc' (str)"),
    ('fpn_channels=8.0', TypeError, "fpn_channels must be an int >= 1, got 8.0 (float)"),
    ('box_score_thresh=5', ValueError, "box_score_thresh must be a number in [0, 1], got 5"),
    ('box_nms_thresh=True', TypeError, "box_nms_thresh must be a number in [0, 1], got True (bool)"),
    ('box_batch_size_per_image=0', ValueError, "box_batch_size_per_image must be an int >= 1, got 0"),
    ('frozen_bn=1', TypeError, "frozen_bn must be True, False or None, got 1 (int)"),
    ('backbone_kwargs=channels', TypeError, "backbone_kwargs must be a dict, got 'channels' (str)"),
])
def test_model_kwargs_of_the_wrong_type_or_range_are_refused(shapes, tmp_path, item, error, message):
    with pytest.raises(ValueError) as e:  # the command: one line before any work
        _train(shapes, '--model-kwargs', item, '--output', str(tmp_path / 'out'))
    assert str(e.value) == f'--model-kwargs: fasterrcnn_eca_resnet18_fpn: {message}'
    assert not (tmp_path / 'out').exists()
    key, value = item.split('=')
    value = {'abc': 'abc', 'channels': 'channels'}.get(value) or eval(value)
    with pytest.raises(error) as e:  # the Python builders, the same check
        fasterrcnn_eca_resnet18_fpn(num_classes=3, **{key: value})
    assert str(e.value) == f'fasterrcnn_eca_resnet18_fpn: {message}'


def test_detector_argument_checks_follow_torchvision_signatures():
    with pytest.raises(ValueError, match=r"^retinanet_eca_resnet50_fpn: num_classes must be an int >= 1, got -1; "
                                         r"score_thresh must be a number in \[0, 1\], got 2$"):
        retinanet_eca_resnet50_fpn(num_classes=-1, score_thresh=2)
    # what torchvision accepts still arrives: a tuple of training sizes, an int for a float threshold
    model = fasterrcnn_eca_resnet18_fpn(num_classes=3, min_size=(64, 80), box_score_thresh=0, **TINY_KWARGS)
    assert model.transform.min_size == (64, 80) and model.roi_heads.score_thresh == 0
    with pytest.raises(ValueError, match=r"min_size must be an int >= 1 or a tuple of them, got \(64, 0\)"):
        fasterrcnn_eca_resnet18_fpn(num_classes=3, min_size=(64, 0))


def test_training_options_of_the_wrong_type_or_range_are_refused(shapes, tmp_path):
    images, ann = shapes
    out = tmp_path / 'out'
    with pytest.raises(ValueError) as e:
        _train(shapes, '--epochs', '0', '--output', str(out))
    assert str(e.value) == 'epochs must be an int >= 1 (--epochs, or a recipe\'s epochs), got 0'
    with pytest.raises(ValueError) as e:
        _train(shapes, '--num-classes', '0', '--output', str(out))  # 0 used to mean the default
    assert str(e.value).startswith(f"{ann} has category ids up to 2 but the model has num_classes=0")
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text('epochs: ten\nlr: -0.1\nlr_steps: 8\n')
    with pytest.raises(ValueError) as e:
        _train(shapes, '--config', str(recipe), '--output', str(out))
    assert str(e.value) == (
        "epochs must be an int >= 1 (--epochs, or a recipe's epochs), got 'ten'; lr must be a number >= 0 (--lr, or "
        "a recipe's lr), got -0.1; lr_steps must be a list of ints >= 0 (--lr-steps, or a recipe's lr_steps), got 8")
    assert not out.exists()


# ---------------------------------------------------------------- 22. a file that is not a detector checkpoint

def test_a_file_that_is_not_a_detector_checkpoint_is_named(shapes, checkpoint, tmp_path):
    images, ann = shapes
    image = _image(tmp_path / 'in' / 'a.png', (48, 48), 40)
    text = tmp_path / 'notes.txt'
    pickled_list = tmp_path / 'list.pth'
    torch.save([1, 2], pickled_list)
    no_model = tmp_path / 'no_model.pth'
    torch.save(dict(model_config=torch.load(checkpoint, weights_only=True)['model_config']), no_model)
    for content in ('eval notes', 'notes', 'PK\x03\x04 not a zip'):  # KeyError, UnpicklingError, zip errors
        text.write_text(content)
        for argv in (['eval', '--checkpoint', str(text), '--val-images', images, '--val-ann', ann],
                     ['predict', image, '--checkpoint', str(text), '--output-dir', str(tmp_path / 'vis')]):
            with pytest.raises(ValueError) as e:
                _run([*argv, '--device', 'cpu'])
            assert str(e.value).startswith(f'{str(text)!r} is not a readable PyTorch checkpoint ('), content
            assert str(e.value).endswith('): pass the last.pth written by `eca-timm detect train`')
        with pytest.raises(ValueError, match=r"notes\.txt' is not a readable PyTorch checkpoint"):
            # refused before the data is read (this annotation file does not exist)
            _run(['train', *TINY, '--train-images', images, '--train-ann', str(tmp_path / 'nope.json'),
                  '--resume', str(text)])
    with pytest.raises(ValueError) as e:
        _run(['predict', image, '--checkpoint', str(pickled_list), '--output-dir', str(tmp_path / 'vis')])
    assert str(e.value) == (f"{str(pickled_list)!r} is not an `eca-timm detect train` checkpoint (it holds a list, "
                            f"not a dict with model and model_config): pass the last.pth written by `eca-timm "
                            f"detect train`")
    with pytest.raises(ValueError, match=r"no_model\.pth' is not an `eca-timm detect train` checkpoint \(it lacks "
                                         r"model\)"):
        _run(['predict', image, '--checkpoint', str(no_model), '--output-dir', str(tmp_path / 'vis')])
    with pytest.raises(ValueError, match=r"last\.pth' cannot resume training: it lacks optimizer, lr_scheduler, "
                                         r"scaler, epoch \(written by `detect train`"):
        _train(shapes, '--resume', checkpoint)  # a checkpoint with weights only
    assert not (tmp_path / 'vis').exists()


# ---------------------------------------------------------------- 29. an annotation file that is not UTF-8

def test_an_annotation_file_that_is_not_utf8_is_named(shapes, tmp_path):
    images, ann = shapes
    with open(ann) as f:
        text = f.read()
    utf16 = tmp_path / 'utf16.json'
    utf16.write_text(text, encoding='utf-16')
    with pytest.raises(ValueError) as e:
        load_coco_detection(images, str(utf16), train=True, masks=False)
    assert str(e.value).startswith(f"COCO annotation file {str(utf16)!r} is not UTF-8 text (UnicodeDecodeError: ")
    assert str(e.value).endswith('): save it as UTF-8 JSON')
    bom = tmp_path / 'bom.json'
    bom.write_text(text, encoding='utf-8-sig')  # a UTF-8 byte order mark (Windows editors write one) is fine
    assert len(load_coco_detection(images, str(bom), train=True, masks=False)) == 4
