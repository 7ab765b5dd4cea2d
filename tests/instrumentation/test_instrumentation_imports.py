"""Internal structure of ``agentwatch.instrumentation``: no import cycle, a narrow gateway-to-run contract.

Read from the source with ``ast`` (nothing is imported), so a cycle hidden in a function body or
under ``if TYPE_CHECKING:`` counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from _paths import REPO

PACKAGE = "agentwatch.instrumentation"
SOURCE_ROOT = REPO / "instrumentation"
PACKAGE_DIR = SOURCE_ROOT.joinpath(*PACKAGE.split("."))
MAX_LINES = 600  # "a module stays under about 600 lines" (data tables such as pricing.json aside)
# The types under which the gateway sees a run: the public class and the internal protocol it implements.
RUN_TYPES = frozenset({"AgentRun", "GovernedRun"})
LEAF_MODULES = ("semconv", "redaction")


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _known(name: str) -> str | None:
    """The instrumentation module ``name`` is or lies in (the longest known prefix), if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The instrumentation modules one import statement of ``module`` loads."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package.pop()
            base = ".".join(package[: len(package) - node.level + 1])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        # `from pkg import name` loads pkg.name when that is a module, else takes a name of pkg
        candidates = [
            f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source for alias in node.names
        ]
    for candidate in candidates:
        target = _known(candidate)
        if target is not None and target != module:
            yield target


def _import_graph() -> dict[str, set[str]]:
    """Every import between instrumentation modules: module level, ``TYPE_CHECKING`` blocks and function bodies."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {
            target
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for target in _imported(module, node)
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = _import_graph()
    assert f"{PACKAGE}._gateway" in graph[f"{PACKAGE}._config"]  # module level
    assert f"{PACKAGE}.semconv" in graph[f"{PACKAGE}._budget"]  # `from agentwatch.instrumentation import semconv`
    assert f"{PACKAGE}._auto" in graph[f"{PACKAGE}._launcher"]  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_instrumentation_modules() -> None:
    graph = _import_graph()
    cycles = _cycles(graph)
    described = [
        ", ".join(f"{source} -> {target}" for source in cycle for target in sorted(graph[source]) if target in cycle)
        for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def _annotation_names(annotation: ast.expr | None) -> set[str]:
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    return {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(annotation)
        if isinstance(node, ast.Name | ast.Attribute)
    }


def _typed_as_run(annotation: ast.expr | None) -> bool:
    return bool(_annotation_names(annotation) & RUN_TYPES)


def _private_run_accesses(tree: ast.Module) -> list[str]:
    """``run._x`` wherever ``run`` is typed as the run or holds one.

    Run-typed are parameters, variables and fields (``_Call.run``) annotated with a run type, and
    by propagation names and fields assigned from a run-typed expression or from ``current_run.get()``.
    Names are tracked per module, not per scope: simple, and only stricter.
    """
    names: set[str] = set()
    fields: set[str] = set()
    class_fields = {id(item) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for item in node.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and _typed_as_run(node.annotation):
            names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and _typed_as_run(node.annotation):
            if isinstance(node.target, ast.Attribute):
                fields.add(node.target.attr)  # self.run: AgentRun = ...
            elif isinstance(node.target, ast.Name):
                (fields if id(node) in class_fields else names).add(node.target.id)

    def is_run(expr: ast.expr | None) -> bool:
        match expr:
            case ast.Name(id=name):
                return name in names
            case ast.Attribute(attr=attr):
                return attr in fields
            case ast.IfExp(body=body, orelse=orelse):
                return is_run(body) or is_run(orelse)
            case ast.BoolOp(values=values):
                return any(is_run(value) for value in values)
            case ast.NamedExpr(value=value):
                return is_run(value)
            case ast.Call(func=ast.Attribute(value=ast.Name(id="current_run"), attr="get")):
                return True
        return False

    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr) and is_run(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id not in names:
                        names.add(target.id)
                        changed = True
                    elif isinstance(target, ast.Attribute) and target.attr not in fields:
                        fields.add(target.attr)
                        changed = True
    accesses = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.endswith("__")
        and is_run(node.value)
    ]
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in sorted(accesses, key=lambda n: n.lineno)]


def _gateway_module() -> Path:
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.ClassDef) and node.name == "ToolGateway" for node in tree.body):
            return path
    raise AssertionError("no module defines ToolGateway")


def test_the_private_access_check_finds_one() -> None:
    source = """
class Call:
    run: AgentRun | None
def f(run: AgentRun | None, call: Call) -> None:
    other = run if run is not None else current_run.get()
    other._budget
    call.run._lock
    run.public
"""
    assert _private_run_accesses(ast.parse(source)) == ["line 6: other._budget", "line 7: call.run._lock"]


def test_gateway_uses_no_private_member_of_the_run() -> None:
    path = _gateway_module()
    accesses = _private_run_accesses(ast.parse(path.read_text(encoding="utf-8")))
    assert not accesses, f"{path.name} reaches into the run:\n" + "\n".join(accesses)


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        for target in graph[pending.pop()]:
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def test_leaf_modules_import_only_their_own_private_parts() -> None:
    # semconv and redaction are leaves the collector imports: a leaf split into private sibling
    # modules (``_redaction_*``) may import those, and nothing else of agentwatch, even indirectly.
    graph = _import_graph()
    for leaf in LEAF_MODULES:
        reached = _closure(graph, f"{PACKAGE}.{leaf}")
        outside = {name for name in reached if not name.rpartition(".")[2].startswith(f"_{leaf}")}
        assert not outside, f"{leaf} reaches {sorted(outside)}"


def test_modules_stay_under_the_size_limit() -> None:
    sizes = {
        path.relative_to(SOURCE_ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in MODULES.values()
    }
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, too_long
