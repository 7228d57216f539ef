"""The package's one import rule: imports only go down (cli -> commands -> models -> layers), and never in a cycle.

Every ``import`` in every module counts, function-level ones included (they would hide a cycle, not remove it).
Wings, bottom up: utilities (``_io``, ``_measure``, ``_resources``, ``_version``) and the data packages, ``layers/``,
``models/``, the commands (``weights/``, ``train/``, ``detection/``, ``bench``, ``model_table``), the CLI (``cli``), and
on it the ``python -m eca_timm.run`` entry point. A module imports from lower wings, or from its own wing; the
package's ``__init__`` is the public facade: it imports layers and models, and no module imports it. Modules are split
by concern; the size limit is only a guard against one that holds several.
"""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import eca_timm

PACKAGE = Path(eca_timm.__file__).resolve().parent
UTILITIES = {'eca_timm._io', 'eca_timm._measure', 'eca_timm._resources', 'eca_timm._version'}
RANKS = {'data': 0, 'hub_data': 0, 'train_configs': 0, 'layers': 1, 'models': 2, 'weights': 3, 'train': 3, 'detection': 3, 'bench': 3, 'model_table': 3, 'cli': 4,
         'run': 5}  # ``python -m eca_timm.run`` is ``eca-timm run``: the entry point sits on the CLI
MAX_LINES = 600


def _modules() -> Dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """Package modules that ``name`` imports (the longest known module of each imported name)."""
    is_pkg = path.name == '__init__.py'
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if is_pkg else name.split('.')[:-1]
                base = base[:len(base) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            # ``from X import name`` imports module X.name when there is one, else X
            targets = [f'{mod}.{a.name}' if f'{mod}.{a.name}' in known else mod for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition('.')[0]
            if t and t != name:
                out.add(t)
    return out


def _wing(module: str) -> Tuple[int, str]:
    """(rank, wing) of a package module; the facade ``eca_timm`` ranks above everything but imports only down."""
    if module in UTILITIES:
        return 0, 'utilities'
    if module == 'eca_timm':
        return 5, 'facade'
    wing = module.split('.')[1]
    return RANKS[wing], wing


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_belongs_to_a_wing():
    for module in _graph():
        _wing(module)  # a KeyError names a module outside the wings


def test_imports_only_go_down():
    bad = []
    for module, imports in _graph().items():
        rank, wing = _wing(module)
        for target in imports:
            t_rank, t_wing = _wing(target)
            if target == 'eca_timm' or t_rank > rank or (t_rank == rank and t_wing != wing):
                bad.append(f'{module} -> {target}')
    assert bad == [], 'imports that do not go down: ' + ', '.join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    state: Dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(' -> '.join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_models_and_layers_import_no_tools():
    """Model code never imports publishing, training, detection or CLI code (nor torch.library ops' users)."""
    for module, imports in _graph().items():
        if _wing(module)[1] in ('layers', 'models'):
            assert not {i for i in imports if _wing(i)[0] >= 3}, module


def test_commands_import_no_private_names():
    """What a command module shares with another is public (in its ``__all__``): no ``from .x import _name``."""
    mods = _modules()
    bad = []
    for name, path in mods.items():
        if _wing(name)[0] < 3:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('eca_timm')):
                bad += [f'{name}: {a.name}' for a in node.names if a.name.startswith('_') and not a.name.startswith('__')]
    assert bad == []


def test_no_module_over_the_size_limit():
    """A guard, not a design rule: a module this long most likely holds more than one concern."""
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding='utf-8').splitlines())) > MAX_LINES}
    assert long == {}
