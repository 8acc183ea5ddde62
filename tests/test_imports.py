"""The import graph of the project's packages: floors whose arrows only point down, and no circle anywhere.

Every `import` and `from ... import` of a project module counts, at any depth (an import inside a function is an
arrow all the same). Floors, lowest first: common (file helpers), tasks (making data), irl (training), analysis
(reading runs), findings and app (on top)."""

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("common", "tasks", "irl", "analysis", "findings", "app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, modules: set[str], package: str) -> set[str]:
    """The project modules a module's AST imports (`from pkg import mod` names the module when it is one)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports} over every module of FLOORS."""
    paths = [p for floor in FLOORS for p in sorted((ROOT / floor).rglob("*.py"))]
    modules = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported(ast.parse(path.read_text(encoding="utf-8")), modules, package) - {name}
    return graph


def test_no_import_cycle_between_modules():
    graphlib.TopologicalSorter(import_graph()).prepare()  # raises CycleError naming the circle


def test_floors_only_import_downwards():
    graph = import_graph()
    rank = {floor: i for i, floor in enumerate(FLOORS)}
    rank["app"] = rank["findings"] + 1  # the app shows the findings report
    upward = sorted(
        (a, b) for a, targets in graph.items() for b in targets if rank[b.split(".")[0]] > rank[a.split(".")[0]]
    )
    assert not upward, f"imports from a floor above: {upward}"
    packages = {}
    for a, targets in graph.items():
        floor = a.split(".")[0]
        packages.setdefault(floor, set()).update(b.split(".")[0] for b in targets if b.split(".")[0] != floor)
    graphlib.TopologicalSorter(packages).prepare()


def test_the_graph_sees_imports_inside_functions():
    """The walker counts a function-level import and resolves `from pkg import module` to the module."""
    tree = ast.parse("def f():\n    from tasks import text\n    import irl.data\nfrom analysis.schema import RUN\n")
    modules = {"tasks", "tasks.text", "irl", "irl.data", "analysis", "analysis.schema"}
    assert imported(tree, modules, "x") == {"tasks", "tasks.text", "irl.data", "analysis.schema"}
