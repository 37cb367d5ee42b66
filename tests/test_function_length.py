"""No function in the package is longer than 60 lines (docstring included) unless the allowlist says why.

Lengths are ``end_lineno - lineno + 1`` of each ``def`` (methods and nested functions included, decorators not),
over every ``.py`` file of ``nnunet_subfore/`` and ``trainers/`` (installed as ``nnunet_subfore.trainers``).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60

#: ``"module:function"`` -> why it may be longer than :data:`MAX_LINES` for now.
ALLOWED_LONG_FUNCTIONS: Dict[str, str] = {
    "nnunet_subfore.data.register:register_unlabeled": "a public entry point: 40 lines of its docstring (every input, option and refusal); the work is in _register_missing",
}


def function_lengths(source: str, module: str) -> Dict[str, int]:
    """``{"module:qualified.name": lines}`` of every function in ``source``."""
    lengths: Dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[f"{module}:{name}"] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def package_function_lengths() -> Dict[str, int]:
    """:func:`function_lengths` over the package as installed (a worktree's ``nnunet_subfore/trainers`` link is skipped:
    ``trainers/`` is read once, as ``nnunet_subfore.trainers``)."""
    lengths: Dict[str, int] = {}
    for folder, package in ((REPO / "nnunet_subfore", "nnunet_subfore"), (REPO / "trainers", "nnunet_subfore.trainers")):
        for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into linked folders
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for filename in filenames:
                if filename.endswith(".py"):
                    path = Path(dirpath) / filename
                    parts = path.relative_to(folder).with_suffix("").parts
                    module = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
                    lengths.update(function_lengths(path.read_text(encoding="utf-8"), module))
    return lengths


def test_no_function_is_longer_than_60_lines_unless_allowed():
    too_long = {name: n for name, n in package_function_lengths().items()
                if n > MAX_LINES and name not in ALLOWED_LONG_FUNCTIONS}
    assert not too_long, (
        f"Functions longer than {MAX_LINES} lines: "
        + ", ".join(f"{name} ({n} lines)" for name, n in sorted(too_long.items()))
        + ". Split them into well-named smaller functions, or add them to ALLOWED_LONG_FUNCTIONS with the reason."
    )


def test_the_allowlist_names_only_functions_that_are_still_too_long():
    lengths = package_function_lengths()
    stale = sorted(name for name in ALLOWED_LONG_FUNCTIONS if lengths.get(name, 0) <= MAX_LINES)
    assert not stale, f"Remove from ALLOWED_LONG_FUNCTIONS (gone, or now at most {MAX_LINES} lines): {stale}"


def test_the_scan_measures_every_function_it_should():
    source = "\n".join(
        ["class A:", "    @staticmethod", "    def method(self):"] + ["        x = 1"] * 59
        + ["def outer():", "    def inner():"] + ["        y = 2"] * 59 + ["    return inner", "async def short():", "    pass"]
    )
    assert function_lengths(source, "m") == {"m:A.method": 60, "m:outer": 62, "m:outer.inner": 60, "m:short": 2}
    names = package_function_lengths()
    assert "nnunet_subfore.data.register:register_unlabeled" in names
    assert any(name.startswith("nnunet_subfore.trainers.subfore_base:") for name in names)
    assert not any(name.startswith("nnunet_subfore.trainers.trainers.") for name in names)
