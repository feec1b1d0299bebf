"""The package's shape (docs/architecture.md): layers, no import cycles, size budgets, the front
door. Read from the source with `ast`, so a violation names the file and line."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import mask2anomaly

PACKAGE = Path(mask2anomaly.__file__).resolve().parent
MAX_FILE_LINES = 400  # longer files carry a "# length: <reason>" line at their top
MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 8  # __init__ and __main__ included

# Module prefix -> layer. A module imports only from its own layer or a lower one (longest
# prefix wins). The front door (`mask2anomaly`, `__main__`) sits above everything.
LAYERS = {
    "mask2anomaly.config": 1,
    "mask2anomaly.errors": 1,
    "mask2anomaly.fileio": 1,
    "mask2anomaly.distributed": 1,
    "mask2anomaly.scoring": 1,
    "mask2anomaly.data": 1,
    "mask2anomaly.evaluation": 1,  # metrics, maps and results: arrays in, numbers out
    "mask2anomaly.model": 2,
    "mask2anomaly.train": 2,  # losses, matcher, point sampling, optimiser, one step
    "mask2anomaly.checkpoint": 3,
    "mask2anomaly.inference": 3,
    "mask2anomaly.train.run": 3,
    "mask2anomaly.train.trainer": 3,
    "mask2anomaly.evaluation.driver": 3,
    "mask2anomaly.evaluation.report": 3,
    "mask2anomaly.demo": 4,
    "mask2anomaly.app": 4,  # the browser app: analysis, files, the Gradio page
    "mask2anomaly.cli": 5,
    "mask2anomaly.__main__": 6,
}
MODEL_FREE = ("mask2anomaly.data", "mask2anomaly.evaluation")  # never reach mask2anomaly.model


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module of this package, line) for every import statement, local ones too."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import submodule` imports the submodule
            targets = [module] + [
                f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES
            ]
        else:
            continue
        found += [(t, node.lineno) for t in targets if t.split(".")[0] == "mask2anomaly"]
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = set()
        for target, _ in _imports(name, path):
            # importing a.b.c runs a, a.b and a.b.c
            parts = target.split(".")
            edges |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} & set(MODULES)
        # a package's own __init__ and its parents run first, but are not the module's choice
        edges.discard(name)
        graph[name] = edges - {"mask2anomaly"}
    return graph


def _layer(module: str) -> int:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert matches, f"{module} has no layer in tests/test_layout.py"
    return LAYERS[max(matches, key=len)]


def test_every_import_goes_to_the_same_or_a_lower_layer():
    problems = []
    for name, path in MODULES.items():
        if name == "mask2anomaly":
            continue
        for target, line in _imports(name, path):
            if target in MODULES and target != "mask2anomaly" and _layer(target) > _layer(name):
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer "
                    f"{_layer(name)}) imports {target} (layer {_layer(target)})"
                )
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1 and not (node.startswith(nxt + ".")):
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_data_and_evaluation_never_reach_the_model():
    graph = _graph()
    for start in (m for m in MODULES if m.startswith(MODEL_FREE)):
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            for nxt in graph.get(module, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reached = sorted(m for m in seen if m.startswith("mask2anomaly.model"))
        assert not reached, f"{start} reaches {reached}"


def test_size_budgets():
    problems = []
    for path in MODULES.values():
        text = path.read_text()
        lines = text.splitlines()
        head = lines[:3]
        if len(lines) > MAX_FILE_LINES and not any(line.startswith("# length: ") for line in head):
            problems.append(f"{path}: {len(lines)} lines and no '# length: <reason>' at its top")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path}:{node.lineno}: {node.name} has {length} lines")
    assert not problems, "\n".join(problems)


def test_top_level_holds_few_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_front_door_lists_and_resolves_the_public_api():
    assert mask2anomaly.__all__[0] == "__version__"
    assert set(mask2anomaly.__all__[1:]) == set(mask2anomaly._EXPORTS)
    for name in mask2anomaly.__all__:
        value = getattr(mask2anomaly, name)
        if name != "__version__":
            module = importlib.import_module(mask2anomaly._EXPORTS[name])
            assert getattr(module, name) is value
    with pytest.raises(AttributeError):
        mask2anomaly.no_such_name  # noqa: B018
