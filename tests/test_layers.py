"""The layers hold, following imports transitively (lazy imports inside functions included):

- the core (``cfbench`` outside ``cfbench.app``) never reaches the policy zoo;
- ``policies`` reaches only the core, never the application package;
- only the application package ``cfbench.app`` imports ``policies``;
- no two modules reach each other (no cycles).

``python tests/test_layers.py`` prints the import table: every module, the project modules it
imports directly and the layers it reaches.
"""

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("core", "app", "policies")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@cache
def imports() -> dict[str, frozenset[str]]:
    """module -> the project modules it imports directly (a module's packages included: importing
    ``cfbench.app.spec`` runs ``cfbench.app``'s ``__init__``)."""
    paths = sorted([*ROOT.glob("cfbench/**/*.py"), *ROOT.glob("policies/**/*.py")])
    modules = {_module_name(path) for path in paths}
    graph = {}
    for path in paths:
        module, found = _module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
        graph[module] = frozenset(found - {module})
    return graph


def reach(graph: dict[str, frozenset[str]], module: str) -> frozenset[str]:
    """Every module of ``graph`` that importing ``module`` imports, directly or not."""
    seen, todo = set(), list(graph[module])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return frozenset(seen)


@cache
def reaches(module: str) -> frozenset[str]:
    return reach(imports(), module)


def layer(module: str) -> str:
    if module == "cfbench.app" or module.startswith("cfbench.app."):
        return "app"
    return "policies" if module.split(".")[0] == "policies" else "core"


def test_the_core_never_reaches_the_policy_zoo():
    offenders = {m: sorted(d for d in reaches(m) if layer(d) != "core") for m in imports() if layer(m) == "core"}
    assert {m: deps for m, deps in offenders.items() if deps} == {}


def test_policies_reach_only_the_core():
    offenders = {m: sorted(d for d in reaches(m) if layer(d) == "app") for m in imports() if layer(m) == "policies"}
    assert {m: deps for m, deps in offenders.items() if deps} == {}


def test_only_the_application_package_imports_policies():
    importers = {m for m, deps in imports().items() if layer(m) != "policies" and any(layer(d) == "policies"
                                                                                     for d in deps)}
    assert importers and all(layer(m) == "app" for m in importers), sorted(importers)


def test_the_evaluator_and_the_probe_reach_only_the_core():
    for module in ("cfbench.evaluate", "cfbench.fidelity"):
        assert {layer(d) for d in reaches(module)} <= {"core"}, module


def test_the_leaderboard_reads_records_only_through_the_core():
    """It ranks what the records say: no policy, command or sweep can shape the page."""
    allowed = {"cfbench", *(f"cfbench.{name}" for name in ("results", "stats", "envs", "protocol", "files", "paths",
                                                           "eval_info"))}
    offenders = {module: sorted(d for d in deps if d not in allowed and not d.startswith("cfbench.leaderboard"))
                 for module, deps in imports().items() if module.startswith("cfbench.leaderboard")}
    assert offenders and {m: deps for m, deps in offenders.items() if deps} == {}


def test_no_import_cycles():
    assert [m for m in imports() if m in reaches(m)] == []


def test_the_layering_sees_transitive_imports():
    """A core module reaching the zoo through another core module is caught (the direct-import
    check this test replaced missed it), and so is a cycle through three modules."""
    graph = {"cfbench.a": frozenset({"cfbench.b"}), "cfbench.b": frozenset({"policies.x"}),
             "policies.x": frozenset({"cfbench.a"})}
    assert "policies.x" in reach(graph, "cfbench.a") and "cfbench.a" in reach(graph, "cfbench.a")


def table() -> str:
    """The import table: module, its layer, the project modules it imports directly, the layers it reaches."""
    rows = [f"{'module':<28} {'layer':<9} {'reaches':<22} imports"]
    for module in sorted(imports(), key=lambda m: (LAYERS.index(layer(m)), m)):
        reached = ", ".join(name for name in LAYERS if any(layer(d) == name for d in reaches(module))) or "-"
        direct = ", ".join(sorted(d.removeprefix("cfbench.").removeprefix("policies.") if layer(d) == layer(module)
                                  else d for d in imports()[module])) or "-"
        rows.append(f"{module:<28} {layer(module):<9} {reached:<22} {direct}")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
