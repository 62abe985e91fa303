"""The import rules of docs/architecture.md, read from the source (every import,
at the top, inside a function or under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mediagate

SOURCE = Path(mediagate.__file__).parent
LEAVES = ["config", "models", "errors", "disposition", "filenames", "arguments", "proxies"]
# What the client may import of mediagate besides itself: leaves it shares with the server.
CLIENT_MAY_IMPORT = {"mediagate.filenames", "mediagate.arguments", "mediagate.proxies"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SOURCE.rglob("*.py")}


def imports_of(name: str, *, nested: bool = True) -> set[str]:
    """The mediagate modules `name` imports (with `nested=False`, only at module level)."""
    tree = ast.parse(MODULES[name].read_text())
    nodes = ast.walk(tree) if nested else iter(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


def client_modules() -> list[str]:
    return sorted(
        name for name in MODULES if name.startswith("mediagate.client") and "__main__" not in name
    )


@pytest.mark.parametrize("name", client_modules())
def test_the_client_imports_nothing_of_the_server(name):
    outside = {
        module
        for module in imports_of(name)
        if not module.startswith("mediagate.client") and module not in CLIENT_MAY_IMPORT
    }
    assert not outside, f"{name} imports {sorted(outside)}"


def test_the_client_package_imports_run_one_way_at_the_top():
    package = [name for name in client_modules() if name.startswith("mediagate.client.")]
    for name in package:
        hidden = imports_of(name) - imports_of(name, nested=False)
        assert not hidden, f"{name} imports {sorted(hidden)} inside a function or TYPE_CHECKING"
    graph = {name: imports_of(name) & set(package) for name in package}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in graph[start] - seen:
            seen.add(step)
            if step == goal or reaches(step, goal, seen):
                return True
        return False

    circles = sorted(name for name in package if reaches(name, name, set()))
    assert not circles, f"import circles through {circles}"


@pytest.mark.parametrize("leaf", LEAVES)
def test_a_leaf_imports_nothing_of_ours_but_leaves(leaf):
    others = imports_of(f"mediagate.{leaf}") - {f"mediagate.{other}" for other in LEAVES}
    assert not others, f"{leaf}.py imports {sorted(others)}"


def test_the_migrate_package_does_not_import_the_command_above_it():
    migrate = [name for name in MODULES if name.startswith("mediagate.migrate")]
    assert "mediagate.migrate.__main__" in migrate
    for name in migrate:
        assert "mediagate.cli" not in imports_of(name), name


def package_modules(package: str) -> list[str]:
    return sorted(name for name in MODULES if name.startswith(f"mediagate.{package}."))


@pytest.mark.parametrize("name", package_modules("core"))
def test_core_knows_the_stores_and_the_catalog_by_their_protocols_only(name):
    """Roles and capabilities (storage/base.py, catalog/base.py), never a concrete store
    or catalog: a new store needs no change to core/."""
    concrete = {
        module
        for module in imports_of(name)
        if module.startswith(("mediagate.storage", "mediagate.catalog"))
        and not module.startswith(("mediagate.storage.base", "mediagate.catalog.base"))
    }
    assert not concrete, f"{name} imports {sorted(concrete)}"


@pytest.mark.parametrize("name", package_modules("web"))
def test_web_imports_nothing_of_the_migrator_nor_a_concrete_store(name):
    below = {
        module
        for module in imports_of(name)
        if module.startswith("mediagate.migrate")
        or (
            module.startswith("mediagate.storage")
            and not module.startswith("mediagate.storage.base")
        )
    }
    assert not below, f"{name} imports {sorted(below)}"
