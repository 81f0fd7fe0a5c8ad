"""The package runs in layers (docs/architecture.md): a module imports only from its own layer
or from layers below it. Read from the source with ``ast``, so that every import counts,
including those inside functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src" / "xlm"

# bottom to top; a module of the package (or the top-level module) named here is in that layer
LAYERS: list[tuple[str, ...]] = [
    ("errors", "fileio", "config", "devices", "checkpoint_io", "reports", "__init__"),
    ("text",),
    ("data",),
    ("model",),
    ("objectives",),
    ("training",),
    ("evaluation",),
    ("interop",),
    ("tasks",),
    ("benchmarking",),
    ("commands", "cli", "__main__"),
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``xlm`` import in the file (``from xlm import x`` gives ``xlm.x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("xlm.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "xlm":
                found += [(node.lineno, f"xlm.{a.name}") for a in node.names]
            elif node.module.startswith("xlm."):
                found.append((node.lineno, node.module))
    return found


def _layer(module: str) -> int:
    top = module.split(".")[1]
    assert top in LEVEL, f"{module}: in no layer of tests/test_layers.py (add it, and to docs/architecture.md)"
    return LEVEL[top]


def test_every_import_runs_down_or_across():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        here = _module_name(path)
        level = _layer(here if here != "xlm" else "xlm.__init__")
        for line, target in _imports(path):
            if target == "xlm.__version__":
                continue
            if _layer(target) > level:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_the_architecture_page_draws_the_same_layers():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## Layers, bottom to top", 1)[1].split("```")[1]
    drawn = [re.split(r"\s{2,}", line.strip())[0] for line in block.strip().splitlines()]
    expected = [", ".join(n for n in names if not n.startswith("__")) for names in reversed(LAYERS)]
    assert drawn == expected


def test_classifying_text_needs_no_training_task():
    """``xlm classify`` is inference: it reads the classifier from ``model/``, not from the
    fine-tuning task."""
    imported = [target for _, target in _imports(SRC / "commands" / "classify.py")]
    assert "xlm.model.classifier" in imported
    assert not [t for t in imported if t.startswith(("xlm.tasks", "xlm.training"))]
