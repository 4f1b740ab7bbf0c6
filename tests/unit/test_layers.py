"""Imports point one way: metrics is a leaf, engine uses metrics, alerts plugs into engine;
inside the engine, the authoring API (`engine.sdk`) and the metastore (`engine.store`)
know nothing of the parts that use them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "metrics": {"engine", "alerts", "console"},
    "engine": {"alerts", "console"},
    "alerts": {"console"},
}

# Inside the engine: what DAG files import, and the metastore, are the bottom layers. The
# sdk reaches the metastore only through `engine.sdk.task_api`, whose default the `engine`
# package (the composition root) names; the store returns plain records, never sdk objects.
_ENGINE_PARTS = {
    "engine.api",
    "engine.cli",
    "engine.execution",
    "engine.observability",
    "engine.parsing",
    "engine.runtime",
    "engine.scheduling",
}
FORBIDDEN_MODULES = {
    "engine/sdk": _ENGINE_PARTS | {"engine.store"},
    "engine/store": _ENGINE_PARTS | {"engine.sdk"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (`from engine import runtime` counts as
    `engine.runtime`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def _within(name: str, packages: set[str]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_the_layers_above_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in files
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert wrong == {}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_MODULES))
def test_the_engine_bottom_layers_never_import_the_parts_above_them(folder):
    files = [p for p in sorted((ROOT / folder).rglob("*.py")) if "migrations" not in p.parts]
    assert files, f"{folder}/ has no modules"
    wrong = {}
    for path in files:
        bad = sorted(
            name for name in imported_modules(path) if _within(name, FORBIDDEN_MODULES[folder])
        )
        if bad:
            wrong[str(path.relative_to(ROOT))] = bad
    assert wrong == {}


def test_the_layer_check_sees_an_import_through_the_package(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from engine import runtime\nfrom engine.store import runs\n")

    found = imported_modules(probe)

    assert {"engine.runtime", "engine.store.runs"} <= found
    assert _within("engine.runtime", _ENGINE_PARTS)
    assert not _within("engine.runtimes", _ENGINE_PARTS)
