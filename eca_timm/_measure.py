"""What a model costs: its parameters and FLOPs, counted, and its throughput, timed; shared by ``eca-timm models``,
``eca-timm bench``, the model cards and the study report.

Counts come from torch's ``FlopCounterMode`` on the meta device (no memory, no compute). A timed step is one
inference forward or one training step (forward, cross-entropy, backward, SGD step, as timm's benchmark.py). Every
model of a setting is timed once per round in a rotated order, with ``torch.utils.benchmark``'s
``blocked_autorange``, so load changes on a shared machine hit all of them alike; img/s comes from the median over
rounds, ratios are the median of the per-round ratios to the reference.
"""
import copy
import logging
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['CLOCKS', 'check_device', 'clock', 'device_name', 'interleaved_times', 'make_step', 'params_and_flops',
           'summarize']

# 'wall': torch.utils.benchmark's default clock (synchronizes the accelerator). 'cpu': this process's CPU time,
# which other processes on a shared machine barely disturb (best with one thread: no OpenMP spin-waiting).
CLOCKS = ('wall', 'cpu')

Step = Callable[[], Any]


def params_and_flops(model: nn.Module, input_size: Sequence[int]) -> Tuple[int, int]:
    """(parameters, FLOPs of one forward of one ``input_size`` = (C, H, W) image), counted on a meta-device copy of
    ``model`` in eval mode (``model`` itself is untouched); MACs are FLOPs / 2."""
    meta = copy.deepcopy(model).to('meta').eval()
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, *input_size, device='meta'))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def _benchmark_module() -> Any:
    """``torch.utils.benchmark``, imported on use and without the warning its import logs where CUDA is missing
    (it would show in every command, and between the progress lines)."""
    cpp_logger = logging.getLogger('torch.utils.cpp_extension')
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        import torch.utils.benchmark as benchmark
    finally:
        cpp_logger.setLevel(level)
    return benchmark


def clock(name: str) -> Callable[[], float]:
    """The timer of a clock name (``CLOCKS``)."""
    if name not in CLOCKS:
        raise ValueError(f'clock must be one of {list(CLOCKS)}, got {name!r}')
    return _benchmark_module().utils.timer.timer if name == 'wall' else time.process_time


def check_device(device: str, clock: str = 'wall', flag: str = '--device') -> torch.device:
    """``device`` as a torch device that can be timed with ``clock``: the CPU, or CUDA when this torch has it.
    ``flag`` names the option in the error (``--device`` for bench, ``--cost-device`` for plot)."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{flag} {device}: not a device name ({e}); use 'cpu' or 'cuda[:N]'") from e
    if clock == 'cpu' and dev.type != 'cpu':
        raise ValueError(f"clock='cpu' times this process's CPU work and misses {dev.type} kernels; use clock='wall'")
    if dev.type not in ('cpu', 'cuda'):
        raise ValueError(f"{flag} {device}: eca-timm times 'cpu' and 'cuda[:N]' only")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'{flag} {device}: CUDA is not available here; use {flag} cpu')
    return dev


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and torch's thread count."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), name)
    except OSError:
        pass
    return f'{name}, {torch.get_num_threads()} threads'


def make_step(model: nn.Module, phase: str, x: torch.Tensor, autocast: Optional[torch.dtype] = None,
              num_classes: int = 1000) -> Step:
    """One inference forward (``phase='infer'``), or one training step, optionally under autocast."""
    amp = torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None)
    if phase == 'infer':
        model.eval()

        def infer():
            with torch.inference_mode(), amp:
                return model(x)
        return infer
    model.train()
    target = torch.randint(0, num_classes, (x.shape[0],), device=x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with amp:
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
    return train


def interleaved_times(steps: Mapping[str, Step], rounds: int, min_run_time: float, timer: Callable[[], float],
                      on_round: Optional[Callable[[int, Dict[str, List[float]]], None]] = None
                      ) -> Dict[str, List[float]]:
    """Seconds per call of every step, one ``blocked_autorange`` median per round, rounds in a rotated order."""
    Timer = _benchmark_module().Timer
    times: Dict[str, List[float]] = {label: [] for label in steps}
    labels = list(steps)
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            t = Timer(stmt='step()', globals={'step': steps[label]}, num_threads=torch.get_num_threads(), timer=timer)
            times[label].append(t.blocked_autorange(min_run_time=min_run_time).median)
        if on_round is not None:
            on_round(r, times)
    return times


def summarize(times: Mapping[str, List[float]], reference: str, batch_size: int) -> Dict[str, Dict[str, Any]]:
    """Per label: img/s (median over rounds), ratio to ``reference`` (median of per-round ratios), its range."""
    out = {}
    for label, t in times.items():
        ratios = [tr / tl for tr, tl in zip(times[reference], t)]
        out[label] = dict(img_per_s=batch_size / statistics.median(t), ratio=statistics.median(ratios),
                          ratio_min=min(ratios), ratio_max=max(ratios), times_s=list(t))
    return out
