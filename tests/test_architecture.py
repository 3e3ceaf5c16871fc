"""The house rules of docs/architecture.md, checked from the source: imports run downhill (a module
imports only from its own floor or below), the import graph has no circle, and no module imports
another's private (``_x``) names. Function-level imports count: a lazy import is still an edge."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowvision"

# docs/architecture.md, "Floors", from the bottom; a new module joins one (the test names it otherwise).
FLOORS = {
    0: ("", "errors", "registry", "files", "console", "distributed", "stats", "weighting", "config"),
    1: ("hardware", "data", "data.base", "data.images", "data.device", "data.synthetic", "data.decoded", "data.real",
        "data.imagenet", "data.synsets", "data.fetch", "data.prepare", "data.folder", "models", "evaluate", "runstate", "trackers"),
    2: ("stages", "train", "source", "forgetting", "importing"),
    3: ("pipeline",),
    4: ("audit", "record", "costs", "dryrun"),
    5: ("run", "housekeeping", "runs", "ledger", "tables", "plots", "report", "grid", "launch", "frontier",
        "bench", "gpucheck", "gpucell", "export"),
    6: ("cli_data", "cli", "__main__"),
}
FLOOR = {name: floor for floor, names in FLOORS.items() for name in names}


def _modules() -> dict:
    """module name relative to the package ('' for __init__, 'data' for data/__init__) -> path"""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> list:
    """[(imported module, the names it takes)] for every flowvision import in one file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    edges = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "flowvision":
                base = node.module.split(".")[1:]
            else:
                continue
            base = ".".join(base)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in modules:
                    edges.append((sub, ()))
                else:
                    edges.append((base, (alias.name,)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flowvision":
                    edges.append((".".join(alias.name.split(".")[1:]), ()))
    return [(target, names) for target, names in edges if target in modules and target != name]


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_is_on_a_floor_and_imports_only_from_its_floor_or_below():
    graph = _graph()
    homeless = sorted(set(graph) - set(FLOOR))
    assert not homeless, f"modules on no floor (add them to FLOORS here and in docs/architecture.md): {homeless}"
    uphill = [f"{m} (floor {FLOOR[m]}) imports {t} (floor {FLOOR[t]})"
              for m, edges in graph.items() for t, _ in edges if FLOOR[t] > FLOOR[m] ]
    assert not uphill, "imports that run uphill:\n" + "\n".join(uphill)


def test_the_import_graph_has_no_circle():
    graph = {m: {t for t, _ in edges} for m, edges in _graph().items()}
    state, path, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_module_imports_another_modules_private_names():
    private = [f"{m} imports {t}.{n}" for m, edges in _graph().items() for t, names in edges for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert not private, "private names used outside their module:\n" + "\n".join(private)


def test_the_checks_above_can_fail():
    """The graph builder sees relative, absolute and function-level imports (else the checks pass vacuously)."""
    graph = dict(_graph())
    assert ("pipeline", ("start",)) in graph["run"]             # module level, relative
    assert any(t == "audit" for t, _ in graph["record"])         # inside a function
    assert any(t == "runs" for t, _ in graph["plots"])           # absolute: from flowvision.runs import ...
    assert ("errors", ("UserError",)) in graph["config"]         # a name, not a module
