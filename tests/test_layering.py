"""The library never imports application code (runner, notebook set-up, demo pretraining, method card, README demo section, CLI
helpers), as open_clip keeps ``open_clip`` apart from ``open_clip_train``."""

from __future__ import annotations

import ast
from pathlib import Path

from cxrlib.paths import REPO_ROOT

APPLICATION = {
    "cxrlib.reproduce",
    "cxrlib.notebook",
    "cxrlib.demo_backbone",
    "cxrlib.methodcard",
    "cxrlib.demo_report",
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_library_modules_do_not_import_application_code():
    offenders = []
    for path in sorted((REPO_ROOT / "cxrlib").rglob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module in APPLICATION:
            continue
        bad = {m for m in _imports(path) if any(m == a or m.startswith(a + ".") for a in APPLICATION)}
        if bad:
            offenders.append(f"{module} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)
