"""The layout shows the pipeline: audio -> features -> compression -> phases -> model -> config ->
data -> training -> report -> experiments -> command line, and no module-level import runs back
up a stage (a function-level import for an optional extra or a registry is allowed)."""

import ast
from pathlib import Path

import coarse2fine

PACKAGE = Path(coarse2fine.__file__).parent

# Stage of each top-level module or package of coarse2fine; an import may only go to the same
# stage or a lower one.
STAGES = {
    "(root)": 0, "presets": 0, "atomic": 0, "folder_lock": 0, "run_folders": 0, "runtime": 0, "extras": 0, "logs": 0, "audio": 0,
    "features": 1,
    "compression": 2,
    "phases": 3,
    "model": 4,
    "objectives": 5,
    "config": 6,
    "data": 7,
    "training": 8,
    "report": 9, "predict": 9, "onnx_model": 9,
    "core": 10, "experiments": 10,
    "integrations": 11, "cli": 11, "__main__": 12,
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _module_imports() -> dict[str, set[str]]:
    """Every module's module-level imports of coarse2fine modules (``from a import b`` counts as
    ``a.b`` where that is a module, as ``a`` otherwise)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in paths.items():
        found = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        out[name] = {m for m in found if m.split(".")[0] == "coarse2fine"}
    return out


def test_every_top_level_module_has_a_stage():
    units = {_unit(m) for m in _module_imports()}
    assert units <= set(STAGES), f"give these a stage: {sorted(units - set(STAGES))}"


def test_no_import_runs_back_up_a_stage():
    upward = sorted(f"{m} imports {t}" for m, targets in _module_imports().items() for t in targets
                    if STAGES[_unit(t)] > STAGES[_unit(m)])
    assert not upward, "\n".join(upward)


def test_modules_import_each_other_without_circles():
    graph = _module_imports()
    modules = set(graph)
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}
    # A package's __init__ re-exports its own modules: an edge into one's own package is not a circle.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                circle = stack[stack.index(t):] + [m, t] if t in stack else [m, t]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
