"""Tests of the CI glue: `.ci/run` runs the README's test command, and `.ci/pytest-run` interprets pytest's
exit code 5 ("no tests collected")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cxrlib.paths import REPO_ROOT

PYTEST_RUN = REPO_ROOT / ".ci" / "pytest-run"


def _run(tmp_path: Path, selection: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "bash",
            str(PYTEST_RUN),
            sys.executable,
            "fixture tests",
            selection,
            "--",
            "-q",
            "-p",
            "no:cacheprovider",
            ".",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_full_run_that_collects_nothing_fails_in_plain_words(tmp_path: Path) -> None:
    res = _run(tmp_path, "")
    assert res.returncode == 5
    assert "no tests were collected" in res.stderr and "fixture tests" in res.stderr


def test_selection_that_matches_nothing_is_not_a_failure(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    res = _run(tmp_path, "-k nothing_matches_this")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no test matched the selection" in res.stdout


@pytest.mark.parametrize(("body", "rc"), [("assert True", 0), ("assert False", 1)])
def test_other_exit_codes_pass_through(tmp_path: Path, body: str, rc: int) -> None:
    (tmp_path / "test_one.py").write_text(f"def test_it():\n    {body}\n")
    assert _run(tmp_path, "").returncode == rc
    assert _run(tmp_path, "-k test_it").returncode == rc


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    m = re.search(r"^make test$", readme, flags=re.M)
    assert m, "README.md must show `make test` on a line of its own (the test command)"
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call `make test`"
    assert re.search(r"^make reproduce$", readme, flags=re.M), "README.md must show `make reproduce`"
