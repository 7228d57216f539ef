"""The plain reference the fused ECA blocks are tested against: the official formula (mean over H, W -> 1-D conv
across channels -> sigmoid -> scale) inside timm's unfused ``BasicBlock``/``Bottleneck`` and a plain inverted
residual, and the helpers that run both and compare outputs and gradients."""
import torch
import torch.nn.functional as F
from torch import nn

from eca_timm.layers import EcaLayer, bn_eca_residual
from eca_timm.models.eca_mobilenetv2 import EcaInvertedResidual
from eca_timm.models.eca_resnet import EcaResNet

SMALL = dict(layers=(1, 1, 1, 1), channels=(8, 16, 24, 32), stem_width=8, num_classes=5, eca_kernel_sizes=(1, 3, 5, 3))


def ref_eca(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The official ECA layer: x * sigmoid(conv1d(mean_hw(x))) with a zero-padded [1, 1, k] conv."""
    k = weight.shape[-1]
    y = F.conv1d(x.mean(dim=(2, 3)).unsqueeze(1), weight, padding=(k - 1) // 2)
    return x * torch.sigmoid(y).squeeze(1)[:, :, None, None]


class RefEca(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ref_eca(x, self.weight)


def ref_resnet(model: EcaResNet, plain_block: type, drop_path_rate: float = 0.) -> EcaResNet:
    """``model``'s weights in timm's unfused block with the reference ECA at ``.se``."""
    ref = EcaResNet(block=plain_block, **{**SMALL, 'eca_kernel_sizes': model.eca_kernel_sizes},
                    drop_path_rate=drop_path_rate)
    ref.load_state_dict(model.state_dict())
    for stage in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
        for blk in stage:
            blk.se = RefEca(blk.se.conv.weight)
    return ref


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BatchNorm affine parameters and running stats, so the recompute path is exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()  # not .float(): float64 results are compared at float64 resolution
    return ((a - b).abs().max() / b.abs().max()).item()


def run(model, x, seed=0):
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    out = model(x)
    out.backward(torch.ones_like(out) / out.numel() + out.detach())
    # one naming for all: the reference's `.se.weight` is the model's `.se.conv.weight`; no torch.compile prefix
    grads = {n.replace('_orig_mod.', '').replace('.se.weight', '.se.conv.weight'): p.grad
             for n, p in model.named_parameters()}
    return out, x.grad, grads


def assert_close(fast, ref, tol):
    out, x_grad, grads = fast
    r_out, r_x_grad, r_grads = ref
    assert max_rel(out, r_out) < tol
    assert max_rel(x_grad, r_x_grad) < tol
    assert grads.keys() == r_grads.keys()
    for name in grads:
        assert max_rel(grads[name], r_grads[name]) < tol, name


def flat(result):
    out, x_grad, grads = result
    return [out, x_grad, *grads.values()]


def ref_inverted_residual(blk: EcaInvertedResidual, x: torch.Tensor) -> torch.Tensor:
    """The official block order: projection BN, then ECA, then the residual add."""
    y = blk.bn3(blk.conv_pwl(blk.bn2(blk.conv_dw(blk.bn1(blk.conv_pw(x))))))
    y = ref_eca(y, blk.eca.conv.weight)
    return y + x if blk.has_skip else y


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct activation storages (not parameters) autograd keeps for backward after one forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


def check_batch_norm_variant(bn_kwargs: dict, training: bool, place=lambda *ts: ts) -> None:
    """``bn_eca_residual`` with a BatchNorm option that changes its forward or backward (no affine, no running
    stats, a cumulative average) against ``nn.BatchNorm2d``'s autograd, float64, twice (the cumulative average
    uses num_batches_tracked). ``place`` moves modules and tensors (to a device, a layout)."""
    import copy
    torch.manual_seed(0)
    bn, eca = nn.BatchNorm2d(12, **bn_kwargs).double().train(training), EcaLayer(12, 3).double()
    if bn.affine and bn.track_running_stats:
        randomize_bn(bn)
    elif bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    r_bn, r_eca = copy.deepcopy(bn), RefEca(eca.conv.weight)
    bn, eca, r_bn, r_eca = place(bn, eca, r_bn, r_eca)
    c, shortcut = place(torch.randn(4, 12, 5, 5, dtype=torch.double), torch.randn(4, 12, 5, 5, dtype=torch.double))
    c1, c2 = c.clone().requires_grad_(), c.clone().requires_grad_()
    s1, s2 = shortcut.clone().requires_grad_(), shortcut.clone().requires_grad_()
    for _ in range(2):
        out, r_out = bn_eca_residual(c1 * 1, bn, eca, s1), s2 + r_eca(r_bn(c2 * 1))
        out.backward(r_out.detach())
        r_out.backward(r_out.detach())
        assert max_rel(out, r_out) < 1e-10
    for a, b in [(c1.grad, c2.grad), (s1.grad, s2.grad), (eca.conv.weight.grad, r_eca.weight.grad),
                 *zip([p.grad for p in bn.parameters()], [p.grad for p in r_bn.parameters()])]:
        assert max_rel(a, b) < 1e-10
    for a, b in zip(bn.buffers(), r_bn.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def assert_same_step(module: nn.Module, run_module, ref: nn.Module, run_ref, x: torch.Tensor,
                     tol: float = 1e-10) -> None:
    """Forward and backward (the gradient: the reference output) of ``run_module(x)`` and ``run_ref(x)``: outputs,
    input gradients and every parameter gradient (``module``'s against ``ref``'s, in order) agree within ``tol``."""
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, r_out = run_module(x1), run_ref(x2)
    out.backward(r_out.detach())
    r_out.backward(r_out.detach())
    assert max_rel(out, r_out) < tol
    assert max_rel(x1.grad, x2.grad) < tol
    for (name, p), r_p in zip(module.named_parameters(), ref.parameters()):
        assert max_rel(p.grad, r_p.grad) < tol, name
