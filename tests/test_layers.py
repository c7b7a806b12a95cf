"""The layers (DESIGN.md, "Layers"): imports of `tagging` point down only, and no files import
each other in a circle.

A module may import its own package and the packages of lower layers, never a package of
its own layer (siblings: loop/ and review/, photos/ and encoder/, cli/ and dags/) or above.
Every import counts: at module level, inside a function, and under `if TYPE_CHECKING:` (a
type is knowledge too, and none needs the exemption). model_registry/ imports nothing of
`tagging` or `dags`; every package may import it.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUND = {"settings", "errors", "storage", "labels", "memory", "schema"}  # tagging/<name>
LAYERS = [  # lowest first
    {"ground"},  # the modules above and tagging/__init__.py
    {"photos", "encoder"},
    {"model"},
    {"catalogue"},
    {"loop", "review"},
    {"pipeline"},
    {"ops"},
    {"cli", "dags"},
]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}
MAX_LINES = 450  # longer only with a reason in the module's docstring ("... on purpose")


def module_name(path: str) -> str:
    """tagging/catalogue/__init__.py -> tagging.catalogue"""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_sources() -> dict[str, str]:
    """The source of every module of tagging/, dags/ and model_registry/, by its path."""
    return {str(p.relative_to(ROOT)): p.read_text()
            for top in ("tagging", "dags", "model_registry")
            for p in sorted((ROOT / top).rglob("*.py"))}


def imported(path: str, tree: ast.Module, known: set[str]) -> Iterator[tuple[str, int]]:
    """(project module, line) of every import in the module at `path`, wherever it is."""
    name = module_name(path)
    package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                parts = package[:len(package) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in ("tagging", "dags", "model_registry"):
                yield target, node.lineno


def package_of(module: str) -> str:
    """tagging.catalogue.publish -> catalogue; tagging.storage.roots -> ground"""
    parts = module.split(".")
    if parts[0] in ("dags", "model_registry"):
        return parts[0]
    return "ground" if len(parts) == 1 or parts[1] in GROUND else parts[1]


def breach(here: str, there: str) -> str | None:
    """Why a module of package `here` may not import one of package `there` (None: it may)."""
    if here == there or there == "model_registry":
        return None
    if here == "model_registry":
        return "model_registry is standalone"
    if here not in LEVEL or there not in LEVEL:
        return f"{here if here not in LEVEL else there} has no layer"
    if LEVEL[there] >= LEVEL[here]:
        return f"{there} is {'beside' if LEVEL[there] == LEVEL[here] else 'above'} {here}"
    return None


def circle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """The shortest chain of imports from `start` back to it (None: there is none)."""
    paths = {start: [start]}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return None


def problems(sources: dict[str, str]) -> list[str]:
    """Every import that breaks the layers, and every circle between files, in the modules
    given as {path: source}."""
    known = {module_name(path) for path in sources}
    found, graph = [], {}
    for path, source in sources.items():
        name = module_name(path)
        graph[name] = set()
        for target, line in imported(path, ast.parse(source), known):
            graph[name].add(target)
            why = breach(package_of(name), package_of(target))
            if why:
                found.append(f"{name}:{line} imports {target}: {why}")
    on_circle: set[str] = set()  # one circle reported per module
    for name in sorted(graph):
        circle = None if name in on_circle else circle_through(name, graph)
        if circle:
            on_circle.update(circle)
            found.append(f"circle: {' -> '.join(circle)}")
    return found


# ---------------------------------------------------------------- the tests


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in project_sources()} - {"model_registry"}
    assert packages <= set(LEVEL), f"not in LAYERS: {sorted(packages - set(LEVEL))}"


def test_imports_point_down_and_no_circle():
    found = problems(project_sources())
    assert not found, "\n".join(found)


def test_the_check_fails_on_what_it_forbids():
    fine = {
        "tagging/settings.py": "from tagging.errors import ConfigError",
        "tagging/errors.py": "import model_registry.errors",
        "tagging/photos/__init__.py": "",
        "tagging/photos/decode.py": "from tagging import storage\nfrom . import render",
        "tagging/photos/render.py": "from ..labels import NUM_CLASSES",
        "tagging/pipeline/tag.py": "from tagging.photos import decode",
        "model_registry/errors.py": "import json",
    }
    assert problems(fine) == []
    assert problems({**fine, "tagging/photos/fake.py": "from tagging.pipeline import tag"}) == [
        "tagging.photos.fake:1 imports tagging.pipeline.tag: pipeline is above photos"]
    assert problems({**fine, "tagging/photos/fake.py": "from ..pipeline.tag import x"}) == [
        "tagging.photos.fake:1 imports tagging.pipeline.tag: pipeline is above photos"]
    inside = "def f():\n    from tagging.review.queue import fill\n"
    assert problems({**fine, "tagging/loop/fake.py": inside}) == [
        "tagging.loop.fake:2 imports tagging.review.queue: review is beside loop"]
    assert problems({**fine, "tagging/nowhere/fake.py": "import tagging.errors"}) == [
        "tagging.nowhere.fake:1 imports tagging.errors: nowhere has no layer"]
    assert problems({**fine, "model_registry/fake.py": "from tagging.labels import NUM_CLASSES"}
                    ) == ["model_registry.fake:1 imports tagging.labels: model_registry is "
                          "standalone"]
    circle = {"tagging/model/a.py": "from tagging.model import b",
              "tagging/model/b.py": "def f():\n    import tagging.model.a\n"}
    assert problems({**fine, **circle}) == [
        "circle: tagging.model.a -> tagging.model.b -> tagging.model.a"]


def test_no_module_over_450_lines_without_a_reason():
    long = []
    for path, source in project_sources().items():
        lines = source.count("\n")
        if lines > MAX_LINES and "on purpose" not in (ast.get_docstring(ast.parse(source)) or ""):
            long.append(f"{path}: {lines} lines, and its docstring does not say why")
    assert not long, "\n".join(long)
