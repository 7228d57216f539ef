"""Every registered model leaves PyTorch the ways a timm model does, with eager's values.

ONNX through both exporters of ``timm.utils.onnx.onnx_export`` (the TorchScript-based one, timm's default, and
``use_dynamo=True``) run by onnxruntime, ``torch.jit.trace`` with grad on and off, ``torch.export`` with a dynamic
batch and image size, and fx symbolic tracing: each at two batch sizes and two image sizes against eager, eval mode
with random BatchNorm statistics (so the ECA branch matters). Whenever a model is captured, the ECA blocks run the
plain ops (``eca_timm.layers.fused.capturing_graph``): the fused step's autograd function and the Triton op never
reach a graph.
"""
import copy
import functools
import warnings
from typing import List, Tuple

import onnx
import pytest
import timm
import torch
from timm.utils.onnx import onnx_export
from torch.export import Dim

import eca_timm
from eca_timm.layers import fused
from eca_timm.models.eca_resnet import EcaBottleneck, EcaResNet
from fused_reference import SMALL, assert_close, max_rel, randomize_bn, run

MODELS = timm.list_models(module=list(eca_timm.MODEL_MODULES + eca_timm.STUDY_MODULES))
# One model per ECA block (basic, bottleneck, inverted residual) for the checks that cost more per model; the
# other models repeat these blocks (deeper, or with timm's own attention in the study baselines)
REPRESENTATIVE = ['eca_resnet18_cifar', 'eca_resnet50', 'eca_mobilenetv2']
# Every model, the 101- and 152-layer ResNets (15-20 s a check: eca_resnet50's blocks, more of them) marked slow
ALL_MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in ('eca_resnet101', 'eca_resnet152') else n
              for n in MODELS]
TOL = 1e-5  # max |a - b| / max |b|: relative to the logits' scale, where float32 itself is that close (_expected)


