"""The house of DESIGN.md §2: a layer imports only the layers below it, and no module imports
itself back through others (no cycle), with every ``import`` anywhere in a file counted."""

from __future__ import annotations

from bnnrobust.code import import_graph, modules

#: DESIGN.md §2, lowest first; modules of one rank may import each other (no cycles)
LAYERS = [
    ("bnnrobust", "bnnrobust.errors", "bnnrobust.device", "bnnrobust.files", "bnnrobust.code",
     "bnnrobust.progress"),
    ("bnnrobust.data",),
    ("bnnrobust.nn",),
    ("bnnrobust.models",),
    ("bnnrobust.train",),
    ("bnnrobust.attacks",),
    ("bnnrobust.evaluate",),
    ("bnnrobust.experiments",),
    ("bnnrobust.report",),
    ("bnnrobust.cli",),
]


def rank(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or (p != "bnnrobust" and module.startswith(p + ".")) for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer of DESIGN.md §2")


def test_every_module_has_a_layer():
    for module in modules():
        rank(module)


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{m} (layer {rank(m)}) imports {t} (layer {rank(t)})"
                    for m, targets in import_graph().items() for t in targets
                    if rank(t) > rank(m))
    assert not upward, "\n".join(upward)


def cycles_of(graph: dict) -> list[str]:
    """Every cycle a depth-first walk meets, as ``a -> b -> a``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert cycles_of({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert cycles_of({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle():
    cycles = cycles_of(import_graph())
    assert not cycles, "\n".join(cycles)


def test_the_graph_sees_function_local_imports(tmp_path):
    """The walk counts an import inside a function body too (not only module-level ones)."""
    graph = import_graph()
    assert "bnnrobust.attacks.combinatorial.cpsat" in graph["bnnrobust.attacks.combinatorial.milp"]
