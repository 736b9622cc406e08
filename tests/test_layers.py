"""The layers hold: the core never imports a policy (only the runner knows the zoo), no
policy imports the runner or the evaluator, and no two modules import each other."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file, lazy imports included)."""
    graph = {}
    for path in sorted([*ROOT.glob("cfbench/**/*.py"), *ROOT.glob("policies/**/*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            found |= {name for name in names if name.split(".")[0] in ("cfbench", "policies")}
        graph[module] = found - {module}
    return graph


def test_only_the_runner_imports_the_policy_zoo():
    offenders = {module: sorted(deps) for module, deps in _imports().items()
                 if module.startswith("cfbench") and module != "cfbench.runner"
                 and any(dep == "policies" or dep.startswith("policies.") and dep != "policies.base" for dep in deps)}
    assert offenders == {}


def test_the_evaluator_knows_only_the_policy_interface():
    assert {dep for dep in _imports()["cfbench.evaluate"] if dep.startswith("policies")} == {"policies.base"}


def test_policies_never_import_the_runner_or_the_evaluator():
    graph = _imports()
    offenders = {module: sorted(graph[module] & {"cfbench.runner", "cfbench.evaluate", "cfbench.leaderboard"})
                 for module in graph if module.startswith("policies")}
    assert {m: deps for m, deps in offenders.items() if deps} == {}


def test_no_import_cycles():
    graph = _imports()

    def reaches(start, goal, seen):
        for dep in graph.get(start, ()):
            if dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, {m})] == []