@functools.lru_cache(maxsize=None)
def _built(name: str) -> torch.nn.Module:
    """``name`` in eval mode with random BatchNorm affine parameters and running statistics: those of one random
    batch (a trained model's statistics follow its activations; random ones would let a deep ResNet's activations
    grow to where float32 itself is off by 1e-2)."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    randomize_bn(model)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in batch_norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, *_sizes(name)[0]))
    for m in batch_norms:
        m.momentum = 0.1
    return model.eval()


def _model(name: str) -> torch.nn.Module:
    return copy.deepcopy(_built(name))


@functools.lru_cache(maxsize=None)
def _sizes(name: str) -> List[Tuple[int, int]]:
    """Two image sizes: the smallest whose last feature map is 2x2 (64 for the stride-32 models, the rc2020 study
    models at CIFAR-10's 32 included; 32 for the CIFAR-stem ones: a 1x1 map would pin the size in torch.export),
    and a larger, non-square one."""
    reduction = timm.create_model(name, device='meta').feature_info[-1]['reduction']
    side = max(32, 2 * reduction)
    return [(side, side), (side * 3 // 2, side * 5 // 4)]


def _inputs(name: str) -> List[torch.Tensor]:
    """Batch 2 and 3 at both image sizes; the first is the example that is exported or traced."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 3, *hw, generator=g) for hw in _sizes(name) for b in (2, 3)]


def _expected(model: torch.nn.Module, inputs: List[torch.Tensor]) -> List[Tuple[torch.Tensor, float]]:
    """Eager outputs and the bound for each: 1e-5, or twice eager float32's own error (against float64) where that
    is larger. Two float32 computations of a model, each within e of the exact result, agree within 2e; on the
    deep ResNets float32 is 2-9e-5 from float64 (the plain ops and the fused step alike)."""
    exact_model = copy.deepcopy(model).double()
    with torch.no_grad():
        outs = [(model(x), exact_model(x.double())) for x in inputs]
    return [(out, max(TOL, 2 * max_rel(out, exact))) for out, exact in outs]


@functools.lru_cache(maxsize=None)
def _expected_for(name: str) -> List[Tuple[torch.Tensor, float]]:
    return _expected(_built(name), _inputs(name))


def _assert_matches(expected: List[Tuple[torch.Tensor, float]], call, inputs: List[torch.Tensor]) -> None:
    """``call(x)`` (an exported or traced model: a tensor or an onnxruntime array) against ``expected``."""
    with torch.no_grad():
        for (want, tol), x in zip(expected, inputs):
            err = max_rel(torch.as_tensor(call(x)), want)
            assert err < tol, (tuple(x.shape), err, tol)


def _assert_matches_eager(name: str, call) -> None:
    """``call`` against the eager model ``name`` on ``_inputs(name)``."""
    _assert_matches(_expected_for(name), call, _inputs(name))


def _onnxruntime(path: str):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _export_onnx(model: torch.nn.Module, path: str, example: torch.Tensor, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation and tracer warnings
        onnx_export(model, path, example_input=example, dynamic_size=True, use_dynamo=dynamo, check=True)


def _check_onnx(name: str, dynamo: bool, tmp_path) -> None:
    model = _model(name)
    inputs = _inputs(name)
    path = str(tmp_path / f'{name}.onnx')
    _export_onnx(model, path, inputs[0], dynamo)
    _assert_matches_eager(name, _onnxruntime(path))


@pytest.mark.parametrize('name', ALL_MODELS)
@pytest.mark.slow
def test_onnx_torchscript_exporter_matches_eager(name, tmp_path):
    """timm's default exporter (TorchScript-based), dynamic batch and image size."""
    _check_onnx(name, False, tmp_path)


@pytest.mark.slow  # 25-40 s a model (torch.export, decompositions, translation); every model: docs/export.md
@pytest.mark.parametrize('name', ['eca_resnet50', 'eca_mobilenetv2'])
def test_onnx_dynamo_exporter_matches_eager(name, tmp_path):
    """``use_dynamo=True`` (torch.export based), dynamic batch and image size: the bottleneck (the basic block has
    the same ops) and the inverted residual."""
    _check_onnx(name, True, tmp_path)


@pytest.mark.parametrize('name', ALL_MODELS)
@pytest.mark.slow
def test_torch_export_dynamic_batch_and_size(name):
    """One exported program for every batch size and image size (no guard on the batch: the fused step's size
    test, ``conv_input_mean``'s ``B*H*W < 16*C``, is not in a captured graph)."""
    model = _model(name)
    inputs = _inputs(name)
    dims = {0: Dim('batch', min=1, max=1024), 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    program = torch.export.export(model, (inputs[0],), dynamic_shapes=(dims,))
    assert 'eca_timm' not in program.graph_module.code  # neither the Triton op nor the autograd function
    _assert_matches_eager(name, program.module())
    batch_9 = torch.randn(9, 3, *_sizes(name)[0])
    _assert_matches(_expected(model, [batch_9]), program.module(), [batch_9])


@pytest.mark.parametrize('grad', [True, False], ids=['grad', 'no_grad'])
@pytest.mark.parametrize('name', REPRESENTATIVE)
@pytest.mark.slow
def test_jit_trace_runs_other_batches_and_backpropagates(name, grad):
    """``torch.jit.trace`` passes its own check (grad on; off, as under ``torch.no_grad()``), runs other batch and
    image sizes, and gives eager's input gradient. In float64: in float32 a ReLU whose input is within rounding of
    0 may fall either way in two correct computations, which moves single gradient elements (the float32 trace is
    what the TorchScript ONNX exporter checks above)."""
    model = _model(name).double()
    inputs = [x.double() for x in _inputs(name)[::3]]  # the example, and batch 3 at the other size
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TracerWarnings of timm's and torch's own code
        traced = torch.jit.trace(model, inputs[0])
    grads = []
    for x in inputs:
        outs = []
        for m in (traced, model):
            x_ = x.clone().requires_grad_()
            outs.append(m(x_))
            outs[-1].square().mean().backward()
            grads.append(x_.grad)
        assert max_rel(*outs) < 1e-10, tuple(x.shape)
        assert max_rel(*grads[-2:]) < 1e-10, tuple(x.shape)


@pytest.mark.parametrize('name', REPRESENTATIVE)
@pytest.mark.slow
def test_traced_training_step_matches_eager(name):
    """A trace of the training-mode model (batch statistics) gives eager's outputs, parameter gradients and
    running statistics, in float64: the plain ops and the fused step are the same computation."""
    model = _model(name).double().train()
    model.drop_rate = 0.  # (MobileNetV2's classifier dropout)
    twin = copy.deepcopy(model)
    x = _inputs(name)[1].double()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(twin, x, check_trace=False)  # the check would run (and count) more batches
    twin.load_state_dict(model.state_dict())  # tracing ran the model once: restore the running statistics
    outs = [m(x) for m in (traced, model)]
    for out in outs:
        out.square().mean().backward()
    assert max_rel(*outs) < 1e-10
    for (n, a), b in zip(twin.named_parameters(), model.parameters()):
        assert max_rel(a.grad, b.grad) < 1e-9, n
    for (n, a), b in zip(twin.named_buffers(), model.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=n)


def test_torchscript_training_step_matches_eager():
    """``torch.jit.script`` compiles the blocks' plain ops: a training step (batch statistics) gives eager's outputs
    and gradients. (Eval mode, every model: test_models.py.) 64x64, so that layer4's BatchNorm normalizes over more
    than 2 values (at 32x32 float32 itself, the plain reference included, is only good to ~1e-4 there)."""
    torch.manual_seed(0)
    model = EcaResNet(block=EcaBottleneck, **SMALL)
    randomize_bn(model)
    scripted = torch.jit.script(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64)
    assert_close(run(scripted, x), run(model, x), 1e-5)


@pytest.mark.parametrize('name', REPRESENTATIVE)
def test_fx_symbolic_trace_matches_eager(name):
    """``torch.fx.symbolic_trace`` of the whole model (the blocks traced through, not kept as leaves): BatchNorm and
    ECA appear as their modules."""
    model = _model(name)
    graph_module = torch.fx.symbolic_trace(model)
    targets = {n.target for n in graph_module.graph.nodes if n.op == 'call_module'}
    eca = next(n for n, m in model.named_modules() if isinstance(m, eca_timm.EcaLayer))
    assert f'{eca}.conv' in targets
    _assert_matches_eager(name, graph_module)


@pytest.mark.skipif(not fused.triton_available(), reason='Triton is not installed: no Triton path to keep out')
@pytest.mark.slow
def test_triton_path_never_reaches_a_captured_graph(tmp_path):
    """With the Triton kernels taking every block eagerly (the 'triton' backend; in Triton's interpreter on the
    CPU), a trace, a torch.export program and an ONNX file hold the plain ops, with the kernels' values."""
    torch.manual_seed(0)
    model = EcaResNet(block=EcaBottleneck, **SMALL).eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)
    inputs = [x, torch.randn(3, 3, 32, 32)]
    with fused.fused_backend('triton'):
        assert fused.step_path(x, model.layer1[0].bn3) == 'triton'
        expected = _expected(model, inputs)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            traced = torch.jit.trace(model, x)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: Dim('batch', min=1, max=64)},))
        path = str(tmp_path / 'model.onnx')
        _export_onnx(model, path, x, dynamo=False)  # (the dynamo exporter runs torch.export, as above)
        for graph in (traced.graph.str(), program.graph_module.code, str(onnx.load(path).graph.node)):
            assert 'eca_timm::' not in graph and 'ops.eca_timm' not in graph and '_BnEcaResidual' not in graph
        for call in (traced, program.module(), _onnxruntime(path)):
            _assert_matches(expected, call, inputs)


class _Probe(torch.nn.Module):
    """+1 where ``capturing_graph()`` holds, -1 where it does not: a captured graph keeps the branch it took."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1 if fused.capturing_graph() else x - 1


def test_capturing_graph_covers_every_capture():
    """The rule holds under every capture and not in eager mode or under torch.compile (which runs the fused
    step)."""
    x = torch.zeros(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runs = {
            'eager': _Probe()(x),
            'compile': torch.compile(_Probe(), backend='eager', fullgraph=True)(x),
            'jit.script': torch.jit.script(_Probe())(x),
            'jit.trace': torch.jit.trace(_Probe(), x, check_trace=False)(x),
            'export': torch.export.export(_Probe(), (x,)).module()(x),
            'export strict': torch.export.export(_Probe(), (x,), strict=True).module()(x),
            'fx': torch.fx.symbolic_trace(_Probe())(x),
        }
    assert {mode: int(out[0, 0]) for mode, out in runs.items()} == {
        'eager': -1, 'compile': -1, 'jit.script': 1, 'jit.trace': 1, 'export': 1, 'export strict': 1, 'fx': 1}
