"""The tree's rules, checked on the source: imports go one way (nothing below the faces imports cli.py or
api.py), no import circles (lazy imports inside functions included), small modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compress"
FACES = {"compress.cli", "compress.api"}


def module_graph() -> dict[str, set[str]]:
    """{module: compress modules it imports anywhere in its source}."""
    paths = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        paths[name] = path
    graph = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compress"):
                targets |= {t for t in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if t in paths}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in paths}
        graph[name] = targets - {name}
    return graph


def test_nothing_below_the_faces_imports_them():
    faces_and_entry = FACES | {"compress", "compress.__main__"}
    offenders = {m: t & FACES for m, t in module_graph().items() if t & FACES and m not in faces_and_entry}
    assert offenders == {}


def test_no_import_circles():
    edges = module_graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in edges[node]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in edges:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_modules_stay_small():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 300, {k: v for k, v in sizes.items() if v > 300}
