"""docs/architecture.md names the modules that exist, and every module that exists is named there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def module_table_names():
    """The first column of the doc's module tables: `name.py`, `trainers/name.py`, `data/`, `reporting/`."""
    names = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        if len(cells) > 2 and line.startswith("|"):
            names.update(re.findall(r"`([\w/]+(?:\.py|/))`", cells[1]))
    return names


def existing_modules():
    names = {p.name for p in (ROOT / "nnunet_subfore").glob("*.py") if p.name != "__init__.py"}
    names |= {p.name + "/" for p in (ROOT / "nnunet_subfore").iterdir()
              if (p / "__init__.py").is_file() and not p.is_symlink()}  # a worktree may link trainers/ here
    names |= {f"trainers/{p.name}" for p in (ROOT / "trainers").glob("*.py") if p.name != "__init__.py"}
    return names


def test_every_module_the_doc_names_exists():
    missing = sorted(n for n in module_table_names() if not (ROOT / "nnunet_subfore" / n).exists()
                     and not (ROOT / n).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_is_in_the_doc():
    absent = sorted(existing_modules() - module_table_names())
    assert not absent, f"docs/architecture.md's module table lacks: {absent}"
