"""Imports point one way: the import graph, built from the sources (every import statement, those inside
functions too, and the command modules the command line imports by name), has no cycle between modules nor
between packages."""

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schema", "controllers", "deployments", "loadgen", "monitoring", "bench")

# The layers, bottom first: a package imports only from the layers below it (and itself).
LAYERS = ("schema", "monitoring", "loadgen", "deployments", "controllers", "bench")
# Project modules that may be imported inside a function: their top level imports an optional extra.
OPTIONAL = {"deployments.engines.vllm.stat_logger": "imports vllm (the [vllm] / [cpu] extra)",
            "deployments.engines.sim.profiler": "imports torch (installed where a GPU is profiled)"}


# Modules imported by name, when needed, rather than by an import statement: the command modules. The command
# line's table (controllers.cli.app.COMMANDS, read by controllers.cli.lazy.LazyCommandGroup) imports a command's
# module only when that command runs, so that `parallax --help` and `parallax validate` do not load Ray Serve,
# matplotlib and the report (seconds). They are the modules of controllers.cli but these, which every command uses.
CLI = "controllers.cli"
CLI_SHARED = {f"{CLI}.app": "the entry point: the table of commands",
              f"{CLI}.lazy": "the group that loads a command's module when it runs",
              f"{CLI}.terminal": "the consoles and the error printer of every command"}


def lazy_modules() -> set[str]:
    """The modules controllers.cli.app's command table names (by AST, without importing the command line)."""
    tree = ast.parse((ROOT / "controllers" / "cli" / "app.py").read_text())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LazyCommand"
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (`from a.b import c` is a.b.c when that is a module)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[m] |= {o for n in names if n.split(".")[0] in PACKAGES and (o := owner(n)) and o != m}
    graph[f"{CLI}.app"] |= lazy_modules()  # imported by name, when their command runs
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def package_graph(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for m, targets in graph.items():
        out[m.split(".")[0]] |= {t.split(".")[0] for t in targets} - {m.split(".")[0]}
    return out


def test_cycle_finder_finds_cycles_and_only_cycles() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"g"}, "g": {"f"}}
    assert sorted(map(sorted, cycles(g))) == [["a", "b", "c"], ["f", "g"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    g = import_graph()
    assert "monitoring.metrics" in g["deployments.telemetry"]
    assert "deployments.engines.vllm.stat_logger" in g["deployments.engines.vllm.engine"]  # inside a function


def test_the_command_modules_are_the_ones_loaded_lazily() -> None:
    """Every command module is reached through the command table, and nothing imports one by a statement
    (which would load it, and what it imports, for every command)."""
    cli = {m for m in modules() if m.startswith(f"{CLI}.")}
    assert lazy_modules() == cli - set(CLI_SHARED)
    statically: dict[str, set[str]] = {m: set() for m in modules()}
    for m, f in modules().items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module:
                statically[m] |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                statically[m] |= {a.name for a in node.names}
    importers = {m: sorted(lazy_modules() & names) for m, names in statically.items() if lazy_modules() & names}
    assert importers == {}, importers


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_import_cycle_between_packages() -> None:
    assert cycles(package_graph(import_graph())) == []


def test_imports_point_down_the_layers() -> None:
    """schema at the bottom, the command line (controllers) at the top."""
    up = {(p, t) for p, targets in package_graph(import_graph()).items() for t in targets
          if LAYERS.index(t) > LAYERS.index(p)}
    assert up == set(), up


def test_no_project_import_inside_a_function() -> None:
    """An import inside a function hides a dependency (and, once, a cycle); only optional extras may."""
    found = []
    for m, f in modules().items():
        for fn in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                found += [f"{m}:{node.lineno}: {n}" for n in names
                          if n.split(".")[0] in PACKAGES and n not in OPTIONAL]
    assert found == [], found
