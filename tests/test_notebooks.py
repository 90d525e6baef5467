"""Static checks of the notebook series and the profiles (fast: nothing is executed here; `make nbval` runs them).

- every notebook opens with a markdown cell that says what it covers, has one code cell tagged ``parameters``
  (the first code cell), checks some outputs with ``# NBVAL_CHECK_OUTPUT``, ends with exercises, and runs on
  the project kernel;
- the notebooks declare only ``profile`` and ``overrides`` (every setting lives in cxrlib/config.py) and stay
  thin; the profiles hold only sections, and only values that differ from the defaults;
- committed outputs hold no path of the machine that executed them, and no error outputs.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cxrlib.config import SECTIONS, diff_from_defaults, load_settings
from cxrlib.paths import REPO_ROOT
from cxrlib.profiles import discover_notebooks, load_profile
from cxrlib.reproduce import KERNEL_NAME

NOTEBOOKS = discover_notebooks()


def _cells(info) -> list[dict]:
    return json.loads(Path(info.path).read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_series_is_complete_and_ordered():
    assert [nb.path.name[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("info", NOTEBOOKS, ids=lambda nb: nb.path.name)
def test_notebook_structure(info):
    nb = json.loads(Path(info.path).read_text())
    assert nb["metadata"]["kernelspec"]["name"] == KERNEL_NAME
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "What this notebook covers" in _source(cells[0])
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), (
        "first code cell must be tagged parameters"
    )
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1
    # every parameter line carries a comment that explains it
    for line in _source(code[0]).splitlines():
        if line and not line.startswith("#"):
            assert "  # " in line, f"{info.path.name}: parameter without a comment: {line!r}"
    assert any(_source(c).startswith("# NBVAL_CHECK_OUTPUT") for c in code), "nothing is checked by nbval"
    assert cells[-1]["cell_type"] == "markdown" and "## Exercises" in _source(cells[-1])


@pytest.mark.parametrize("info", NOTEBOOKS, ids=lambda nb: nb.path.name)
def test_papermill_reads_every_parameter(info):
    """papermill's own inspector must see the same parameters as cxrlib (it skips a line holding two '=',
    e.g. one in the comment, and then warns "Passed unknown parameter" for a perfectly valid name)."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in _cells(info) if "parameters" in c.get("metadata", {}).get("tags", []))
    seen = [p.name for p in PythonTranslator.inspect({"source": _source(cell)})]
    assert seen == list(info.parameters), (
        f"{info.path.name}: papermill cannot parse {set(info.parameters) - set(seen)}"
    )


@pytest.mark.parametrize("info", NOTEBOOKS, ids=lambda nb: nb.path.name)
def test_committed_outputs_are_clean(info):
    """Demo outputs are committed: no errors, and no absolute path of the machine that ran them."""
    text = Path(info.path).read_text()
    cells = json.loads(text)["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    for marker in (str(REPO_ROOT), str(Path.home()), "/site-packages/"):
        assert marker not in text, f"{info.path.name} holds {marker!r} (a machine path) in its outputs"


def test_notebooks_declare_only_profile_and_overrides():
    """One source for every setting: the notebooks hold no setting of their own, only which profile to use and
    the overrides on top of it (the runner and papermill pass both)."""
    for nb in NOTEBOOKS:
        assert nb.parameters == {"profile": "demo", "overrides": {}}, nb.path.name


@pytest.mark.parametrize("info", NOTEBOOKS, ids=lambda nb: nb.path.name)
def test_notebooks_are_thin(info):
    """Logic lives in tested library functions: each notebook stays short. Counted: the lines of code that
    do something (not blank, not a comment, not part of an import statement, which the formatter spreads over
    one line per name)."""
    n_lines = 0
    for cell in _cells(info):
        if cell["cell_type"] != "code":
            continue
        lines = _source(cell).splitlines()
        imports = set()
        for node in ast.walk(ast.parse(_source(cell))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.update(range(node.lineno, node.end_lineno + 1))
        n_lines += sum(
            1
            for i, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#") and i not in imports
        )
    assert n_lines <= 140, f"{info.path.name} has {n_lines} lines of logic; move logic into cxrlib"


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_profiles_hold_only_settings_that_differ_from_the_defaults(profile):
    raw = load_profile(profile)
    assert set(raw) <= set(SECTIONS), (
        f"{profile}.yaml has keys that are not sections: {set(raw) - set(SECTIONS)}"
    )
    changed = diff_from_defaults(load_settings(profile))
    for section, values in raw.items():
        for field in values:
            assert field in changed.get(section, {}), (
                f"{profile}.yaml repeats the default of {section}.{field}"
            )


def test_paper_profile_uses_the_papers_backbones():
    paper = load_settings("paper")
    assert paper.eval.backbones == ("clip", "biomedclip") and paper.eval.finetune == "biomedclip"
    assert paper.run.device == "cuda" and paper.data.dataset in ("iu_xray", "mimic_cxr")


def test_every_profile_value_is_commented():
    for name in ("demo", "paper"):
        for line in (REPO_ROOT / "profiles" / f"{name}.yaml").read_text().splitlines():
            if line and not line.startswith("#") and not line.rstrip().endswith(":"):
                assert "#" in line, f"{name}.yaml: {line!r} has no comment"
