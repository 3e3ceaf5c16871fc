"""The house rules of docs/architecture.md, checked from the source: imports run downhill (a module
imports only from its own floor or below), the import graph has no circle, and no module imports
another's private (``_x``) names. Function-level imports count: a lazy import is still an edge."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowvision"

# docs/architecture.md, "Floors", from the bottom: a folder is one floor, and its modules stand on it. The
# package root holds only the version and the public names, loaded lazily (nothing at import time).
FLOORS = {0: ("", "core"), 1: ("data",), 2: ("methods",), 3: ("stages",), 4: ("scale",), 5: ("reporting",),
          6: ("cli", "__main__")}
FOLDER_FLOOR = {name: floor for floor, names in FLOORS.items() for name in names}
MAX_LINES = 450      # a module is one concern read in one sitting
MAX_TOP_LEVEL = 12   # modules at the package's top: the rest live in folders named for their concern


def floor(module: str):
    """The floor of a module (dotted, relative to the package): its top folder's (None: on no floor)."""
    return FOLDER_FLOOR.get(module.split(".")[0])


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
    homeless = sorted(m for m in graph if floor(m) is None)
    assert not homeless, f"modules on no floor (put them in a folder of FLOORS, here and in docs/architecture.md): {homeless}"
    uphill = [f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
              for m, edges in graph.items() for t, _ in edges if floor(t) > floor(m)]
    assert not uphill, "imports that run uphill:\n" + "\n".join(uphill)


def test_no_module_is_longer_than_one_sitting_and_the_top_level_is_small():
    long = [f"{p.relative_to(PACKAGE)}: {n} lines" for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines (split them along the data flow):\n" + "\n".join(long)
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert set(folders) <= set(FOLDER_FLOOR), f"folders on no floor: {sorted(set(folders) - set(FOLDER_FLOOR))}"


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
    assert ("stages.pipeline", ("start",)) in graph["stages.run"]            # module level, relative
    assert any(t == "stages.audit" for t, _ in graph["stages.record"])      # inside a function
    assert any(t == "reporting.runs" for t, _ in graph["reporting.plots"])  # absolute: from flowvision.reporting.runs import
    assert ("core.errors", ("UserError",)) in graph["core.config"]          # a name, not a module
    assert floor("methods.train") == 2 and floor("") == 0 and floor("nowhere.x") is None
