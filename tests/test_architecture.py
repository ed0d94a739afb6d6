"""The layering of docs/decisions/0009 as a test: imports run ``main.py -> annotator -> model ->
ops``, the Qt-free part of ``annotator`` stays Qt-free, and no module imports another that imports
it back. Every import counts, including those inside functions (they hide cycles, they do not
break them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("annotator", "model", "ops")
QT = ("PySide6", "shiboken6", "pytestqt")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {"main": ROOT / "main.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, anywhere in its body, as absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            # ``from package import module`` imports the module
            found.update(f"{origin}.{alias.name}" for alias in node.names if f"{origin}.{alias.name}" in MODULES)
    return found


IMPORTS = {name: imports_of(name, path) for name, path in MODULES.items()}


def project_imports(name: str) -> set[str]:
    """The project modules ``name`` imports. Importing ``a.b.c`` runs ``a/__init__`` and
    ``a/b/__init__`` first, so those count as imported too."""
    found = set()
    for target in IMPORTS[name]:
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {target for target in found if target in MODULES and target != name}


def top(name: str) -> str:
    return name.split(".")[0]


def offending(layer: str, forbidden: tuple[str, ...], exempt: str | None = None) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name in MODULES
        if (name == layer or name.startswith(layer + ".")) and not (exempt and name.startswith(exempt))
        for target in IMPORTS[name]
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    )


def test_ops_imports_no_other_project_package() -> None:
    assert offending("ops", ("annotator", "model", "main", *QT)) == []


def test_model_imports_neither_the_app_nor_qt() -> None:
    assert offending("model", ("annotator", "main", *QT)) == []


def test_the_qt_free_part_of_annotator_imports_no_qt_and_no_gui() -> None:
    assert offending("annotator", (*QT, "annotator.gui", "main"), exempt="annotator.gui") == []


def test_only_main_imports_main() -> None:
    assert [name for name in MODULES if name != "main" and "main" in IMPORTS[name]] == []


def find_cycle() -> list[str] | None:
    """One import cycle among the project's modules, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(project_imports(name)):
            # a module's own packages run before it: importing them back is how packages work
            if name.startswith(target + "."):
                continue
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(MODULES):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_no_module_imports_another_that_imports_it_back() -> None:
    cycle = find_cycle()
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("from model.detector import MaskRCNN\n", ("model",)),
        ("def later():\n    from PySide6.QtCore import QObject\n", QT),
        ("from . import detector\n", ("model.detector",)),
    ],
)
def test_the_import_reader_sees_top_level_local_and_relative_imports(tmp_path, source, forbidden) -> None:
    # the checks above are only as good as this reader: it must see every kind of import
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = imports_of("model.probe", path)
    assert any(target == f or target.startswith(f + ".") for target in found for f in forbidden)


MAX_FUNCTION_LINES = 100  # argument-parser builders excepted
MAX_FILE_LINES = 600


def project_files() -> list[Path]:
    return sorted(path for folder in (*PACKAGES, "tests", "bench") for path in (ROOT / folder).rglob("*.py")) + [
        ROOT / "main.py"
    ]


def test_no_function_is_longer_than_a_hundred_lines() -> None:
    long = []
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.endswith("_parser"):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_no_source_file_is_longer_than_six_hundred_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)} ({count} lines)"
        for path in project_files()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    ]
    assert long == []
