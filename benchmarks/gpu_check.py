"""GPU check of the fused ECA step: the Triton kernels against timm's plain blocks on CUDA.

For eca_resnet50, eca_resnet18 (timm's plain blocks with the plugin's ECA layer as reference) and eca_mobilenetv2
(the torch-ops path as reference), NCHW and channels_last, batch 32 at 224x224, training mode:
- fp32 (TF32 off): logits, loss and every parameter gradient of the fused model against the reference;
- bf16 autocast: the fused and the reference bf16 runs, each against the fp32 reference: the fused step should be no
  further from it than the plain bf16 computation;
- eval logits, and torch.compile (no graph break; the custom ops stay whole; compiled = eager).
Errors are relative: ||a - b|| / ||b|| (``norm``) and max|a - b| / max|b| (``max``). ReLU masks make single elements
jump where two correct fp32 computations round an input near 0 differently, so ``norm`` is the figure to judge.
Writes one JSON file (``--out``) and prints a line per check.
"""
import argparse
import copy
import json
import sys
import time

import timm
import torch
import torch.nn.functional as F

import eca_timm  # noqa: F401  (registers the models)
from eca_timm.layers import fused
from eca_timm.bench import _unfused_eca_resnet

HALF = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def _errors(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double(), b.double()
    return {'norm': ((a - b).norm() / b.norm().clamp_min(1e-30)).item(),
            'max': ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()}


def _step(model, x, y, dtype, backend):
    model.zero_grad(set_to_none=True)
    with fused.fused_backend(backend), torch.autocast(x.device.type, dtype=dtype or torch.float32,
                                                      enabled=dtype is not None):
        out = model(x)
        loss = F.cross_entropy(out, y)
    loss.backward()
    grads = {n.replace('_orig_mod.', ''): p.grad.float().clone() for n, p in model.named_parameters()}
    return out.float().detach(), loss.item(), grads


def _compare(run, ref) -> dict:
    out, loss, grads = run
    r_out, r_loss, r_grads = ref
    g = {n: _errors(grads[n], r_grads[n]) for n in grads}
    worst = max(g, key=lambda n: g[n]['norm'])
    return {'logits': _errors(out, r_out), 'loss_diff': abs(loss - r_loss), 'grad_norm_max': g[worst]['norm'],
            'grad_max_max': max(v['max'] for v in g.values()), 'worst_grad': worst}


def check_model(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    kwargs = {'zero_init_last': False} if name.startswith('eca_resnet') else {}  # a non-trivial ECA branch
    model = timm.create_model(name, **kwargs).to(args.device)
    if name.startswith('eca_resnet'):
        reference = _unfused_eca_resnet(name, **kwargs).to(args.device)
        reference.load_state_dict(model.state_dict())
    else:
        reference = copy.deepcopy(model)  # run by the torch ops, which test_fused_step.py checks against plain blocks
    ref_backend, half, backend = 'torch', HALF[args.half], args.backend
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    result = {}
    for layout in ('nchw', 'channels_last'):
        xx = x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x
        for m in (model, reference):
            m.to(memory_format=torch.channels_last if layout == 'channels_last' else torch.contiguous_format)

        def run(m, dtype, backend):
            m.load_state_dict(state)
            m.train()
            return _step(m, xx, y, dtype, backend)

        ref32 = run(reference, None, ref_backend)
        fused32 = _compare(run(model, None, backend), ref32)
        fused16 = _compare(run(model, half, backend), ref32)
        plain16 = _compare(run(reference, half, ref_backend), ref32)
        for m in (model, reference):
            m.load_state_dict(state)
            m.eval()
        with torch.no_grad():
            with fused.fused_backend(backend):
                fast = model(xx)
            with fused.fused_backend(ref_backend):
                slow = reference(xx)
        result[layout] = {'fp32': fused32, f'{args.half}_fused': fused16, f'{args.half}_plain': plain16,
                          'eval_logits': _errors(fast, slow)}
        print(f"{name} {layout}: fp32 grads norm {fused32['grad_norm_max']:.1e} (max {fused32['grad_max_max']:.1e}, "
              f"{fused32['worst_grad']}), logits {fused32['logits']['norm']:.1e}; {args.half} vs fp32 fused "
              f"{fused16['grad_norm_max']:.2e} / plain {plain16['grad_norm_max']:.2e}, logits "
              f"{fused16['logits']['norm']:.2e} / {plain16['logits']['norm']:.2e}; eval "
              f"{result[layout]['eval_logits']['norm']:.1e}", flush=True)
    return result


def check_compile(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = timm.create_model('eca_resnet50', zero_init_last=False).to(args.device, memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    x = x.to(memory_format=torch.channels_last)
    with fused.fused_backend(args.backend):
        explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    graph = '\n'.join(str(g.graph) for g in explained.graphs)
    state = copy.deepcopy(model.state_dict())
    y = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    eager = _step(model, x, y, HALF[args.half], args.backend)
    model.load_state_dict(state)
    compiled = torch.compile(model)
    result = {'graph_breaks': explained.graph_break_count,
              'custom_ops_in_graph': graph.count('eca_timm.bn_eca_residual'),
              'compiled_vs_eager': _compare(_step(compiled, x, y, HALF[args.half], args.backend), eager)}
    print(f"compile: {result['graph_breaks']} graph breaks, {result['custom_ops_in_graph']} fused ops in the graph, "
          f"{args.half} compiled vs eager grads norm {result['compiled_vs_eager']['grad_norm_max']:.2e}", flush=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', required=True, help='JSON results file')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--device', default='cuda', help="'cpu' with --backend triton runs a smoke test in Triton's "
                                                    "interpreter (TRITON_INTERPRET=1)")
    p.add_argument('--backend', default='auto', choices=fused.BACKENDS, help='fused backend of the checked model')
    p.add_argument('--half', default='bf16', choices=list(HALF), help='half precision of the autocast runs')
    args = p.parse_args()
    if not fused.triton_available() or (args.device == 'cuda' and not torch.cuda.is_available()):
        print('gpu_check: needs Triton, and CUDA unless --device cpu (with TRITON_INTERPRET=1)', file=sys.stderr)
        return 2
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    start = time.time()
    device = torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu (Triton interpreter)'
    report = {'device': device, 'torch': torch.__version__, 'timm': timm.__version__, 'half': args.half,
              'batch_size': args.batch_size, 'img_size': args.img_size, 'models': {}}
    for name in ('eca_resnet50', 'eca_resnet18', 'eca_mobilenetv2'):
        report['models'][name] = check_model(name, args)
    report['compile'] = check_compile(args)
    report['seconds'] = time.time() - start
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
