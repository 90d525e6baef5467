"""The environment files agree: environment.yml, requirements.txt, requirements.lock and pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)\s*$")


def norm(name: str) -> str:
    """Compare package names the way pip does (case, ``_`` and ``.`` do not matter)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def parse_pins(lines: list[str], where: str) -> dict[str, str]:
    """``name==version`` lines → {normalised name: version}; comments, blanks and pip options skipped.

    Anything else (a range, an unpinned name) is an error: these files must pin exact versions.
    """
    pins: dict[str, str] = {}
    for k, raw in enumerate(lines, 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue
        m = _PIN.match(line)
        assert m, f"{where}, line {k}: {raw!r} is not an exact pin (name==version)"
        name = norm(m.group(1))
        assert name not in pins, f"{where}, line {k}: {m.group(1)} is pinned twice"
        pins[name] = m.group(2)
    return pins


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def requirements() -> dict[str, str]:
    return parse_pins((ROOT / "requirements.txt").read_text().splitlines(), "requirements.txt")


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    return parse_pins((ROOT / "requirements.lock").read_text().splitlines(), "requirements.lock")


def _pip_section(env: dict) -> list[str]:
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, f"environment.yml needs exactly one pip: section, found {len(sections)}"
    return [str(x) for x in sections[0]]


def _conda_specs(env: dict) -> dict[str, str]:
    """Conda dependencies (strings) → {name: version spec or ''}."""
    out = {}
    for d in env["dependencies"]:
        if isinstance(d, str):
            m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(.*)$", d)
            assert m, f"environment.yml: cannot read conda dependency {d!r}"
            out[m.group(1)] = m.group(2).lstrip("=").strip()
    return out


def test_environment_yml_basics(env: dict) -> None:
    assert env["name"] == "cxr-retrieval"
    assert "conda-forge" in env["channels"]
    specs = _conda_specs(env)
    assert specs.get("python") == "3.11", f"python must be pinned to 3.11, got {specs.get('python')!r}"
    assert "pip" in specs
    assert "-e ." in [s.strip() for s in _pip_section(env)], "the pip section must install the package (-e .)"


def test_environment_pip_pins_equal_requirements(env: dict, requirements: dict[str, str]) -> None:
    pip_pins = parse_pins(_pip_section(env), "environment.yml pip section")
    assert requirements, "requirements.txt pins nothing"
    missing = sorted(set(requirements) - set(pip_pins))
    extra = sorted(set(pip_pins) - set(requirements))
    differ = {
        n: (requirements[n], pip_pins[n])
        for n in requirements
        if n in pip_pins and requirements[n] != pip_pins[n]
    }
    assert not missing, f"pinned in requirements.txt but not in environment.yml: {missing}"
    assert not extra, f"pinned in environment.yml but not in requirements.txt: {extra}"
    assert not differ, f"versions differ (requirements.txt, environment.yml): {differ}"


def test_requirements_agree_with_lock(requirements: dict[str, str], lock: dict[str, str]) -> None:
    missing = sorted(set(requirements) - set(lock))
    differ = {n: (v, lock[n]) for n, v in requirements.items() if n in lock and lock[n] != v}
    assert not missing, f"pinned in requirements.txt but absent from requirements.lock: {missing}"
    assert not differ, f"versions differ (requirements.txt, requirements.lock): {differ}; run `make lock`"


def test_pyproject_dependencies_are_pinned(requirements: dict[str, str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert deps, "pyproject.toml declares no dependencies"
    names = [norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps]
    unpinned = sorted(n for n in names if n not in requirements)
    assert not unpinned, (
        f"in pyproject.toml [project].dependencies but not pinned in requirements.txt: {unpinned}"
    )
    assert project["requires-python"].startswith(">=3.11"), project["requires-python"]


def test_parse_pins_rejects_ranges() -> None:
    """The checks above rely on parse_pins refusing anything but exact pins."""
    assert parse_pins(["# c", "", "Foo_Bar==1.0  # x", "-e ."], "t") == {"foo-bar": "1.0"}
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_pins(["numpy>=2"], "t")
    with pytest.raises(AssertionError, match="pinned twice"):
        parse_pins(["a==1", "A==2"], "t")
