"""The package's own source as data: its static import graph, and fingerprints of the code
that computes something (so that a stored result or a cached checkpoint knows which code
made it, and goes stale when that code changes).

The graph is read with :mod:`ast` from the installed source files (every ``import`` and
``from ... import`` of a ``bnnrobust`` module, at any depth of a file, counts as an edge). A
fingerprint is a hash of the package version and of the source bytes of a set of modules:
usually the *closure* of a module, i.e. it and every ``bnnrobust`` module it imports,
transitively.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

import bnnrobust

PACKAGE = "bnnrobust"
ROOT = Path(bnnrobust.__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def modules() -> tuple[str, ...]:
    """Every module of the package, by dotted name."""
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join([PACKAGE, *parts]))
    return tuple(names)


def _resolve(name: str, known: set[str]) -> str | None:
    """``name`` itself when it is a module, else its longest prefix that is one."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the ``bnnrobust`` modules it imports (anywhere in the file)."""
    known = set(modules())
    graph = {}
    for name in modules():
        path = module_file(name)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    edges.add(resolved)
        graph[name] = frozenset(edges)
    return graph


def closure(*names: str, stop: Iterable[str] = ()) -> tuple[str, ...]:
    """``names`` and every module they import, transitively; the traversal does not enter
    modules under any prefix in ``stop`` (they are left out)."""
    graph = import_graph()
    stops = tuple(stop)

    def stopped(module: str) -> bool:
        return any(module == s or module.startswith(s + ".") for s in stops)

    seen: set[str] = set()
    todo = [n for n in names]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module not in graph:
            raise KeyError(f"{module} is not a module of {PACKAGE}")
        seen.add(module)
        todo.extend(m for m in graph[module] if m not in seen and not stopped(m))
    return tuple(sorted(seen))


def fingerprint(names: Iterable[str]) -> str:
    """A short hash of the package version and the source of the given modules."""
    digest = hashlib.sha256(bnnrobust.__version__.encode())
    for name in sorted(set(names)):
        digest.update(name.encode())
        digest.update(_source_hash(name).encode())
    return digest.hexdigest()[:16]


@functools.cache
def _source_hash(name: str) -> str:
    path = module_file(name)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else "missing"


@functools.cache
def closure_fingerprint(name: str, stop: tuple[str, ...] = ()) -> str:
    """:func:`fingerprint` of :func:`closure` of one module."""
    return fingerprint(closure(name, stop=stop))
