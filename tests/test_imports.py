"""Imports flow one way (ARCHITECTURE.md): no module imports a higher layer, and no import cycle.

The modules are parsed, not imported: every ``import`` statement counts, also those inside
functions (a deferred import still makes the two modules depend on each other).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = "ctapipe_gammaphysnet"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: layer of each module, by the longest matching name (ARCHITECTURE.md); a module may import its
#: own layer and the ones below
LAYERS = {
    PACKAGE: 0, f"{PACKAGE}.version": 0, f"{PACKAGE}.constants": 0, f"{PACKAGE}.geometry": 0,
    f"{PACKAGE}.selection": 0, f"{PACKAGE}.image_checks": 0, f"{PACKAGE}.progress": 0,
    # the metric definitions: also what the trainer reports per epoch
    f"{PACKAGE}.evaluation.metrics": 0,
    f"{PACKAGE}.nn": 1,
    f"{PACKAGE}.io": 2,
    f"{PACKAGE}.training": 3, f"{PACKAGE}.reco": 3, f"{PACKAGE}.simulation": 3,
    f"{PACKAGE}.evaluation": 4,
    f"{PACKAGE}.tools": 5, f"{PACKAGE}.demo": 5, f"{PACKAGE}.resources": 5,
}


def _module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(name, path, modules):
    """The package's modules that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            # ``from package import module`` imports the module
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _layer(name):
    matches = [prefix for prefix in LAYERS
               if name == prefix or (prefix != PACKAGE and name.startswith(prefix + "."))]
    if not matches:
        pytest.fail(f"{name} has no layer: add it to LAYERS (and ARCHITECTURE.md)")
    return LAYERS[max(matches, key=len)]


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        _layer(name)


def test_no_upward_import(graph):
    upward = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
              for name, targets in sorted(graph.items()) for target in sorted(targets)
              if _layer(target) > _layer(name)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle(graph):
    cycles = []
    state = {}  # name -> "open" while on the stack, "done" when finished

    def visit(name, stack):
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" → ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_imports():
    """The parser finds relative, deferred and ``from package import module`` imports."""
    modules = _modules()
    reco = _imports(f"{PACKAGE}.reco.components", modules[f"{PACKAGE}.reco.components"], modules)
    assert {f"{PACKAGE}.reco.engine", f"{PACKAGE}.selection", f"{PACKAGE}.io.model_file"} <= reco
    train = _imports(f"{PACKAGE}.tools.train", modules[f"{PACKAGE}.tools.train"], modules)
    assert f"{PACKAGE}.training.distributed" in train
